"""SSIM and MS-SSIM (Wang et al. 2004 / 2003) for NHWC images.

Gaussian window 11x11, sigma 1.5, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L`` the data range
(2 for images in [-1, 1]); statistics use population (not sample) covariance and only the
"valid" region where the window fits (what ``skimage.metrics.structural_similarity`` averages
over with ``gaussian_weights=True, use_sample_covariance=False``). Channels are handled
independently and averaged, per image.

MS-SSIM uses the standard five scale weights ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``:
the contrast-structure term at the four finer scales, the full SSIM at the coarsest, each clipped
at 0 before the weighted product, with 2x2 average-pool downsampling between scales (odd sides
zero-padded by one, as the widely used ``pytorch_msssim`` does). The shorter side must exceed
``(win - 1) * 2^(scales - 1)`` = 160 pixels.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.checks import check_range, check_rank

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_HIGHEST = jax.lax.Precision.HIGHEST


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """Normalised 1D Gaussian ``[size]``."""
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-r ** 2 / (2 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def _filter(x, g):
  """Separable valid-mode Gaussian filter of every channel of ``x [B, H, W, C]``."""
  c = x.shape[-1]
  k = jnp.asarray(g, x.dtype)
  kh = jnp.tile(k[:, None, None, None], (1, 1, 1, c))  # HWIO, depthwise
  kw = jnp.tile(k[None, :, None, None], (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c, precision=_HIGHEST)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c, precision=_HIGHEST)


def _ssim_cs(x, y, data_range, win, sigma, k1, k2):
  """Per-image, per-channel mean SSIM and contrast-structure terms ``[B, C]``."""
  g = gaussian_window(win, sigma)
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  mx, my = _filter(x, g), _filter(y, g)
  sxx = _filter(x * x, g) - mx * mx
  syy = _filter(y * y, g) - my * my
  sxy = _filter(x * y, g) - mx * my
  cs = (2 * sxy + c2) / (sxx + syy + c2)
  lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
  return jnp.mean(lum * cs, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))


def _check_pair(x, y, min_side: int, what: str, data_range: float):
  check_rank(x, "x", 4, "[B, H, W, C]")
  if x.shape != y.shape:
    raise ValueError(f"{what}: x {x.shape} and y {y.shape} must have the same shape")
  if min(x.shape[1:3]) < min_side:
    raise ValueError(f"{what}: images of {tuple(x.shape[1:3])} are too small; the shorter side "
                     f"must be at least {min_side} (NHWC layout expected)")
  # C1, C2 scale with data_range, so values on another scale (e.g. [0, 255] with the default
  # data_range=2) give a wrong but plausible-looking SSIM; refuse them. data_range=2 means
  # [-1, 1]; any other L means [0, L] (or [-L/2, L/2]).
  lo, hi = (-1.0, 1.0) if data_range == 2.0 else (-data_range / 2, float(data_range))
  hint = (f" for data_range={data_range:g} ([-1, 1] images; pass data_range=255 for [0, 255] "
          "or 1 for [0, 1])")
  for name, v in (("x", x), ("y", y)):
    check_range(v, f"{what}: {name}", lo, hi, tol=1e-3 * data_range, hint=hint)


def ssim(x: jax.Array, y: jax.Array, data_range: float = 2.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Mean SSIM per image ``[B]`` of ``x, y [B, H, W, C]`` (1 = identical).

  Values must match ``data_range`` (default 2: images in [-1, 1]); NaN/inf and out-of-range
  values are refused when the values are available (not under jit; see ``jaxinv.checks``).
  """
  _check_pair(x, y, win_size, "ssim", data_range)
  s, _ = _ssim_cs(x, y, data_range, win_size, sigma, k1, k2)
  return jnp.mean(s, axis=-1)


def _avg_pool2(x):
  ph, pw = x.shape[1] % 2, x.shape[2] % 2
  x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  return s / 4.0


def ms_ssim(x: jax.Array, y: jax.Array, data_range: float = 2.0,
            weights: Sequence[float] = MS_SSIM_WEIGHTS, win_size: int = 11, sigma: float = 1.5,
            k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Multi-scale SSIM per image ``[B]`` of ``x, y [B, H, W, C]``."""
  n = len(weights)
  _check_pair(x, y, (win_size - 1) * 2 ** (n - 1) + 1, "ms_ssim", data_range)
  w = jnp.asarray(weights, jnp.float32)
  terms = []
  for i in range(n):
    s, cs = _ssim_cs(x, y, data_range, win_size, sigma, k1, k2)
    if i < n - 1:
      terms.append(jax.nn.relu(cs))
      x, y = _avg_pool2(x), _avg_pool2(y)
  terms.append(jax.nn.relu(s))
  stack = jnp.stack(terms, axis=0)  # [n, B, C]
  # Product of powers; a clipped-to-zero term makes the value zero, and the where() keeps the
  # gradient of 0 ** w (infinite slope) from turning into NaN.
  pos = stack > 0
  powered = jnp.where(pos, jnp.where(pos, stack, 1.0) ** w[:, None, None], 0.0)
  val = jnp.prod(powered, axis=0)
  return jnp.mean(val, axis=-1)


def ssim_loss(x, y, **kw) -> jax.Array:
  """``1 - mean SSIM`` over the batch (scalar)."""
  return 1.0 - jnp.mean(ssim(x, y, **kw))


def ms_ssim_loss(x, y, **kw) -> jax.Array:
  """``1 - mean MS-SSIM`` over the batch (scalar)."""
  return 1.0 - jnp.mean(ms_ssim(x, y, **kw))
