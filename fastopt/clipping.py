r"""Gradient clipping kernels, applied by the loop before each update.

* by value (torch ``clip_grad_value_``, optax ``clip``): :math:`g_i \leftarrow \min(\max(g_i, -c), c)`
* by norm (torch ``clip_grad_norm_``, optax ``clip_by_global_norm``):
  :math:`g \leftarrow g \cdot \min(1, c / (\lVert g \rVert_2 + 10^{-6}))`, torch's formula.

The convergence test (``gtol``) always uses the unclipped gradient.
"""

import numpy as np

from ._jit import kernel


@kernel
def clip_by_value(g, clip_value):
    """Clamp every element of ``g`` to ``[-clip_value, clip_value]`` in place."""
    for i in range(g.size):
        if g[i] > clip_value:
            g[i] = clip_value
        elif g[i] < -clip_value:
            g[i] = -clip_value


@kernel
def clip_by_norm(g, max_norm):
    """Scale ``g`` in place so its Euclidean norm is at most ``max_norm`` (torch's formula)."""
    total = 0.0
    for i in range(g.size):
        total += g[i] * g[i]
    clip_coef = max_norm / (np.sqrt(total) + 1e-6)
    if not clip_coef >= 1.0:  # a NaN norm makes the gradient NaN, as torch does
        for i in range(g.size):
            g[i] = g[i] * clip_coef
