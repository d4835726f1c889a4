"""Where to sample along rays: stratified coarse depths and importance (inverse-CDF) fine depths.

Randomness is always explicit: functions take uniform draws ``u`` in [0, 1). ``None`` means the
deterministic mode (stratified jitter 0.5, importance u = linspace(0, 1, Ni)), which is what the
fixtures' 0.5 draws and most inference wants.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinv import checks


def stratified_depths(batch: int, num_rays: int, ray_start, ray_end, depth_resolution: int,
                      u=None, disparity_space_sampling: bool = False):
  """Coarse depths ``[B, M, D, 1]``: D evenly spaced depths, each jittered forward by u·spacing.

  Args:
    batch, num_rays: B and M.
    ray_start, ray_end: scalars, or per-ray ``[B, M, 1]`` arrays (the 'auto' box range).
    depth_resolution: D >= 2.
    u: [B, M, D] uniform draws (or [B, M, D, 1]); None -> 0.5 (the interval midpoints).
    disparity_space_sampling: space the samples evenly in 1/depth instead.
  """
  d = depth_resolution
  if u is None:
    u = jnp.full((batch, num_rays, d, 1), 0.5, jnp.float32)
  else:
    u = jnp.asarray(u, jnp.float32)
    if u.ndim == 3:
      u = u[..., None]
    checks.check_shape(u, "u_stratified", (batch, num_rays, d, 1), "[B, R*R, D]")
  t = jnp.linspace(0.0, 1.0, d, dtype=jnp.float32).reshape(1, 1, d, 1)
  per_ray = not (isinstance(ray_start, (int, float)) and isinstance(ray_end, (int, float)))
  if disparity_space_sampling:
    t = t + u * (1.0 / (d - 1))
    if per_ray:
      start, end = ray_start[..., None, :], ray_end[..., None, :]
    else:
      start, end = ray_start, ray_end
    return 1.0 / (1.0 / start * (1.0 - t) + 1.0 / end * t)
  if per_ray:
    start, end = ray_start[..., None, :], ray_end[..., None, :]  # [B, M, 1, 1]
    steps = jnp.arange(d, dtype=jnp.float32).reshape(1, 1, d, 1) / (d - 1)
    depths = start + steps * (end - start)
    return depths + u * ((end - start) / (d - 1))
  depths = jnp.linspace(ray_start, ray_end, d, dtype=jnp.float32).reshape(1, 1, d, 1)
  return depths + u * ((ray_end - ray_start) / (d - 1))


def sample_pdf(bins, weights, u, eps: float = 1e-5):
  """Inverse-CDF samples of the piecewise-constant pdf ``weights`` over ``bins``.

  The official ``sample_pdf``: ``weights + eps`` normalised to a CDF (with a leading 0), each u
  located with a right-sided search, and linearly interpolated between the bracketing bin edges;
  where the bracketing CDF step is below eps the denominator is 1 instead.

  Args:
    bins: [N, K] sorted positions, K >= W + 1 (the renderer passes K = W + 2; extra bins unused).
    weights: [N, W] >= 0.
    u: [N, S] draws in [0, 1].
    eps: the official 1e-5 (added to every weight and used as the degenerate-step threshold).
  Returns:
    [N, S] samples.
  """
  n, w = weights.shape
  weights = weights + eps
  pdf = weights / jnp.sum(weights, axis=-1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros_like(pdf[:, :1]), jnp.cumsum(pdf, axis=-1)], axis=-1)  # [N, W+1]
  # searchsorted(cdf, u, right=True) == number of cdf entries <= u.
  inds = jnp.sum(cdf[:, None, :] <= u[:, :, None], axis=-1)
  below = jnp.maximum(inds - 1, 0)
  above = jnp.minimum(inds, w)
  cdf0 = jnp.take_along_axis(cdf, below, axis=1)
  cdf1 = jnp.take_along_axis(cdf, above, axis=1)
  bins0 = jnp.take_along_axis(bins, below, axis=1)
  bins1 = jnp.take_along_axis(bins, above, axis=1)
  denom = cdf1 - cdf0
  denom = jnp.where(denom < eps, 1.0, denom)
  return bins0 + (u - cdf0) / denom * (bins1 - bins0)


def smooth_weights(weights):
  """The official weight smoothing: 2-tap max-pool (padding 1), 2-tap average, + 0.01.

  Args:
    weights: [N, L] per-interval weights.
  Returns:
    [N, L] smoothed weights.
  """
  neg = jnp.full_like(weights[:, :1], -jnp.inf)
  padded = jnp.concatenate([neg, weights, neg], axis=1)  # max-pool pads with -inf
  pooled = jnp.maximum(padded[:, :-1], padded[:, 1:])  # [N, L + 1]
  return (pooled[:, :-1] + pooled[:, 1:]) / 2 + 0.01


def sample_importance(z_vals, weights, n_importance: int, u=None):
  """Fine depths ``[B, M, Ni, 1]`` drawn where the coarse pass found weight (no gradient).

  Args:
    z_vals: [B, M, D, 1] sorted coarse depths.
    weights: [B, M, D-1, 1] coarse interval weights from the ray marcher.
    n_importance: Ni.
    u: [B, M, Ni] (or [B*M, Ni]) uniform draws; None -> linspace(0, 1, Ni) for every ray.
  """
  b, m, d, _ = z_vals.shape
  z = jax.lax.stop_gradient(z_vals).reshape(b * m, d)
  wts = smooth_weights(jax.lax.stop_gradient(weights).reshape(b * m, -1))
  if u is None:
    u = jnp.broadcast_to(jnp.linspace(0.0, 1.0, n_importance, dtype=jnp.float32),
                         (b * m, n_importance))
  else:
    u = jnp.asarray(u, jnp.float32)
    if u.size != b * m * n_importance:
      raise ValueError(f"u_importance: expected {b * m * n_importance} draws ([B, R*R, Ni] = "
                       f"[{b}, {m}, {n_importance}]), got shape {u.shape}")
    u = u.reshape(b * m, n_importance)
  mids = 0.5 * (z[:, :-1] + z[:, 1:])
  fine = sample_pdf(mids, wts[:, 1:-1], u)
  return jax.lax.stop_gradient(fine).reshape(b, m, n_importance, 1)


def ray_box_limits(ray_origins, ray_directions, box_side: float):
  """Entry/exit depths ``([B, M, 1], [B, M, 1])`` of rays through the cube of side ``box_side``.

  The official 'auto' range: rays that miss the cube get the valid rays' min start / max start.
  """
  half = box_side / 2
  inv = 1.0 / ray_directions
  t0 = (-half - ray_origins) * inv
  t1 = (half - ray_origins) * inv
  tmin = jnp.max(jnp.minimum(t0, t1), axis=-1, keepdims=True)
  tmax = jnp.min(jnp.maximum(t0, t1), axis=-1, keepdims=True)
  valid = tmax > tmin
  any_valid = jnp.any(valid)
  lo = jnp.min(jnp.where(valid, tmin, jnp.inf))
  hi = jnp.max(jnp.where(valid, tmin, -jnp.inf))
  start = jnp.where(valid | ~any_valid, tmin, lo)
  end = jnp.where(valid | ~any_valid, tmax, hi)
  return jax.lax.stop_gradient(start), jax.lax.stop_gradient(end)
