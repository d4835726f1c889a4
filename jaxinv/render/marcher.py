"""Volume compositing along rays: EG3D's ``MipRayMarcher2``.

Between consecutive samples i, i+1 the colour, density and depth are the midpoints; the density is
activated with softplus(sigma - 1); alpha_i = 1 - exp(-sigma_i * delta_i); the weight of interval i is
alpha_i * prod_{j<i} (1 - alpha_j + 1e-10). The composite depth is the weighted mean depth divided by
the total weight; where that is undefined (no weight) it becomes +inf and is then clamped to the
**global** [min, max] of the whole ``depths`` tensor (not per ray), exactly as the official code.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def density_activation(sigma, clamp_mode: str = "softplus"):
  if clamp_mode != "softplus":
    raise ValueError(f"clamp_mode: only 'softplus' is supported, got {clamp_mode!r}")
  # The -1 shift makes a freshly initialised decoder start mostly transparent.
  return jax.nn.softplus(sigma - 1)


def interval_weights(densities, depths, clamp_mode: str = "softplus"):
  """Per-interval weights ``[B, M, S-1, 1]`` from raw ``densities`` and ``depths`` ``[B, M, S, 1]``."""
  deltas = depths[:, :, 1:] - depths[:, :, :-1]
  sigma_mid = density_activation((densities[:, :, :-1] + densities[:, :, 1:]) / 2, clamp_mode)
  alpha = 1 - jnp.exp(-(sigma_mid * deltas))
  # The 1e-10 keeps the transmittance (and its gradient) from collapsing to exactly zero.
  shifted = jnp.concatenate([jnp.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], axis=-2)
  transmittance = jnp.cumprod(shifted, axis=-2)[:, :, :-1]
  return alpha * transmittance


def composite(colors, densities, depths, *, white_back: bool = False, clamp_mode: str = "softplus"):
  """``ray_march`` without the final global depth clamp (depth is +inf where no weight landed).

  Rays are independent here, so this can run on chunks of rays; the caller clamps afterwards.
  """
  weights = interval_weights(densities, depths, clamp_mode)
  colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
  depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
  # The weighted sum over the samples as a contraction: XLA:CPU runs this reduction over a middle
  # axis some 25x slower as a multiply + reduce (0.23 s vs 8 ms for 16384 rays x 95 x 32).
  rgb = jnp.einsum("bms,bmsc->bmc", weights[..., 0], colors_mid,
                   precision=jax.lax.Precision.HIGHEST)
  weight_total = jnp.sum(weights, axis=-2)
  depth_sum = jnp.sum(weights * depths_mid, axis=-2)
  # Officially 0/0 = NaN becomes +inf; the inner where keeps the unused branch's gradient finite.
  ok = weight_total > 0
  depth = jnp.where(ok, depth_sum / jnp.where(ok, weight_total, 1.0), jnp.inf)
  if white_back:
    rgb = rgb + 1 - weight_total
  return rgb * 2 - 1, depth, weights


def ray_march(colors, densities, depths, *, white_back: bool = False, clamp_mode: str = "softplus"):
  """Composites samples along each ray.

  Args:
    colors: [B, M, S, C] per-sample features (in about [0, 1]).
    densities: [B, M, S, 1] raw densities (before activation).
    depths: [B, M, S, 1] sorted sample depths.
    white_back: add (1 - total weight) of white before the [-1, 1] mapping.
    clamp_mode: 'softplus' (the only official mode).
  Returns:
    rgb: [B, M, C] composite mapped to 2x - 1.
    depth: [B, M, 1] expected depth, clamped to the global range of ``depths``.
    weights: [B, M, S-1, 1] per-interval weights.
  """
  rgb, depth, weights = composite(colors, densities, depths, white_back=white_back,
                                  clamp_mode=clamp_mode)
  return rgb, jnp.clip(depth, jnp.min(depths), jnp.max(depths)), weights
