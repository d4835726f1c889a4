"""Resampling of NHWC feature maps with PyTorch's exact index conventions.

* ``resize_bilinear_align_corners``: ``F.interpolate(mode='bilinear', align_corners=True)`` (the pSp
  feature-pyramid upsampling), written as two small interpolation matrices so it is exact, cheap
  and differentiable.
* ``pixel_shuffle``: ``nn.PixelShuffle(r)`` in channels-last layout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] linear-interpolation weights for align_corners=True.

  Output index ``o`` samples source position ``o * (n_in - 1) / (n_out - 1)``; the two neighbours
  get weights ``1 - frac`` and ``frac`` (PyTorch's ``h1lambda``).
  """
  m = np.zeros((n_out, n_in), np.float64)
  if n_out == 1 or n_in == 1:
    m[:, 0] = 1.0
    return m
  scale = (n_in - 1) / (n_out - 1)
  for o in range(n_out):
    src = o * scale
    i0 = min(int(np.floor(src)), n_in - 1)
    i1 = min(i0 + 1, n_in - 1)
    frac = src - i0
    m[o, i0] += 1.0 - frac
    m[o, i1] += frac
  return m


def resize_bilinear_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize with ``align_corners=True``.

  Args:
    x: [B, H, W, C].
    size: (H_out, W_out).

  Returns:
    [B, H_out, W_out, C], same dtype as ``x``.
  """
  _, h, w, _ = x.shape
  ho, wo = int(size[0]), int(size[1])
  mh = jnp.asarray(_align_corners_matrix(h, ho), x.dtype)
  mw = jnp.asarray(_align_corners_matrix(w, wo), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  y = jnp.einsum("oh,bhwc->bowc", mh, x, precision=hi)
  return jnp.einsum("pw,bowc->bopc", mw, y, precision=hi)


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """``nn.PixelShuffle(r)`` for channels-last maps.

  PyTorch (NCHW): ``out[b, c, h*r + i, w*r + j] = in[b, c*r*r + i*r + j, h, w]``.

  Args:
    x: [B, H, W, C * r * r].
    r: upscale factor (1 is the identity).

  Returns:
    [B, H * r, W * r, C].
  """
  if r == 1:
    return x
  b, h, w, crr = x.shape
  if crr % (r * r):
    raise ValueError(f"pixel_shuffle: channels {crr} not divisible by r*r = {r * r}")
  c = crr // (r * r)
  y = x.reshape(b, h, w, c, r, r)
  y = y.transpose(0, 1, 4, 2, 5, 3)  # [B, H, i, W, j, C]
  return y.reshape(b, h * r, w * r, c)
