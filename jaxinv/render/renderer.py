"""EG3D's importance renderer: coarse pass, importance pass, merge, final composite.

Pure function of its inputs. Randomness comes from ``key`` or from explicit uniform ``draws`` (the two
random calls of the official code, in order); with neither it is deterministic (stratified jitter
0.5, importance u = linspace(0, 1, Ni)).
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.ops.pallas import raymarch
from jaxinv.ops.pallas.raymarch import MLPDecoder
from jaxinv.render import marcher, sampling
from jaxinv.render.options import PLANE_AXES_EG3D, RenderOptions
from jaxinv.render.triplane import sample_from_planes, sample_pixel_major, to_pixel_major

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


def _decode(planes_hwpc, decoder_apply, origins, directions, depths, options):
  b, m, s, _ = depths.shape
  coords, dirs = _points(origins, directions, depths)
  features = sample_pixel_major(planes_hwpc, coords, options.box_warp, options.plane_axes)
  out = decoder_apply(features, dirs)
  rgb = out["rgb"].reshape(b, m, s, out["rgb"].shape[-1])
  sigma = out["sigma"].reshape(b, m, s, 1)
  return rgb, sigma


RENDER_KERNELS = ("xla", "pallas", "auto")


def resolve_kernel(kernel: str) -> str:
  """``'xla'`` or ``'pallas'`` for a requested ``render_kernel`` (``'auto'``: Pallas on GPU).

  On a GPU, ``'auto'`` first runs the kernel once on a tiny input and compares it with its
  reference; if it does not lower or disagrees, it warns once and renders with XLA.
  """
  if kernel not in RENDER_KERNELS:
    raise ValueError(f"render_kernel must be one of {RENDER_KERNELS}, got {kernel!r}")
  if kernel != "auto":
    return kernel
  return "pallas" if jax.default_backend() == "gpu" and _pallas_works_here() else "xla"


@functools.lru_cache(maxsize=None)
def _pallas_works_here() -> bool:
  # Runs once per process, possibly while a caller traces under jax.transfer_guard("disallow"):
  # the probe's own tiny transfers are explicit and allowed.
  with jax.transfer_guard("allow"):
    return _probe_pallas()


def _probe_pallas() -> bool:
  try:
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    planes = jax.random.normal(k[0], (1, 3, 8, 8, 32))
    dec = MLPDecoder(jax.random.normal(k[1], (32, 64)) / 6, jnp.zeros((64,)),
                     jax.random.normal(k[2], (64, 33)) / 8, jnp.zeros((33,)))
    o = jnp.broadcast_to(jnp.array([0.0, 0.0, -2.0]), (1, 64, 3))
    d = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), (1, 64, 3))
    t = jnp.broadcast_to(jnp.linspace(1.5, 2.5, 12).reshape(1, 1, 12, 1), (1, 64, 12, 1))
    kw = dict(box_warp=1.0, plane_axes=PLANE_AXES_EG3D)
    got = jax.jit(functools.partial(raymarch.march, **kw))(planes, dec, o, d, t)[0]
    ref = raymarch.march_reference(planes, dec, o, d, t, **kw)[0]
    ok = bool(jnp.max(jnp.abs(got - ref)) < 1e-4)
    if not ok:
      warnings.warn("render_kernel='auto': the Pallas ray-marching kernel disagrees with its "
                    "reference on this GPU; rendering with XLA")
    return ok
  except Exception as e:  # lowering/compilation failure on an untested GPU or toolchain
    warnings.warn(f"render_kernel='auto': the Pallas ray-marching kernel does not run here "
                  f"({type(e).__name__}: {str(e)[:200]}); rendering with XLA")
    return False


def render(planes, decoder_apply: DecoderApply | MLPDecoder, ray_origins, ray_directions,
           options: RenderOptions, *, key=None, draws=None, ray_chunk: int | str | None = "auto",
           kernel: str = "xla", interpret: bool | None = None, block_rays: int | None = None):
  """Renders rays through tri-planes (the official ``ImportanceRenderer.forward``).

  Args:
    planes: [B, 3, H, W, C] tri-plane features.
    decoder_apply: maps (sampled_features [B, 3, N, C], directions [B, N, 3]) to
      {'rgb': [B, N, F], 'sigma': [B, N, 1]}, e.g. ``partial(OSGDecoder().apply, params)``; or the
      OSG decoder's weights as a ``raymarch.MLPDecoder`` (needed by the Pallas kernel).
    ray_origins, ray_directions: [B, M, 3] (unit directions).
    options: RenderOptions.
    key: optional PRNG key for the jitter and importance draws.
    draws: optional dict(u_stratified [B, M, D], u_importance [B, M, Ni] or [B*M, Ni]) of uniforms in
      [0, 1); takes precedence over ``key``.
    ray_chunk: process this many rays (per batch element) at a time with ``lax.map``; the result is
      the same, the working set is smaller (faster on CPU, less memory everywhere). Must divide M.
      'auto' picks a power-of-two divisor of M from the backend and the samples per ray; None
      renders all rays at once.
    kernel: 'xla' (jnp ops), 'pallas' (the fused tri-plane ray-marching kernel
      ``ops.pallas.raymarch.march`` for the coarse and the final pass; importance sampling stays in
      XLA) or 'auto' (Pallas on GPU, else XLA). Same numbers (float32 rounding) and gradients.
    interpret: run the Pallas kernel in interpret mode; None = when not on a GPU.
    block_rays: rays per Pallas program; None = 64 on GPU, 512 in interpret mode.
  Returns:
    feature_samples: [B, M, F] composited features mapped to [-1, 1].
    depth: [B, M, 1] expected depth, clamped to the global sample-depth range.
    weights_sum: [B, M, 1] total weight (opacity) per ray.
  """
  checks.check_rank(planes, "planes", 5, "[B, 3, H, W, C]")
  checks.check_shape(ray_origins, "ray_origins", (planes.shape[0], None, 3), "[B, M, 3]")
  checks.check_shape(ray_directions, "ray_directions", ray_origins.shape, "[B, M, 3]")
  b, m, _ = ray_origins.shape
  kernel = resolve_kernel(kernel)
  if kernel == "pallas":
    if not isinstance(decoder_apply, MLPDecoder):
      raise TypeError("render(kernel='pallas') needs the decoder's weights as a "
                      "raymarch.MLPDecoder (e.g. nn.decoder.fused_weights(params)), not a callable")
    if interpret is None:
      interpret = jax.default_backend() != "gpu"
    if block_rays is None:
      block_rays = 512 if interpret else 64
    fused = functools.partial(raymarch.march, box_warp=options.box_warp,
                              plane_axes=options.plane_axes, white_back=options.white_back,
                              interpret=interpret, block_rays=block_rays)
  else:
    fused = None
    if isinstance(decoder_apply, MLPDecoder):
      decoder_apply = functools.partial(_apply_mlp_decoder, decoder_apply)
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

  if fused is None:
    # Both XLA passes read the pixel-major layout, converted once here: their gradients add up
    # in that layout, which is the backbone's own (see ``triplane.to_pixel_major``).
    planes_hwpc = to_pixel_major(planes)

  def rays_fn(args):
    o, d, us, ui = args
    if fused is not None:
      return _render_rays_fused(planes, decoder_apply, o, d, options, us, ui, fused)
    return _render_rays(planes_hwpc, decoder_apply, o, d, options, us, ui)

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


def _apply_mlp_decoder(decoder: MLPDecoder, sampled_features, directions=None):
  """``OSGDecoder.apply`` from its ``MLPDecoder`` weights (the same ops, so the same numbers)."""
  del directions
  rgb, sigma = raymarch.decode_reference(decoder, jnp.mean(sampled_features, axis=1))
  return {"rgb": rgb, "sigma": sigma}


def _coarse_depths(ray_origins, ray_directions, options, u_strat):
  b, m, _ = ray_origins.shape
  if options.auto_range:
    ray_start, ray_end = sampling.ray_box_limits(ray_origins, ray_directions, options.box_warp)
  else:
    ray_start, ray_end = float(options.ray_start), float(options.ray_end)
  return sampling.stratified_depths(
      b, m, ray_start, ray_end, options.depth_resolution, u_strat, options.disparity_space_sampling)


def _render_rays_fused(planes, decoder, ray_origins, ray_directions, options, u_strat, u_imp,
                       fused):
  """``_render_rays`` with the fused kernel: coarse weights, then all samples in one walk.

  The coarse pass only feeds importance sampling (no gradient, as in the XLA path), so it runs on
  stopped inputs. The final pass re-decodes the coarse points together with the fine ones in depth
  order instead of reading stored coarse features: the same values, and no per-sample tensor in
  memory.
  """
  depths = _coarse_depths(ray_origins, ray_directions, options, u_strat)
  if options.depth_resolution_importance > 0:
    sg = jax.lax.stop_gradient
    _, _, _, weights = fused(sg(planes), sg(decoder), sg(ray_origins), sg(ray_directions),
                             sg(depths), with_weights=True)
    depths_fine = sampling.sample_importance(depths, weights, options.depth_resolution_importance,
                                             u_imp)
    depths = jnp.concatenate([depths, depths_fine], axis=-2)
    order = jnp.argsort(depths[..., 0], axis=-1, stable=True)[..., None]
    depths = jnp.take_along_axis(depths, order, axis=-2)
  rgb, depth, wsum, _ = fused(planes, decoder, ray_origins, ray_directions, depths)
  return rgb, depth, wsum, jnp.min(depths), jnp.max(depths)


def _render_rays(planes_hwpc, decoder_apply, ray_origins, ray_directions, options, u_strat, u_imp):
  """Per-ray part of ``render`` on ``to_pixel_major(planes)``: (rgb, unclamped depth, weight sum,
  min depth, max depth)."""
  depths_coarse = _coarse_depths(ray_origins, ray_directions, options, u_strat)
  colors_coarse, densities_coarse = _decode(planes_hwpc, decoder_apply, ray_origins,
                                            ray_directions, depths_coarse, options)
  n_importance = options.depth_resolution_importance
  if n_importance > 0:
    _, _, weights = marcher.composite(colors_coarse, densities_coarse, depths_coarse,
                                      white_back=options.white_back, clamp_mode=options.clamp_mode)
    depths_fine = sampling.sample_importance(depths_coarse, weights, n_importance, u_imp)
    colors_fine, densities_fine = _decode(planes_hwpc, decoder_apply, ray_origins,
                                          ray_directions, depths_fine, options)
    depths, colors, densities = unify_samples(depths_coarse, colors_coarse, densities_coarse,
                                              depths_fine, colors_fine, densities_fine)
  else:
    depths, colors, densities = depths_coarse, colors_coarse, densities_coarse
  rgb, depth, weights = marcher.composite(colors, densities, depths, white_back=options.white_back,
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
