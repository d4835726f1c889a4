"""Pooling ops with PyTorch's exact window semantics."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """``[out_size, in_size]`` averaging matrix of ``AdaptiveAvgPool1d``.

  Output ``i`` averages inputs ``[floor(i*in/out), ceil((i+1)*in/out))``: windows of varying width
  that overlap when ``in/out`` is not an integer (e.g. 16 -> 7 or 188 -> 112). This is *not* a
  resize: no interpolation weights, only equal weights over each window.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"adaptive pooling needs positive sizes, got {in_size} -> {out_size}")
  m = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    lo = (i * in_size) // out_size
    hi = -((-(i + 1) * in_size) // out_size)  # ceil
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m.astype(np.float32)


def adaptive_avg_pool2d(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
  """``torch.nn.AdaptiveAvgPool2d`` on NHWC input.

  Args:
    x: ``[B, H, W, C]``.
    output_size: ``S`` or ``(Ho, Wo)``.

  Returns:
    ``[B, Ho, Wo, C]``. Windows are rectangles, so the 2D mean is the H mean of W means; both
    are done as small matmuls (exact fp32 on every backend).
  """
  if x.ndim != 4:
    raise ValueError(f"adaptive_avg_pool2d: expected NHWC [B, H, W, C], got shape {x.shape}")
  ho, wo = (output_size, output_size) if isinstance(output_size, int) else output_size
  mh = jnp.asarray(adaptive_pool_matrix(x.shape[1], ho))
  mw = jnp.asarray(adaptive_pool_matrix(x.shape[2], wo))
  return jnp.einsum("oh,bhwc,pw->bopc", mh, x, mw, precision=jax.lax.Precision.HIGHEST)
