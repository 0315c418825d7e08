"""The wheel installs only the ``dropcheck`` namespace, and the installed CLI runs.

Builds the wheel from this checkout, installs it (without dependencies: the test machine already
has them, and the venv sees them through ``--system-site-packages``) into a fresh venv, and runs
``dropcheck verify --quick --only N1`` from a folder outside the repository, so nothing can be
imported from the checkout by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (whl,) = out.glob("dropcheck-*.whl")
    return whl


def test_wheel_has_only_the_dropcheck_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"dropcheck", next(t for t in top if t.endswith(".dist-info"))}, top
    for sub in ("verification", "derivations", "benchmarks"):
        assert f"dropcheck/{sub}/__init__.py" in names
    assert "dropcheck/py.typed" in names


def test_installed_wheel_runs_verify(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # pip of the outer interpreter, told to install into the venv's interpreter
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [str(py), "-c", "import dropcheck, dropcheck.verification as v; "
         "print(dropcheck.__file__); print(v.__file__)"],
        cwd=work, env=env, check=True, capture_output=True, text=True,
    )
    for line in probe.stdout.split():
        assert str(env_dir) in line, probe.stdout  # the wheel's copy, not the checkout's
    run = subprocess.run(
        [str(env_dir / "bin" / "dropcheck"), "verify", "--quick", "--only", "N1"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "N1" in run.stdout and "PASS" in run.stdout
