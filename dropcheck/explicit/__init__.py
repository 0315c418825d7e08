"""The explicit regularizer of dropout (Wei, Kakade & Ma 2020, Sec. 4.1 and 5.2; seed 001).

``R_drop(F, x) = E_η ℓ(F(x, η)) − ℓ(F(x))`` (exact: :func:`dropcheck.exact.explicit_regularizer`)
is approximated by

- :func:`taylor` — ``R_taylor``, the second-order Taylor term (4.2), with the constant;
- :func:`r_approx` — the paper's ``R_approx`` (4.4), its Gauss–Newton part, **without** the
  constant (multiply by :func:`strength` ``= q/(2(1−q))``), and the Sec. 5.2 variants
  (``hessian="identity"``, ``hessian="loss_jacobian"`` = ``R̃_approx`` of 5.1);
- :func:`r_approx_sampled`, :func:`r_approx_probe` — unbiased estimators of ``R_approx``
  (sampled labels; Rademacher probes), with standard errors; :func:`r_approx_factor` — the
  exact value by the factor route in either mask form (locked / per step) of a sequence model;
  :func:`r_drop_sampled` — Monte-Carlo ``R_drop`` with a control variate;
- :func:`r_approx_grad` — ``∇_W R_approx`` for the explicit step of Alg. 2;
- :func:`next_layer` — the Taylor term around the next pre-activation (fn. 4, App. A.2).

Shapes: per-example results ``(n,)`` (scalars for one example ``(d0,)``); ``q`` is a float or a
dict ``site -> q``; ``sites`` defaults to every site of the model.  Arrays come back in the
model's namespace.
"""

from dropcheck.explicit.estimators import (
    EstimatorComparison,
    EstimatorCost,
    compare_estimators,
    r_approx_factor,
    r_approx_probe,
    r_approx_sampled,
    r_approx_sampled_terms,
    r_drop_sampled,
    r_hat,
)
from dropcheck.explicit.gauss_newton import r_approx, r_approx_grad, route_for
from dropcheck.explicit.taylor import (
    HessianSplit,
    hessian_split,
    noise_hessian,
    small_q_limit,
    strength,
    taylor,
)
from dropcheck.explicit.taylor_next import next_layer

__all__ = [
    # the constant
    "strength",
    # Taylor (4.1–4.2)
    "taylor",
    "hessian_split",
    "HessianSplit",
    "noise_hessian",
    "small_q_limit",
    # Taylor around the next layer (fn. 4, App. A.2)
    "next_layer",
    # R_approx (4.4) and variants (5.1, Sec. 5.2)
    "r_approx",
    "r_approx_grad",
    "route_for",
    # estimators (seed 001)
    "r_hat",
    "r_approx_sampled",
    "r_approx_probe",
    "r_approx_sampled_terms",
    "r_approx_factor",
    "r_drop_sampled",
    "compare_estimators",
    "EstimatorCost",
    "EstimatorComparison",
]
