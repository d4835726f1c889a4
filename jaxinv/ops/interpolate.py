"""PyTorch's ``F.interpolate(mode='bilinear', align_corners=False, antialias=...)`` for NHWC.

Written as two small [out, in] weight matrices built in numpy at trace time (exact, cheap,
differentiable). The antialiased weights follow PyTorch's separable AA kernel: a triangle filter
widened by the downscale factor, truncated to the valid input range and renormalised; when
upsampling it coincides with plain bilinear interpolation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def bilinear_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
  """[n_out, n_in] float32 interpolation weights along one axis (align_corners=False).

  Cached: the same read-only array is returned for the same arguments (copy it to modify it).
  """
  scale = n_in / n_out
  m = np.zeros((n_out, n_in), np.float64)
  if antialias:
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(n_out):
      center = scale * (i + 0.5)
      lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as in C
      hi = min(int(center + support + 0.5), n_in)
      js = np.arange(lo, hi)
      wts = np.maximum(0.0, 1.0 - np.abs((js - center + 0.5) * invscale))
      total = wts.sum()
      if total > 0:
        m[i, lo:hi] = wts / total
  else:
    for i in range(n_out):
      src = max(scale * (i + 0.5) - 0.5, 0.0)
      i0 = min(int(src), n_in - 1)
      i1 = min(i0 + 1, n_in - 1)
      frac = src - i0
      m[i, i0] += 1.0 - frac
      m[i, i1] += frac
  m = m.astype(np.float32)
  m.setflags(write=False)  # cached and shared by every caller: read-only
  return m


def resize_bilinear(x: jax.Array, size: tuple[int, int], antialias: bool = False) -> jax.Array:
  """x: [B, H, W, C] -> [B, size[0], size[1], C]."""
  _, h, w, _ = x.shape
  mh = jnp.asarray(bilinear_matrix(h, int(size[0]), bool(antialias)), x.dtype)
  mw = jnp.asarray(bilinear_matrix(w, int(size[1]), bool(antialias)), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=hi)
  return jnp.einsum("pw,bowc->bopc", mw, x, precision=hi)
