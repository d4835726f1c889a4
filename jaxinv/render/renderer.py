"""EG3D's importance renderer: coarse pass, importance pass, merge, final composite.

Pure function of its inputs. Randomness comes from ``key`` or from explicit uniform ``draws`` (the two
random calls of the official code, in order); with neither it is deterministic (stratified jitter
0.5, importance u = linspace(0, 1, Ni)).
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.ops.pallas import raymarch
from jaxinv.render import marcher, sampling
from jaxinv.render.options import RenderOptions
from jaxinv.render.triplane import sample_from_planes

# decoder_apply(sampled_features [B, 3, N, C], directions [B, N, 3]) -> {'rgb': [B, N, F], 'sigma': [B, N, 1]}
DecoderApply = Callable[..., Mapping[str, jax.Array]]


def make_draws(key, batch: int, num_rays: int, options: RenderOptions):
  """Uniform draws ``dict(u_stratified [B, M, D], u_importance [B, M, Ni])`` from ``key``."""
  k1, k2 = jax.random.split(key)
  return {
      "u_stratified": jax.random.uniform(k1, (batch, num_rays, options.depth_resolution)),
      "u_importance": jax.random.uniform(
          k2, (batch, num_rays, options.depth_resolution_importance)),
  }


def run_model(planes, decoder_apply: DecoderApply, coordinates, directions, options: RenderOptions):
  """Decoder output at world points: ``{'rgb': [B, N, F], 'sigma': [B, N, 1]}``."""
  features = sample_from_planes(planes, coordinates, options.box_warp, options.plane_axes)
  return decoder_apply(features, directions)


def _points(origins, directions, depths):
  b = origins.shape[0]
  coords = (origins[:, :, None, :] + depths * directions[:, :, None, :]).reshape(b, -1, 3)
  dirs = jnp.broadcast_to(directions[:, :, None, :], depths.shape[:-1] + (3,)).reshape(b, -1, 3)
  return coords, dirs


def _decode(planes, decoder_apply, origins, directions, depths, options):
  b, m, s, _ = depths.shape
  coords, dirs = _points(origins, directions, depths)
  out = run_model(planes, decoder_apply, coords, dirs, options)
  rgb = out["rgb"].reshape(b, m, s, out["rgb"].shape[-1])
  sigma = out["sigma"].reshape(b, m, s, 1)
  return rgb, sigma


def render(planes, decoder_apply: DecoderApply, ray_origins, ray_directions,
           options: RenderOptions, *, key=None, draws=None, ray_chunk: int | str | None = "auto",
           fused_composite: bool = False):
  """Renders rays through tri-planes (the official ``ImportanceRenderer.forward``).

  Args:
    planes: [B, 3, H, W, C] tri-plane features.
    decoder_apply: maps (sampled_features [B, 3, N, C], directions [B, N, 3]) to
      {'rgb': [B, N, F], 'sigma': [B, N, 1]}, e.g. ``partial(OSGDecoder().apply, params)``.
    ray_origins, ray_directions: [B, M, 3] (unit directions).
    options: RenderOptions.
    key: optional PRNG key for the jitter and importance draws.
    draws: optional dict(u_stratified [B, M, D], u_importance [B, M, Ni] or [B*M, Ni]) of uniforms in
      [0, 1); takes precedence over ``key``.
    ray_chunk: process this many rays (per batch element) at a time with ``lax.map``; the result is
      the same, the working set is smaller (faster on CPU, less memory everywhere). Must divide M.
      'auto' picks a power-of-two divisor of M from the backend and the samples per ray; None
      renders all rays at once.
    fused_composite: composite with the Pallas kernel (``ops.pallas.raymarch``, GPU) instead of
      jnp; same numbers to float32 rounding. Not validated on hardware yet: off by default.
  Returns:
    feature_samples: [B, M, F] composited features mapped to [-1, 1].
    depth: [B, M, 1] expected depth, clamped to the global sample-depth range.
    weights_sum: [B, M, 1] total weight (opacity) per ray.
  """
  checks.check_rank(planes, "planes", 5, "[B, 3, H, W, C]")
  checks.check_shape(ray_origins, "ray_origins", (planes.shape[0], None, 3), "[B, M, 3]")
  checks.check_shape(ray_directions, "ray_directions", ray_origins.shape, "[B, M, 3]")
  b, m, _ = ray_origins.shape
  if draws is None and key is not None:
    draws = make_draws(key, b, m, options)
  draws = {} if draws is None else dict(draws)
  unknown = set(draws) - {"u_stratified", "u_importance"}
  if unknown:
    raise ValueError(f"draws: unknown entries {sorted(unknown)}; expected u_stratified, u_importance")
  u_strat = draws.get("u_stratified")
  if u_strat is not None:
    u_strat = jnp.asarray(u_strat, jnp.float32)
    if u_strat.size != b * m * options.depth_resolution:  # [B, M, D] or the official [B, M, D, 1]
      raise ValueError(f"draws['u_stratified']: expected [B, R*R, D] = [{b}, {m}, "
                       f"{options.depth_resolution}], got shape {u_strat.shape}")
    u_strat = u_strat.reshape(b, m, options.depth_resolution)
  u_imp = draws.get("u_importance")
  ni = options.depth_resolution_importance
  if u_imp is not None:
    u_imp = jnp.asarray(u_imp, jnp.float32)
    if u_imp.size != b * m * ni:
      raise ValueError(f"draws['u_importance']: expected [B, R*R, Ni] = [{b}, {m}, {ni}] (or "
                       f"[B*R*R, Ni]), got shape {u_imp.shape}")
    u_imp = u_imp.reshape(b, m, ni)

  if ray_chunk == "auto":
    ray_chunk = auto_ray_chunk(b, m, options.depth_resolution + ni)

  def rays_fn(args):
    o, d, us, ui = args
    return _render_rays(planes, decoder_apply, o, d, options, us, ui, fused_composite)

  if ray_chunk is None or ray_chunk >= m:
    rgb, depth, wsum, dmin, dmax = rays_fn((ray_origins, ray_directions, u_strat, u_imp))
  else:
    if m % ray_chunk:
      raise ValueError(f"ray_chunk={ray_chunk} must divide the number of rays per image M={m}")
    n = m // ray_chunk

    def split(x):
      return None if x is None else jnp.moveaxis(x.reshape(b, n, ray_chunk, *x.shape[2:]), 1, 0)

    def merge(x):
      return jnp.moveaxis(x, 0, 1).reshape(b, m, *x.shape[3:])

    rgb, depth, wsum, dmin, dmax = jax.lax.map(
        rays_fn, tuple(split(x) for x in (ray_origins, ray_directions, u_strat, u_imp)))
    rgb, depth, wsum = merge(rgb), merge(depth), merge(wsum)
    dmin, dmax = jnp.min(dmin), jnp.max(dmax)
  # The official clamp uses the range of *all* final sample depths (every ray of every image).
  return rgb, jnp.clip(depth, dmin, dmax), wsum


def auto_ray_chunk(batch: int, num_rays: int, samples_per_ray: int) -> int | None:
  """Rays per chunk keeping about 2^16 points (CPU: cache-sized) or 2^21 (accelerators) per step."""
  target = 2 ** 16 if jax.default_backend() == "cpu" else 2 ** 21
  chunk = num_rays
  while chunk % 2 == 0 and batch * chunk * samples_per_ray > target:
    chunk //= 2
  return None if chunk == num_rays else chunk


def _render_rays(planes, decoder_apply, ray_origins, ray_directions, options, u_strat, u_imp,
                 fused_composite=False):
  """Per-ray part of ``render``: (rgb, unclamped depth, weight sum, min depth, max depth)."""
  b, m, _ = ray_origins.shape
  if options.auto_range:
    ray_start, ray_end = sampling.ray_box_limits(ray_origins, ray_directions, options.box_warp)
  else:
    ray_start, ray_end = float(options.ray_start), float(options.ray_end)
  depths_coarse = sampling.stratified_depths(
      b, m, ray_start, ray_end, options.depth_resolution, u_strat, options.disparity_space_sampling)
  colors_coarse, densities_coarse = _decode(planes, decoder_apply, ray_origins, ray_directions,
                                            depths_coarse, options)
  n_importance = options.depth_resolution_importance
  if n_importance > 0:
    _, _, weights = marcher.composite(colors_coarse, densities_coarse, depths_coarse,
                                      white_back=options.white_back, clamp_mode=options.clamp_mode)
    depths_fine = sampling.sample_importance(depths_coarse, weights, n_importance, u_imp)
    colors_fine, densities_fine = _decode(planes, decoder_apply, ray_origins, ray_directions,
                                          depths_fine, options)
    depths, colors, densities = unify_samples(depths_coarse, colors_coarse, densities_coarse,
                                              depths_fine, colors_fine, densities_fine)
  else:
    depths, colors, densities = depths_coarse, colors_coarse, densities_coarse
  if fused_composite:
    rgb, depth, weights = raymarch.composite(colors, densities, depths, white_back=options.white_back)
  else:
    rgb, depth, weights = marcher.composite(colors, densities, depths,
                                            white_back=options.white_back,
                                            clamp_mode=options.clamp_mode)
  return rgb, depth, jnp.sum(weights, axis=2), jnp.min(depths), jnp.max(depths)


def unify_samples(depths1, colors1, densities1, depths2, colors2, densities2):
  """Concatenates two sample sets along the sample axis and sorts them by depth (stable)."""
  depths = jnp.concatenate([depths1, depths2], axis=-2)
  colors = jnp.concatenate([colors1, colors2], axis=-2)
  densities = jnp.concatenate([densities1, densities2], axis=-2)
  order = jnp.argsort(depths[..., 0], axis=-1, stable=True)[..., None]
  return (jnp.take_along_axis(depths, order, axis=-2),
          jnp.take_along_axis(colors, order, axis=-2),
          jnp.take_along_axis(densities, order, axis=-2))
