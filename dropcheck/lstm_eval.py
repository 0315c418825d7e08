"""Deprecated: the LSTM corpus evaluation moved to :mod:`dropcheck.lm`.

Its estimators moved into :mod:`dropcheck.explicit` and :mod:`dropcheck.implicit`.  This
module keeps the old names working; the first use of any of them warns once with a
:class:`DeprecationWarning`.  Where things are now:

============================  ==================================================================
old                           new
============================  ==================================================================
``strength``                  :func:`dropcheck.explicit.strength`
``r_approx_sampled``          :func:`dropcheck.explicit.r_approx_sampled` (``q=``, ``form=``)
``r_approx_exact``            :func:`dropcheck.explicit.r_approx_factor`
``r_drop_mc``                 :func:`dropcheck.explicit.r_drop_sampled`
``xi_approx``                 :func:`dropcheck.implicit.xi_approx` (``reduction="sum"``) /
                              :func:`dropcheck.implicit.xi_approx_at`
``xi_tilde``                  :func:`dropcheck.implicit.xi_tilde` (``reduction="sum"``)
``state=``, ``weight_noise=``  ``model.with_context(state=…, weight_noise=…)`` (site protocol)
``train``, ``windows``, …     :mod:`dropcheck.lm` (``train``, ``windows``, ``evaluate_corpus``,
                              ``format_report``, ``SIZES``;
                              ``dropcheck.lm.cli.cli``)
============================  ==================================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = [
    "strength", "r_approx_sampled", "r_approx_exact", "r_drop_mc", "xi_approx", "xi_tilde",
    "train", "windows", "evaluate_corpus", "format_report", "cli",
]

_warned: set[str] = set()


def _warn(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"dropcheck.lstm_eval.{name} is deprecated: see the dropcheck.lstm_eval "
                      f"module doc for its new place (dropcheck.lm, dropcheck.explicit, "
                      f"dropcheck.implicit)", DeprecationWarning, stacklevel=3)


def _bound(model: Any, kw: dict[str, Any]) -> Any:
    """The model with the old ``state=`` / ``weight_noise=`` keywords bound as its context."""
    return model.with_context(state=kw.pop("state", None),
                              weight_noise=kw.pop("weight_noise", None))


def _gen(kw: dict[str, Any]) -> Any:
    from dropcheck.backend import make_rng

    return make_rng(kw.pop("seed", None), kw.pop("rng", None))


def r_approx_sampled(model: Any, x: Any, y: Any, **kw: Any) -> Any:
    """Deprecated: :func:`dropcheck.explicit.r_approx_sampled`."""
    from dropcheck import explicit

    _warn("r_approx_sampled")
    m, gen = _bound(model, kw), _gen(kw)
    return explicit.r_approx_sampled(m, x, y, samples=kw.pop("samples"), rng=gen,
                                     sites=kw.pop("sites", None),
                                     **kw)


def r_approx_exact(model: Any, x: Any, y: Any, **kw: Any) -> Any:
    """Deprecated: :func:`dropcheck.explicit.r_approx_factor`."""
    from dropcheck import explicit

    _warn("r_approx_exact")
    return explicit.r_approx_factor(_bound(model, kw), x, y, **kw)


def r_drop_mc(model: Any, x: Any, y: Any, q: Any, **kw: Any) -> Any:
    """Deprecated: :func:`dropcheck.explicit.r_drop_sampled`."""
    from dropcheck import explicit

    _warn("r_drop_mc")
    m, gen = _bound(model, kw), _gen(kw)
    return explicit.r_drop_sampled(m, x, y, q, samples=kw.pop("samples"), rng=gen, **kw)


def xi_approx(model: Any, x: Any, y: Any, q: Any, **kw: Any) -> Any:
    """Deprecated: :func:`dropcheck.implicit.xi_approx` / ``xi_approx_at``, summed."""
    from dropcheck import implicit

    _warn("xi_approx")
    m, gen = _bound(model, kw), _gen(kw)
    red = "none" if kw.pop("per_example", False) else "sum"
    eta = kw.pop("eta", None)
    if eta is not None:
        out = implicit.xi_approx_at(m, x, y, eta)
        return out if red == "none" else m.xp.sum(out, axis=-2)
    return implicit.xi_approx(m, x, y, q, rng=gen, noise=kw.pop("noise", "bernoulli"),
                              sites=kw.pop("sites", None),
                              samples=kw.pop("draws", 1), reduction=red)


def xi_tilde(model: Any, x: Any, y: Any, q: Any, **kw: Any) -> Any:
    """Deprecated: :func:`dropcheck.implicit.xi_tilde` with ``reduction="sum"``."""
    from dropcheck import implicit

    _warn("xi_tilde")
    m, gen = _bound(model, kw), _gen(kw)
    return implicit.xi_tilde(m, x, y, q, rng=gen, samples=kw.pop("draws", 1), reduction="sum", **kw)


def _moved(name: str, where: str) -> Callable[..., Any]:
    def fn(*args: Any, **kw: Any) -> Any:
        import importlib

        _warn(name)
        return getattr(importlib.import_module(where), name)(*args, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Deprecated: :func:`{where}.{name}`."
    return fn


strength = _moved("strength", "dropcheck.explicit")
train = _moved("train", "dropcheck.lm")
windows = _moved("windows", "dropcheck.lm")
evaluate_corpus = _moved("evaluate_corpus", "dropcheck.lm")
format_report = _moved("format_report", "dropcheck.lm")
cli = _moved("cli", "dropcheck.lm.cli")


def __getattr__(name: str) -> Any:
    """``SIZES`` (deprecated: :data:`dropcheck.lm.SIZES`), resolved on access."""
    if name == "SIZES":
        from dropcheck.lm import SIZES

        _warn("SIZES")
        return SIZES
    raise AttributeError(f"module 'dropcheck.lstm_eval' has no attribute {name!r}")
