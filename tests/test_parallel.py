"""Executors past one core (dropcheck.parallel): bit-identity, keyed streams, faults, selection.

The oracle throughout is the serial engine (``executor=None``): the parallel executors must
reproduce its bits exactly (``np.array_equal``, no tolerance), because the reduction tree is
keyed by chunk index and the workers return its nodes.  The sums are over values whose
grouping changes the rounding (magnitudes spread over ten orders), so a wrong grouping is
caught: :func:`test_the_tree_is_sensitive_to_grouping` shows a plain left-to-right sum differs.
Workers are spawned processes and a Dask ``LocalCluster`` with 2 workers started by
``DaskExecutor.local`` (the recommended allocator environment), built once per module (a few
seconds); every case is small.  Two more clusters start: one whose worker is killed, and one
of a single worker in Dask's default environment, for the warning about it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import dropcheck as dc
from dropcheck import _engine
from dropcheck.parallel import (
    WORKER_ENVIRON,
    DaskExecutor,
    ProcessExecutor,
    SchedulerUnreachableError,
    SerialExecutor,
    WorkerEnvironmentWarning,
    _allocator_environ,
    _environ_restored,
    _Sharded,
    _slow_allocator,
    from_options,
    using,
)

#: this process's allocator settings before any cluster started (DaskExecutor.local restores them)
_ENV_AT_IMPORT = {k: os.environ.get(k) for k in WORKER_ENVIRON}


def _value(c: _engine.Chunk) -> np.ndarray:
    # magnitudes over ten orders and both signs: the grouping of the sum shows in the bits
    i = np.arange(c.start, c.stop, dtype=np.float64)
    return np.array([np.sum(np.sin(i) * 10.0 ** (i % 11)), np.sum(np.cos(3 * i))])


class _ShuffledInProcess(_Sharded):
    """Shards through the real sharding path (cloudpickled), computed in a random order."""

    def __init__(self, shard_chunks, seed):
        self.shard_chunks, self.workers, self.seed = shard_chunks, 3, seed

    def _submit(self, token, payload, shards, nodes):
        from dropcheck.parallel import _run_shard

        order = list(range(len(shards)))
        random.Random(self.seed).shuffle(order)
        out = [None] * len(shards)
        for i in order:
            out[i] = _run_shard(token, payload, shards[i], nodes)
        return out

    def _result(self, handle):
        return handle


@pytest.fixture(scope="module")
def processes():
    with ProcessExecutor(2, shard_chunks=3) as ex:
        yield ex.warm()


@pytest.fixture(scope="module")
def dask_local():
    pytest.importorskip("distributed")
    with DaskExecutor.local(2) as ex:
        yield ex


@pytest.fixture(scope="module")
def dask_client(dask_local):
    return dask_local.client


@pytest.fixture(scope="module")
def problem():
    net = dc.MLP.random([5, 9, 4], activation="tanh", sites=("h1",), seed=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((3, 5)), rng.integers(0, 4, 3)


def test_the_tree_is_sensitive_to_grouping():
    parts = [_value(c) for c in _engine.chunks(200, 3)]
    tree = _engine.pairwise_sum(parts)
    left = parts[0]
    for p in parts[1:]:
        left = left + p
    assert not np.array_equal(tree, left)  # else bit-identity below would prove little


@pytest.mark.parametrize("shard", [1, 2, 3, 5, 8, 13, 67])
@pytest.mark.parametrize("seed", [0, 1])
def test_any_shard_size_and_completion_order_gives_the_serial_bits(shard, seed):
    serial = _engine.reduce_chunks(_value, 200, 3)
    ex = _ShuffledInProcess(shard, seed)
    assert np.array_equal(_engine.reduce_chunks(_value, 200, 3, executor=ex), serial)
    gathered = _engine.gather_chunks(_value, 200, 3, np, executor=ex)
    assert np.array_equal(gathered, _engine.gather_chunks(_value, 200, 3, np))


def test_block_nodes_are_the_dyadic_decomposition():
    items = _engine.chunks(40, 1)[5:23]  # indices 5 … 22
    nodes = _engine.block_nodes(_value, items)
    # 5 | 6-7 | 8-15 | 16-19 | 20-21 | 22: each block starts at a multiple of its size
    assert [k for k, _ in nodes] == [0, 1, 3, 2, 1, 0]
    acc = _engine.PairwiseSum()
    for c in _engine.chunks(40, 1)[:5]:
        acc.add(_value(c))
    for k, v in nodes:
        acc.add(v, level=k)
    for c in _engine.chunks(40, 1)[23:]:
        acc.add(_value(c))
    assert np.array_equal(acc.total(), _engine.reduce_chunks(_value, 40, 1))


def _calls(net, x, y):
    return {
        "expected_loss (factorized)": lambda e: dc.exact.expected_loss(
            net, x, y, 0.3, chunk_size=16, executor=e),
        "expected_loss (batched)": lambda e: dc.exact.expected_loss(
            net, x, y, 0.3, method="batched", chunk_size=16, executor=e),
        "explicit_regularizer": lambda e: dc.exact.explicit_regularizer(
            net, x, y, 0.3, chunk_size=8, executor=e),
        "expected_gradient": lambda e: dc.exact.expected_gradient(
            net, x, y, 0.3, chunk_size=16, executor=e),
        "gradient_noise_cov": lambda e: dc.exact.gradient_noise_cov(
            net, x, y, 0.3, chunk_size=64, executor=e),
    }


def test_processes_give_the_serial_bits(problem, processes):
    for name, call in _calls(*problem).items():
        assert np.array_equal(call(processes), call(None)), name


def test_dask_gives_the_serial_bits(problem, dask_local, dask_client):
    for shard in (None, 1, 4):
        ex = DaskExecutor(dask_client, shard_chunks=shard)
        for name, call in _calls(*problem).items():
            assert np.array_equal(call(ex), call(None)), (name, shard)
    for name, call in _calls(*problem).items():  # the executor local() returned, as it is
        assert np.array_equal(call(dask_local), call(None)), name


def test_local_workers_start_with_the_worker_environ(dask_local):
    # glibc reads these at a process's start: a worker must have had them from its spawn
    envs = dask_local.client.run(_allocator_environ)
    assert len(envs) == 2
    for env in envs.values():
        assert {k: env[k] for k in WORKER_ENVIRON} == WORKER_ENVIRON
    # Dask's nanny writes them into this process's os.environ to spawn; local() restores it
    assert {k: os.environ.get(k) for k in WORKER_ENVIRON} == _ENV_AT_IMPORT
    assert WORKER_ENVIRON == {"MALLOC_TRIM_THRESHOLD_": str(2**27),
                              "MALLOC_MMAP_THRESHOLD_": str(2**25)}


def test_no_warning_with_the_recommended_environ_and_none_when_the_query_fails(
        problem, dask_client, monkeypatch):
    net, x, y = problem
    ref = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16)
    ex = DaskExecutor(dask_client)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WorkerEnvironmentWarning)
        got = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16,
                                     executor=ex)
    assert ex._environ_checked  # the workers were asked, and their answer was fine
    assert np.array_equal(got, ref)

    def unreachable(*args, **kwargs):
        raise OSError("no os.environ for you")

    failing = DaskExecutor(dask_client)
    monkeypatch.setattr(dask_client, "run", unreachable)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16,
                                     executor=failing)
    assert np.array_equal(got, ref) and failing._environ_checked  # asked once, then skipped


def test_which_worker_environments_are_slow():
    glibc = "glibc 2.36"
    answers = {
        "dask default": {"libc": glibc, "MALLOC_TRIM_THRESHOLD_": "65536",
                         "MALLOC_MMAP_THRESHOLD_": None},
        "hex": {"libc": glibc, "MALLOC_TRIM_THRESHOLD_": "0x10000",
                "MALLOC_MMAP_THRESHOLD_": None},
        "recommended": {"libc": glibc, **WORKER_ENVIRON},
        "mmap set": {"libc": glibc, "MALLOC_TRIM_THRESHOLD_": "65536",
                     "MALLOC_MMAP_THRESHOLD_": "1048576"},
        "1 MiB trim": {"libc": glibc, "MALLOC_TRIM_THRESHOLD_": str(2**20),
                       "MALLOC_MMAP_THRESHOLD_": None},
        "nothing set": {"libc": glibc, "MALLOC_TRIM_THRESHOLD_": None,
                        "MALLOC_MMAP_THRESHOLD_": None},
        "musl or macOS": {"libc": None, "MALLOC_TRIM_THRESHOLD_": "65536",
                          "MALLOC_MMAP_THRESHOLD_": None},
        "not a number": {"libc": glibc, "MALLOC_TRIM_THRESHOLD_": "lots",
                         "MALLOC_MMAP_THRESHOLD_": None},
        "a worker's error": OSError("no environ"),
    }
    assert _slow_allocator(answers) == {"dask default": "65536", "hex": "0x10000"}


def test_using_selects_the_executor_and_restores(problem, processes):
    net, x, y = problem
    calls = []

    class Counting(SerialExecutor):
        def map(self, fn, items):
            calls.append(1)
            return super().map(fn, items)

    with using(Counting()):
        inside = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16)
        assert calls
        with using(processes):
            assert dc.parallel.current() is processes
            assert np.array_equal(
                dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16), inside)
        n = len(calls)
        # an explicit argument wins over the block's executor
        dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16,
                               executor=SerialExecutor())
        assert len(calls) == n
    assert dc.parallel.current() is None
    with pytest.raises(TypeError, match="executor must be"):
        with using(object()):
            pass


def _mc(net, x, y, e, **kw):
    out = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=900, rng=np.random.default_rng(7),
                                      chunk_size=64, executor=e, **kw)
    return out.value, out.stderr


def test_monte_carlo_is_the_same_on_every_executor(problem, processes, dask_client):
    net, x, y = problem
    ref = _mc(net, x, y, SerialExecutor())
    with ProcessExecutor(1, shard_chunks=2) as one:
        others = [processes, one, DaskExecutor(dask_client), _ShuffledInProcess(5, 3)]
        for ex in others:
            got = _mc(net, x, y, ex)
            assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), ex
    with using(processes):  # the block's executor selects keyed streams too
        got = _mc(net, x, y, None)
    assert np.array_equal(got[0], ref[0])
    g, g0 = (dc.montecarlo.expected_gradient(net, x, y, 0.3, samples=300, chunk_size=50,
                                             rng=np.random.default_rng(2), executor=e)
             for e in (processes, SerialExecutor()))
    assert np.array_equal(g.value, g0.value)


def test_keyed_streams_are_spawned_children_and_estimate_the_exact_value(problem):
    root = np.random.SeedSequence(11)
    kids = root.spawn(4)
    for i in range(4):
        a = _engine.chunk_generator(np.random.SeedSequence(11), i).random(5)
        assert np.array_equal(a, np.random.default_rng(kids[i]).random(5))
    net, x, y = problem
    exact = dc.exact.expected_loss(net, x, y, 0.3)
    est = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=4000, rng=np.random.default_rng(5),
                                      executor=SerialExecutor())
    # |z| < 4.5 per example: a false alarm ~7e-6 each (normal tails; 4000 draws)
    assert np.all(np.abs(est.value - exact) < 4.5 * est.stderr)
    # a generator's keyed streams differ call to call (entropy drawn from it), as sequential do
    rng = np.random.default_rng(0)
    a = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=50, rng=rng, executor=SerialExecutor())
    b = dc.montecarlo.expected_loss(net, x, y, 0.3, samples=50, rng=rng, executor=SerialExecutor())
    assert not np.array_equal(a.value, b.value)


def test_sequential_draws_ignore_a_using_block(problem, processes):
    # the default one-generator streams (every verify figure) stay the same inside a block
    net, x, y = problem
    outside = dc.implicit.xi_approx(net, x, y, 0.3, rng=np.random.default_rng(1), samples=70,
                                    chunk=16)
    with using(processes):
        inside = dc.implicit.xi_approx(net, x, y, 0.3, rng=np.random.default_rng(1), samples=70,
                                       chunk=16)
    assert np.array_equal(inside, outside)


def _marked(c: _engine.Chunk, where: str) -> np.ndarray:
    with open(os.path.join(where, f"{c.index}"), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(0.05)
    return _value(c)


def test_a_killed_worker_changes_nothing_and_close_closes_the_cluster(tmp_path):
    pytest.importorskip("distributed")
    import dask

    # the nanny that restarts the victim writes its settings into this process's os.environ
    # again (Dask does so on every spawn): put them back for the tests after this one
    names = (*dask.config.get("distributed.nanny.pre-spawn-environ"), *WORKER_ENVIRON)
    with _environ_restored(tuple(names)), DaskExecutor.local(2, shard_chunks=2) as ex:
        client, cluster = ex.client, ex.cluster
        victim = next(iter(client.run(os.getpid).values()))
        where = str(tmp_path)
        killed = threading.Event()

        def killer():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not killed.is_set():
                for f in os.listdir(where):
                    with open(os.path.join(where, f)) as fh:
                        if str(victim) in fh.read().split():
                            os.kill(victim, signal.SIGKILL)  # mid-chunk: it is sleeping in one
                            killed.set()
                            return
                time.sleep(0.01)

        t = threading.Thread(target=killer)
        t.start()
        fn = _engine_partial(where)
        got = _engine.reduce_chunks(fn, 120, 3, executor=ex)
        t.join()
        assert killed.is_set()
        assert np.array_equal(got, _engine.reduce_chunks(_value, 120, 3))
        # the victim's chunk in flight ran again on a live worker
        runs = {f.name: f.read_text().split() for f in tmp_path.iterdir()}
        assert any(str(victim) in pids and len(pids) >= 2 for pids in runs.values())
        assert len(runs) == 40
        assert cluster.status.name == "running"
    # the with block's end closed the client and the cluster local() started
    assert client.status == "closed" and cluster.status.name == "closed"
    assert ex.cluster is None


def test_dask_default_worker_environment_warns_once(problem, monkeypatch):
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 (config distributed.nanny.pre-spawn-environ)
    # unless this process's environment has the variable: take ours out for the cluster's start
    for k in WORKER_ENVIRON:
        monkeypatch.delenv(k, raising=False)
    pytest.importorskip("distributed")
    import dask
    from dask.distributed import Client, LocalCluster

    if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        pytest.skip("the warning is about glibc's allocator")
    default = dask.config.get("distributed.nanny.pre-spawn-environ")
    if str(default.get("MALLOC_TRIM_THRESHOLD_")) != "65536" or "MALLOC_MMAP_THRESHOLD_" in default:
        pytest.skip(f"this Dask's default worker environment is not the slow one: {default}")
    net, x, y = problem
    ref = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        ex = DaskExecutor(client)
        with pytest.warns(WorkerEnvironmentWarning) as record:
            got = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16,
                                         executor=ex)
        assert np.array_equal(got, ref)  # a warning, never another result
        assert len(record) == 1
        msg = str(record[0].message)
        for part in ("MALLOC_TRIM_THRESHOLD_=65536", "3.17 s against 0.95 s",
                     "DaskExecutor.local", "pre-spawn-environ.MALLOC_MMAP_THRESHOLD_=33554432"):
            assert part in msg, part
        with warnings.catch_warnings():  # asked once per executor: the next run is quiet
            warnings.simplefilter("error")
            again = dc.exact.expected_loss(net, x, y, 0.3, method="batched", chunk_size=16,
                                           executor=ex)
        assert np.array_equal(again, ref)


def _engine_partial(where):
    import functools

    return functools.partial(_marked, where=where)


def test_an_unreachable_scheduler_is_a_clear_error_within_its_timeout():
    pytest.importorskip("distributed")
    t = time.monotonic()
    with pytest.raises(SchedulerUnreachableError, match=r"tcp://127\.0\.0\.1:9.*1 s time-out"):
        DaskExecutor.connect("tcp://127.0.0.1:9", timeout=1)
    assert time.monotonic() - t < 20  # the time-out, not a hang (slack for a loaded machine)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="workers"):
        ProcessExecutor(0)
    with pytest.raises(ValueError, match="context"):
        ProcessExecutor(2, context="fork")
    with pytest.raises(ValueError, match="shard_chunks"):
        ProcessExecutor(2, shard_chunks=0)
    with pytest.raises(ValueError, match="blas_threads"):
        ProcessExecutor(2, blas_threads=0)
    with pytest.raises(TypeError, match="client"):
        DaskExecutor(object())
    with pytest.raises(ValueError, match="either"):
        from_options(jobs=2, scheduler="tcp://x:1")
    assert from_options() is None and from_options(jobs=1) is None
    with pytest.raises(ValueError, match="block_nodes needs consecutive"):
        _engine.block_nodes(_value, [_engine.Chunk(0, 0, 1), _engine.Chunk(2, 2, 3)])


def _blas_env():
    return os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")


def test_workers_get_one_blas_thread_and_this_process_keeps_its_environment(processes):
    # workers × BLAS threads must not exceed the cores (a second thread per worker on busy
    # cores made the benchmark's job 3× slower); the parent's environment is restored
    before = _blas_env()
    assert processes.submit(_blas_env).result() == ("1", "1")
    assert _blas_env() == before


def test_parallel_module_imports_no_dask():
    code = ("import sys, dropcheck.parallel; "
            "print([m for m in ('dask', 'distributed', 'cloudpickle') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _report(path):
    import json

    rep = json.loads(path.read_text())
    return [{k: v for k, v in c.items() if k not in ("seconds", "plots")} for c in rep["claims"]]


def test_verify_in_processes_writes_the_same_report(tmp_path, processes):
    import io

    from dropcheck.verification import run

    ids = ["K1", "M1", "E2"]
    assert run(ids, quick=True, json_path=tmp_path / "s.json", progress=False,
               stream=io.StringIO()) == 0
    assert run(ids, quick=True, json_path=tmp_path / "p.json", progress=False,
               stream=io.StringIO(), executor=processes) == 0
    assert _report(tmp_path / "p.json") == _report(tmp_path / "s.json")


def test_verify_cli_names_an_unreachable_scheduler(capsys):
    pytest.importorskip("distributed")
    from dropcheck.cli import main

    status = main(["verify", "--quick", "--only", "K1", "--scheduler", "tcp://127.0.0.1:9",
                   "--scheduler-timeout", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert "tcp://127.0.0.1:9" in err and "1 s time-out" in err


def test_a_wide_decoder_site_is_sharded_by_mask_index(monkeypatch, processes, dask_client):
    # a decoder site wider than SPLIT_INNER_BITS: its top units become engine chunks (4 units
    # stay in the kernel here, so width 7 has 8 chunks)
    monkeypatch.setattr(dc.parallel, "SPLIT_INNER_BITS", 4)
    net = dc.MLP.random([5, 7, 4], activation="tanh", sites=("h1",), seed=3)
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((3, 5)), rng.integers(0, 4, 3)
    batched = dc.exact.expected_loss(net, x, y, 0.4, method="batched")
    serial = dc.exact.expected_loss(net, x, y, 0.4, executor=SerialExecutor())
    # the split sums 2^7 masks in another order than the batched engine: a few eps of the
    # O(1) losses (float64)
    np.testing.assert_allclose(serial, batched, rtol=1e-13)
    for ex in (processes, DaskExecutor(dask_client, shard_chunks=3), _ShuffledInProcess(2, 0)):
        assert np.array_equal(dc.exact.expected_loss(net, x, y, 0.4, executor=ex), serial)
    r = dc.exact.explicit_regularizer(net, x, y, 0.4, executor=processes)
    r_batched = dc.exact.explicit_regularizer(net, x, y, 0.4, method="batched")
    # R_drop is a difference of O(1) losses: absolute rounding a few eps
    np.testing.assert_allclose(r, r_batched, rtol=0, atol=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_wide_site_one_layer_deeper_is_sharded_by_mask_index(monkeypatch, processes,
                                                                dask_client, activation):
    # a site feeding a hidden layer (the outer-sum kernel) wider than SPLIT_INNER_BITS_OUTER:
    # 3 units stay in the kernel here, so width 7 has 16 chunks; tanh takes the kernel's
    # C/(C + B) form, relu its plain one
    monkeypatch.setattr(dc.parallel, "SPLIT_INNER_BITS_OUTER", 3)
    calls = []
    split = dc.parallel.split_site_loss
    monkeypatch.setattr(dc.parallel, "split_site_loss",
                        lambda *a, **k: calls.append(k["executor"]) or split(*a, **k))
    net = dc.MLP.random([5, 7, 6, 4], activation=activation, sites=("h1",), seed=5)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((3, 5)), rng.integers(0, 4, 3)
    batched = dc.exact.expected_loss(net, x, y, 0.3, method="batched")
    serial = dc.exact.expected_loss(net, x, y, 0.3, executor=SerialExecutor())
    # 2^7 masks summed in another order than the batched engine: a few eps of O(1) losses
    np.testing.assert_allclose(serial, batched, rtol=1e-13)
    for ex in (processes, DaskExecutor(dask_client, shard_chunks=5), _ShuffledInProcess(3, 1)):
        assert np.array_equal(dc.exact.expected_loss(net, x, y, 0.3, executor=ex), serial)
    r = dc.exact.explicit_regularizer(net, x, y, 0.3, executor=processes)
    r_batched = dc.exact.explicit_regularizer(net, x, y, 0.3, method="batched")
    np.testing.assert_allclose(r, r_batched, rtol=0, atol=1e-14)  # a difference of O(1) losses
    assert len(calls) == 5  # every executor call took the sharded path


def test_keyed_draws_do_not_depend_on_the_chunking(problem):
    # draw t is row t mod B of block t // B's stream: any cut of 0 … 299 gives the same rows
    root = np.random.SeedSequence(3)

    def draw(b, g):
        return g.standard_normal((b, 2))

    whole = _engine.keyed_draws(draw, root, 0, 300)
    for size in (1, 7, 64, 100, 299):
        cut = np.concatenate([_engine.keyed_draws(draw, root, s, min(300, s + size))
                              for s in range(0, 300, size)])
        assert np.array_equal(cut, whole), size
    net, x, y = problem
    est = [dc.montecarlo.expected_loss(net, x, y, 0.3, samples=300, chunk_size=c,
                                       rng=np.random.default_rng(9), executor=SerialExecutor())
           for c in (7, 64, 100, 300)]
    # the same draws summed over different trees: rounding only (float64, O(1) losses)
    for e in est[1:]:
        np.testing.assert_allclose(e.value, est[0].value, rtol=1e-13)
        np.testing.assert_allclose(e.stderr, est[0].stderr, rtol=1e-9)


def test_verify_cli_with_jobs_writes_the_serial_report(tmp_path, capsys):
    from dropcheck.cli import main

    args = ["verify", "--quick", "--only", "K1,M1", "--no-progress", "--out", str(tmp_path)]
    assert main([*args, "--json", str(tmp_path / "s.json")]) == 0
    assert main([*args, "-j", "2", "--json", str(tmp_path / "p.json")]) == 0
    assert _report(tmp_path / "p.json") == _report(tmp_path / "s.json")
    capsys.readouterr()
    assert main(["verify", "--only", "K1", "-j", "0"]) == 2
    assert "workers must be a positive int" in capsys.readouterr().err
