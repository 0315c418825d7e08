"""An independent MLP written in autograd.numpy: the oracle for the hand-derived sweeps."""

import autograd.numpy as anp

ACT = {
    "tanh": anp.tanh,
    "relu": lambda z: anp.maximum(z, 0.0),
    "gelu": lambda z: 0.5 * z * (1 + anp.tanh(anp.sqrt(2 / anp.pi) * (z + 0.044715 * z**3))),
    "softplus": lambda z: anp.logaddexp(0.0, z),
    "sigmoid": lambda z: 1 / (1 + anp.exp(-z)),
    "identity": lambda z: z,
}


def mlp_logits(params, x, activation, noise=None, site_override=None):
    """Logits of one example x (d0,); noise: site -> eta (d,); site_override: site -> value.

    ``site_override`` replaces the value a site feeds forward (post-noise), which is what the
    site Jacobians differentiate.
    """
    noise = noise or {}
    site_override = site_override or {}
    L = len(params) // 2
    h = x
    for layer in range(1, L + 1):
        s = "x" if layer == 1 else f"h{layer - 1}"
        inp = h * (1 + noise[s]) if s in noise else h
        if s in site_override:
            inp = site_override[s]
        z = anp.dot(params[2 * layer - 2], inp) + params[2 * layer - 1]
        h = ACT[activation](z) if layer < L else z
    return h


def ce(logits, y):
    return anp.log(anp.sum(anp.exp(logits - anp.max(logits)))) + anp.max(logits) - logits[y]


def site_input(params, x, activation, site):
    """The value site ``site`` feeds forward for one example (no noise)."""
    L = len(params) // 2
    h = x
    for layer in range(1, L + 1):
        s = "x" if layer == 1 else f"h{layer - 1}"
        if s == site:
            return h
        z = anp.dot(params[2 * layer - 2], h) + params[2 * layer - 1]
        h = ACT[activation](z) if layer < L else z
    raise KeyError(site)
