"""TriPlaneNet's "probably symmetric" mirror prior (TriPlaneNet appendix eqs. 14-15, after Wu et al. 2020).

Faces are roughly left-right symmetric, so the render at the mirrored camera ``y_hat_m`` should
resemble the mirrored input ``x_m = flip(x)`` -- except where the face is not symmetric (hair
parting, ears, background). A per-pixel uncertainty ``sigma(x_m) > 0`` down-weights those pixels:

* eq. 14, Laplacian NLL (trainable sigma): ``log(sqrt 2) + mean_uv [log sigma + sqrt2 * l_uv / sigma]``
* Gaussian NLL (the same construction with a Gaussian density):
  ``log(sqrt(2 pi)) + mean_uv [log sigma + l_uv^2 / (2 sigma^2)]``
* eq. 15 (sigma from a frozen, pre-trained predictor): ``mean_uv [l_uv / sigma]`` -- the
  ``log sigma`` term is constant then, and TriPlaneNet uses the squared (L2) distance there.
  TriPlaneNet's v2 code: ``mean_uv [l_uv / (sigma + 1)]`` (``EPS = 1``), optionally normalised by
  ``mean_uv [1 / (sigma + 1)]`` per sample (``symmetry_loss(..., eps=1.0, normalize=True)``).

``l_uv`` is the per-pixel distance (``'l1'``, squared ``'l2'`` or ``'smooth_l1'`` -- the second
TriPlaneNet branch swaps L2 for smooth-L1), averaged over channels, like Wu et al.'s code.
``sigma`` is a single-channel map ``[B, H, W, 1]`` broadcast over the colour channels.
"""
from __future__ import annotations

import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.checks import check_rank
from jaxinv.nn import irse

Distance = Literal["l1", "l2", "smooth_l1"]


def mirror(x: jax.Array) -> jax.Array:
  """Horizontal flip of ``x [B, H, W, C]`` (``x_m = flip(x)``)."""
  return x[:, :, ::-1, :]


def pixel_distance(a: jax.Array, b: jax.Array, distance: Distance = "l2", beta: float = 1.0):
  """Per-pixel distance ``[B, H, W, 1]`` (mean over channels)."""
  d = a - b
  if distance == "l1":
    e = jnp.abs(d)
  elif distance == "l2":
    e = d * d
  elif distance == "smooth_l1":
    ad = jnp.abs(d)
    e = jnp.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)
  else:
    raise ValueError(f"distance must be 'l1', 'l2' or 'smooth_l1', got {distance!r}")
  return jnp.mean(e, axis=-1, keepdims=True)


def _check(x_m, y_hat_m, sigma):
  check_rank(x_m, "x_m", 4, "[B, H, W, C]")
  if x_m.shape != y_hat_m.shape:
    raise ValueError(f"x_m {x_m.shape} and y_hat_m {y_hat_m.shape} must have the same shape")
  check_rank(sigma, "sigma", 4, "[B, H, W, 1]")
  if sigma.shape != x_m.shape[:3] + (1,):
    raise ValueError(f"sigma must be [B, H, W, 1] = {x_m.shape[:3] + (1,)}, got {sigma.shape}")


def symmetry_loss(x_m, y_hat_m, sigma, distance: Distance = "l2", eps: float = 1e-7,
                  normalize: bool = False):
  """Eq. 15: ``mean(l / sigma)`` with a given (frozen) uncertainty map ``sigma [B, H, W, 1]``.

  ``eps`` is added to ``sigma``: tiny (default) for the paper's eq. 15; TriPlaneNet's v2 code uses
  ``EPS = 1``, i.e. ``mean(l / (sigma + 1))``, which stays finite for ``sigma -> 0``.
  ``normalize=True`` is the code's ``--normalize_mirror``: per sample,
  ``mean_uv(l / (sigma + eps)) / mean_uv(1 / (sigma + eps))`` (a weighted mean of ``l`` whose
  weights sum to one), then the batch mean. With ``sigma = 1`` everywhere both forms reduce to
  ``mean(l) / (1 + eps)`` and ``mean(l)``.
  """
  _check(x_m, y_hat_m, sigma)
  weighted = pixel_distance(x_m, y_hat_m, distance) / (sigma + eps)
  if not normalize:
    return jnp.mean(weighted)
  per_sample = jnp.mean(weighted, axis=(1, 2, 3))
  return jnp.mean(per_sample / jnp.mean(1.0 / (sigma + eps), axis=(1, 2, 3)))


def symmetry_nll(x_m, y_hat_m, sigma, density: Literal["laplacian", "gaussian"] = "laplacian",
                 distance: Distance = "l1", eps: float = 1e-7):
  """Eq. 14 (Laplacian) or its Gaussian form: the NLL that also trains ``sigma``.

  For ``'gaussian'`` pass ``distance='l1'`` to get the residual magnitude that is squared inside.
  """
  _check(x_m, y_hat_m, sigma)
  l = pixel_distance(x_m, y_hat_m, distance)
  s = sigma + eps
  if density == "laplacian":
    return math.log(math.sqrt(2.0)) + jnp.mean(jnp.log(s) + math.sqrt(2.0) * l / s)
  if density == "gaussian":
    return 0.5 * math.log(2 * math.pi) + jnp.mean(jnp.log(s) + l * l / (2 * s * s))
  raise ValueError(f"density must be 'laplacian' or 'gaussian', got {density!r}")


class UncertaintyNet(nn.Module):
  """Small encoder-decoder predicting ``sigma(x_m) > 0``, run at 64x64 as TriPlaneNet describes.

  ``x [B, H, W, 3]`` -> bilinear resize to 64 -> 3 stride-2 convs -> 3 transposed convs ->
  softplus -> bilinear resize back -> ``sigma [B, H, W, 1]``.
  """
  width: int = 32
  work_size: int = 64

  @nn.compact
  def __call__(self, x):
    b, h, w, _ = x.shape
    z = jax.image.resize(x, (b, self.work_size, self.work_size, x.shape[-1]), "linear")
    feats = []
    for i, c in enumerate((self.width, 2 * self.width, 4 * self.width)):
      z = nn.leaky_relu(irse.conv2d(c, 4, 2, 1, use_bias=True, name=f"down{i}")(z), 0.2)
      feats.append(z)
    for i, c in enumerate((2 * self.width, self.width, self.width)):
      z = nn.relu(nn.ConvTranspose(c, (4, 4), (2, 2), padding="SAME", name=f"up{i}")(z))
      if i < 2:
        z = z + feats[1 - i]
    z = irse.conv2d(1, 3, 1, 1, use_bias=True, name="out")(z)
    sigma = jax.nn.softplus(z)
    return jax.image.resize(sigma, (b, h, w, 1), "linear")
