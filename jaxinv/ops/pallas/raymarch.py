"""Fused volume compositing (EG3D's MipRayMarcher2 without the global depth clamp) as a Pallas kernel.

``composite`` and ``composite_reference`` share one signature and one meaning:

  colors [B, M, S, C], densities [B, M, S, 1], depths [B, M, S, 1] (sorted)
  -> rgb [B, M, C] (mapped to 2x - 1), depth [B, M, 1] (+inf where no weight), weights [B, M, S-1, 1]

Interval i uses midpoint colour/density/depth, sigma = softplus(density_mid - 1),
alpha = 1 - exp(-sigma * delta), weight = alpha * prod_{j<i}(1 - alpha_j + 1e-10). The caller applies
the official global depth clamp (it needs the range of every ray, so it does not belong in a per-ray
kernel).

The kernel walks the samples of a block of rays front to back, carrying the transmittance, so the
[B, M, S] intermediates of the reference (midpoints, alphas, cumulative product) never reach memory.
Arrays are laid out samples-first inside the kernel so that every step reads one contiguous
[rays, C] tile; sample, channel and ray counts are padded to powers of two (the padded samples sit at
the last depth, so their interval has zero length and zero weight).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def composite_reference(colors, densities, depths, *, white_back: bool = False,
                        interpret: bool = False, block_rays: int = 128):
  """Pure-jnp reference with the same signature as ``composite`` (``interpret``/``block_rays`` unused)."""
  del interpret, block_rays
  deltas = depths[:, :, 1:] - depths[:, :, :-1]
  sigma = jax.nn.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
  alpha = 1 - jnp.exp(-(sigma * deltas))
  shifted = jnp.concatenate([jnp.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], axis=-2)
  weights = alpha * jnp.cumprod(shifted, axis=-2)[:, :, :-1]
  rgb = jnp.sum(weights * (colors[:, :, :-1] + colors[:, :, 1:]) / 2, axis=-2)
  total = jnp.sum(weights, axis=-2)
  depth_sum = jnp.sum(weights * (depths[:, :, :-1] + depths[:, :, 1:]) / 2, axis=-2)
  ok = total > 0
  depth = jnp.where(ok, depth_sum / jnp.where(ok, total, 1.0), jnp.inf)
  if white_back:
    rgb = rgb + 1 - total
  return rgb * 2 - 1, depth, weights


def _next_pow2(n: int) -> int:
  return 1 << max(0, (int(n) - 1).bit_length())


def _kernel(colors_ref, sigma_ref, depth_ref, rgb_ref, depth_out_ref, total_ref, weights_ref, *,
            num_intervals: int, white_back: bool):
  # colors_ref [S, R, C]; sigma_ref, depth_ref [S, R]; outputs rgb [R, C], depth/total [R],
  # weights [S, R] (rows >= num_intervals stay zero).
  r, c = rgb_ref.shape

  def step(i, carry):
    trans, acc_rgb, acc_w, acc_d = carry
    d0, d1 = depth_ref[i], depth_ref[i + 1]
    s_mid = (sigma_ref[i] + sigma_ref[i + 1]) / 2
    sigma = jax.nn.softplus(s_mid - 1)
    alpha = 1 - jnp.exp(-(sigma * (d1 - d0)))
    w = alpha * trans
    weights_ref[i] = w
    c_mid = (colors_ref[i] + colors_ref[i + 1]) / 2
    return (trans * (1 - alpha + 1e-10), acc_rgb + w[:, None] * c_mid, acc_w + w,
            acc_d + w * ((d0 + d1) / 2))

  zeros_r = jnp.zeros((r,), jnp.float32)
  weights_ref[...] = jnp.zeros(weights_ref.shape, jnp.float32)
  _, acc_rgb, acc_w, acc_d = jax.lax.fori_loop(
      0, num_intervals, step,
      (jnp.ones((r,), jnp.float32), jnp.zeros((r, c), jnp.float32), zeros_r, zeros_r))
  ok = acc_w > 0
  depth_out_ref[...] = jnp.where(ok, acc_d / jnp.where(ok, acc_w, 1.0), jnp.inf)
  total_ref[...] = acc_w
  if white_back:
    acc_rgb = acc_rgb + (1 - acc_w)[:, None]
  rgb_ref[...] = acc_rgb * 2 - 1


@functools.partial(jax.jit, static_argnames=("white_back", "interpret", "block_rays"))
def composite(colors, densities, depths, *, white_back: bool = False, interpret: bool = False,
              block_rays: int = 128):
  """Fused compositing; see the module docstring. ``interpret=True`` runs on any backend (tests)."""
  b, m, s, c = colors.shape
  n = b * m
  sp, cp = _next_pow2(s), _next_pow2(c)
  rb = min(_next_pow2(block_rays), _next_pow2(n))
  npad = -(-n // rb) * rb

  def lay(x, ch):  # [B, M, S, ch] -> [Sp, Npad, ch] samples-first, padded
    x = x.reshape(n, s, ch).transpose(1, 0, 2)
    return x

  col = lay(colors.astype(jnp.float32), c)
  sig = lay(densities.astype(jnp.float32), 1)[..., 0]
  dep = lay(depths.astype(jnp.float32), 1)[..., 0]
  # Pad samples at the last depth (zero-length intervals), channels and rays with zeros.
  col = jnp.pad(col, ((0, sp - s), (0, npad - n), (0, cp - c)))
  sig = jnp.pad(sig, ((0, sp - s), (0, npad - n)))
  dep = jnp.pad(dep, ((0, sp - s), (0, npad - n)), mode="edge")

  kernel = functools.partial(_kernel, num_intervals=s - 1, white_back=white_back)
  rgb, depth, _, weights = pl.pallas_call(
      kernel,
      grid=(npad // rb,),
      in_specs=[pl.BlockSpec((sp, rb, cp), lambda j: (0, j, 0)),
                pl.BlockSpec((sp, rb), lambda j: (0, j)),
                pl.BlockSpec((sp, rb), lambda j: (0, j))],
      out_specs=[pl.BlockSpec((rb, cp), lambda j: (j, 0)),
                 pl.BlockSpec((rb,), lambda j: (j,)),
                 pl.BlockSpec((rb,), lambda j: (j,)),
                 pl.BlockSpec((sp, rb), lambda j: (0, j))],
      out_shape=[jax.ShapeDtypeStruct((npad, cp), jnp.float32),
                 jax.ShapeDtypeStruct((npad,), jnp.float32),
                 jax.ShapeDtypeStruct((npad,), jnp.float32),
                 jax.ShapeDtypeStruct((sp, npad), jnp.float32)],
      interpret=interpret,
  )(col, sig, dep)
  rgb = rgb[:n, :c].reshape(b, m, c)
  depth = depth[:n].reshape(b, m, 1)
  weights = weights[: s - 1, :n].T.reshape(b, m, s - 1, 1)
  return rgb, depth, weights
