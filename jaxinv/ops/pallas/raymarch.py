"""Fused tri-plane ray marching (bilinear reads + OSG decoder + compositing) as a Pallas kernel.

``march`` and ``march_reference`` share one signature and one meaning:

  planes [B, 3, H, W, C], decoder (``MLPDecoder``), origins / directions [B, M, 3],
  depths [B, M, S, 1] (sorted along S)
  -> rgb [B, M, F] (mapped to 2x - 1), depth [B, M, 1] (+inf where no weight landed; the caller
     applies EG3D's global depth clamp), weights_sum [B, M, 1], and, with ``with_weights=True``,
     weights [B, M, S-1, 1] (else None).

Per sample point x = o + t d (world units) the plane p is read bilinearly at the world axes
``plane_axes[p]`` scaled by 2 / box_warp (``grid_sample``, align_corners=False, zero outside; the
official EG3D frames are XY, XZ, ZX), the three reads are averaged and decoded by the OSG MLP:
h = softplus(f W0 + b0), [sigma, y] = h W1 + b1, colour = sigmoid(y) (1 + 2e-3) - 1e-3. Interval i
(between samples i and i+1) then composites like EG3D's ``MipRayMarcher2``: midpoint colour /
density / depth, sigma = softplus(sigma_mid - 1), alpha_i = 1 - exp(-sigma delta_i),
w_i = alpha_i prod_{j<i}(1 - alpha_j + 1e-10); rgb = sum w_i c_i (+ 1 - sum w_i on a white
background), depth = sum w_i t_i / sum w_i.

The kernel owns a block of rays and walks their samples front to back, carrying the running
transmittance and the previous sample's colour/density, so the per-sample features, decoder
activations, densities and weights of the reference ([B, M, S, C]-sized tensors) never reach memory:
it reads the planes (gathers), the rays and the depths, and writes [rays, F] + 2 [rays] (+ the
coarse weights when the caller needs them for importance sampling).

Backend: the Triton backend of Pallas (``pallas_call`` with ``plgpu_triton.CompilerParams``). Why not
Mosaic GPU: Mosaic GPU targets Hopper through warpgroup-level programming (WGMMA layouts, TMA
copies of rectangular tiles), and the hot loop here is four data-dependent *gathers* per plane and
sample, which TMA cannot express; Triton lowers pointer-arithmetic gather loads directly and runs
on H100/H200 (and A100). Every array value in the kernel has power-of-two dimensions (Triton's rule)
and the two small matmuls have every dimension >= 16 (``tl.dot``'s rule); channel, feature and
sample counts are zero-padded accordingly, which changes no sum. ``interpret=True`` runs the same
kernel anywhere (CPU tests).

Sharding: the call is wrapped in ``custom_partitioning`` over the batch, so under a sharded ``jit``
every device marches its own images (XLA would otherwise gather a ``pallas_call``'s inputs and run
the whole batch on each device); under ``shard_map`` it runs per shard as it is.

Backward (``jax.custom_vjp``): recomputation through ``march_reference`` (``jax.vjp`` of the pure
function), so the gradients to the planes (the scatter-add of the bilinear weights), the decoder
weights, the ray origins/directions and the depths are *by construction* those of autodiff through
the reference. The backward therefore costs what the XLA path's backward costs (plus its forward);
a backward kernel (reverse sample walk + atomic scatter-add into the planes) is future work.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

_HIGHEST = jax.lax.Precision.HIGHEST
_EPS_TRANSMITTANCE = 1e-10


class MLPDecoder(NamedTuple):
  """The OSG decoder's weights with the equalized-lr gains already applied (a pytree).

  ``w_hidden [C, Hd]``, ``b_hidden [Hd]``, ``w_out [Hd, 1 + F]`` (column 0 = density),
  ``b_out [1 + F]``: h = softplus(f @ w_hidden + b_hidden); out = h @ w_out + b_out.
  """
  w_hidden: jax.Array
  b_hidden: jax.Array
  w_out: jax.Array
  b_out: jax.Array


# ------------------------------------------------------------------ the pure-jnp reference

def _bilinear(maps, gx, gy):
  """``grid_sample`` (bilinear, zeros, align_corners=False) of ``maps [B, H, W, C]`` at [B, N]."""
  b, h, w, c = maps.shape
  ix = ((gx + 1) * w - 1) / 2
  iy = ((gy + 1) * h - 1) / 2
  ix0, iy0 = jnp.floor(ix), jnp.floor(iy)
  fx, fy = ix - ix0, iy - iy0
  # A zero border: out-of-range corners (clipped into [-1, W]) read zeros.
  table = jnp.pad(maps, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b, (h + 2) * (w + 2), c)

  def corner(yy, xx):
    idx = (jnp.clip(yy, -1, h).astype(jnp.int32) + 1) * (w + 2) + jnp.clip(xx, -1, w).astype(
        jnp.int32) + 1
    return jnp.take_along_axis(table, idx[..., None], axis=1, mode="clip")

  out = corner(iy0, ix0) * ((1 - fx) * (1 - fy))[..., None]
  out = out + corner(iy0, ix0 + 1) * (fx * (1 - fy))[..., None]
  out = out + corner(iy0 + 1, ix0) * ((1 - fx) * fy)[..., None]
  return out + corner(iy0 + 1, ix0 + 1) * (fx * fy)[..., None]


def decode_reference(decoder: MLPDecoder, features):
  """OSG decoder on plane-averaged ``features [..., C]`` -> (colour [..., F], raw density [..., 1])."""
  h = jax.nn.softplus(jnp.matmul(features, decoder.w_hidden, precision=_HIGHEST) + decoder.b_hidden)
  out = jnp.matmul(h, decoder.w_out, precision=_HIGHEST) + decoder.b_out
  return jax.nn.sigmoid(out[..., 1:]) * (1 + 2 * 0.001) - 0.001, out[..., 0:1]


def composite_reference(colors, densities, depths, white_back: bool):
  """``MipRayMarcher2`` without the global clamp: (rgb 2x-1, depth or +inf, weight sum, weights)."""
  deltas = depths[:, :, 1:] - depths[:, :, :-1]
  sigma = jax.nn.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
  alpha = 1 - jnp.exp(-(sigma * deltas))
  shifted = jnp.concatenate([jnp.ones_like(alpha[:, :, :1]), 1 - alpha + _EPS_TRANSMITTANCE],
                            axis=-2)
  weights = alpha * jnp.cumprod(shifted, axis=-2)[:, :, :-1]
  rgb = jnp.sum(weights * (colors[:, :, :-1] + colors[:, :, 1:]) / 2, axis=-2)
  total = jnp.sum(weights, axis=-2)
  depth_sum = jnp.sum(weights * (depths[:, :, :-1] + depths[:, :, 1:]) / 2, axis=-2)
  ok = total > 0
  # The inner where keeps the unused branch's gradient finite on empty rays.
  depth = jnp.where(ok, depth_sum / jnp.where(ok, total, 1.0), jnp.inf)
  if white_back:
    rgb = rgb + 1 - total
  return rgb * 2 - 1, depth, total, weights


def march_reference(planes, decoder: MLPDecoder, origins, directions, depths, *, box_warp: float,
                    plane_axes, white_back: bool = False, with_weights: bool = False,
                    interpret: bool = False, block_rays: int = 64):
  """Pure-jnp reference with ``march``'s signature (``interpret`` / ``block_rays`` unused)."""
  del interpret, block_rays
  b, m, s, _ = depths.shape
  points = origins[:, :, None, :] + depths * directions[:, :, None, :]  # [B, M, S, 3]
  scaled = (2.0 / box_warp) * points.reshape(b, m * s, 3)
  reads = [_bilinear(planes[:, p], scaled[..., ax], scaled[..., ay])
           for p, (ax, ay) in enumerate(plane_axes)]
  features = (reads[0] + reads[1] + reads[2]) / 3
  colors, densities = decode_reference(decoder, features)
  rgb, depth, total, weights = composite_reference(
      colors.reshape(b, m, s, -1), densities.reshape(b, m, s, 1), depths, white_back)
  return rgb, depth, total, (weights if with_weights else None)


# ------------------------------------------------------------------ the kernel

def _pow2(n: int, at_least: int = 1) -> int:
  return max(at_least, 1 << max(0, (int(n) - 1).bit_length()))


@dataclasses.dataclass(frozen=True)
class _Static:
  batch: int
  rays: int
  samples: int
  height: int
  width: int
  channels: int
  features: int
  box_warp: float
  plane_axes: tuple
  white_back: bool
  with_weights: bool
  interpret: bool
  block_rays: int


def _softplus(x):
  # log1p(exp(-|x|)) + max(x, 0): jax.nn.softplus's value without logaddexp's extra primitives.
  return jnp.log1p(jnp.exp(-jnp.abs(x))) + jnp.maximum(x, 0.0)


def _kernel(rays_ref, base_ref, depth_ref, table_ref, w0_ref, b0_ref, wc_ref, bc_ref, ws_ref,
            bs_ref, rgb_ref, depth_out_ref, total_ref, *weights_ref, st: _Static):
  # rays_ref [8, R] (ox, oy, oz, dx, dy, dz, 0, 0); base_ref [R] int32 row of (image, plane 0, 0, 0)
  # in the table; depth_ref [Sp, R]; table_ref [B*3*(H+2)*(W+2), Cp] zero-bordered planes;
  # w0 [Cp, Hd], b0 [Hd], wc [Hd, Fp], bc [Fp], ws [Hd], bs [16] (density bias in slot 0).
  # Outputs: rgb [R, Fp], depth / total [R], weights [Sp, R] (rows >= S-1 stay zero).
  h, w = st.height, st.width
  plane_rows = (h + 2) * (w + 2)
  ox, oy, oz = rays_ref[0], rays_ref[1], rays_ref[2]
  dx, dy, dz = rays_ref[3], rays_ref[4], rays_ref[5]
  base = base_ref[...]
  w0, b0 = w0_ref[...], b0_ref[...]
  wc, bc = wc_ref[...], bc_ref[...]
  ws, bs = ws_ref[...], jnp.sum(bs_ref[...])
  scale = 2.0 / st.box_warp

  def decode(t):
    coords = (ox + t * dx, oy + t * dy, oz + t * dz)
    feats = None
    for p, (ax, ay) in enumerate(st.plane_axes):
      ix = ((scale * coords[ax] + 1) * w - 1) / 2
      iy = ((scale * coords[ay] + 1) * h - 1) / 2
      ix0, iy0 = jnp.floor(ix), jnp.floor(iy)
      fx, fy = ix - ix0, iy - iy0
      row0 = base + p * plane_rows

      def corner(yy, xx):
        idx = (row0 + (jnp.clip(yy, -1, h).astype(jnp.int32) + 1) * (w + 2)
               + jnp.clip(xx, -1, w).astype(jnp.int32) + 1)
        return table_ref[idx, :]  # gather [R, Cp]

      read = corner(iy0, ix0) * ((1 - fx) * (1 - fy))[:, None]
      read = read + corner(iy0, ix0 + 1) * (fx * (1 - fy))[:, None]
      read = read + corner(iy0 + 1, ix0) * ((1 - fx) * fy)[:, None]
      read = read + corner(iy0 + 1, ix0 + 1) * (fx * fy)[:, None]
      feats = read if feats is None else feats + read
    feats = feats / 3
    hid = _softplus(jnp.dot(feats, w0, precision=_HIGHEST,
                            preferred_element_type=jnp.float32) + b0[None, :])
    col = jnp.dot(hid, wc, precision=_HIGHEST, preferred_element_type=jnp.float32) + bc[None, :]
    col = jax.nn.sigmoid(col) * (1 + 2 * 0.001) - 0.001
    sig = jnp.sum(hid * ws[None, :], axis=1) + bs
    return col, sig

  r, fp = rgb_ref.shape
  if st.with_weights:
    weights_ref[0][...] = jnp.zeros(weights_ref[0].shape, jnp.float32)

  def step(i, carry):
    trans, acc_rgb, acc_w, acc_d, t0, s0, c0 = carry
    t1 = depth_ref[i]
    c1, s1 = decode(t1)
    sigma = _softplus((s0 + s1) / 2 - 1)
    alpha = 1 - jnp.exp(-(sigma * (t1 - t0)))
    wgt = alpha * trans
    if st.with_weights:
      weights_ref[0][i - 1] = wgt
    return (trans * (1 - alpha + _EPS_TRANSMITTANCE), acc_rgb + wgt[:, None] * ((c0 + c1) / 2),
            acc_w + wgt, acc_d + wgt * ((t0 + t1) / 2), t1, s1, c1)

  t_first = depth_ref[0]
  c_first, s_first = decode(t_first)
  zeros = jnp.zeros((r,), jnp.float32)
  _, acc_rgb, acc_w, acc_d, _, _, _ = jax.lax.fori_loop(
      1, st.samples, step,
      (jnp.ones((r,), jnp.float32), jnp.zeros((r, fp), jnp.float32), zeros, zeros, t_first,
       s_first, c_first))
  ok = acc_w > 0
  depth_out_ref[...] = jnp.where(ok, acc_d / jnp.where(ok, acc_w, 1.0), jnp.inf)
  total_ref[...] = acc_w
  if st.white_back:
    acc_rgb = acc_rgb + (1 - acc_w)[:, None]
  rgb_ref[...] = acc_rgb * 2 - 1


def _kernel_call(planes, decoder, origins, directions, depths, st: _Static):
  b, m, s = st.batch, st.rays, st.samples
  h, w, c, f = st.height, st.width, st.channels, st.features
  n = b * m
  rb = st.block_rays
  npad = -(-n // rb) * rb
  sp, cp, fp = _pow2(s), _pow2(c, 16), _pow2(f, 16)
  hd = decoder.w_hidden.shape[1]
  f32 = jnp.float32

  rays = jnp.concatenate([origins.reshape(n, 3), directions.reshape(n, 3)], axis=1).astype(f32)
  rays = jnp.pad(rays.T, ((0, 2), (0, npad - n)))  # [8, Npad]
  image = jnp.minimum(jnp.arange(npad, dtype=jnp.int32) // m, b - 1)
  base = image * (3 * (h + 2) * (w + 2))
  # Samples-first so each step reads one contiguous [R] row; padded samples are never visited.
  dep = jnp.pad(depths.reshape(n, s).T.astype(f32), ((0, sp - s), (0, npad - n)), mode="edge")
  table = jnp.pad(planes.astype(f32), ((0, 0), (0, 0), (1, 1), (1, 1), (0, cp - c)))
  table = table.reshape(b * 3 * (h + 2) * (w + 2), cp)
  w0 = jnp.pad(decoder.w_hidden.astype(f32), ((0, cp - c), (0, 0)))
  b0 = decoder.b_hidden.astype(f32)
  wc = jnp.pad(decoder.w_out[:, 1:].astype(f32), ((0, 0), (0, fp - f)))
  bc = jnp.pad(decoder.b_out[1:].astype(f32), (0, fp - f))
  ws = decoder.w_out[:, 0].astype(f32)
  bs = jnp.pad(decoder.b_out[:1].astype(f32), (0, 15))

  # Under shard_map(check_vma=True) the outputs must say over which mesh axes they vary: as the
  # inputs jointly do (a dead scalar mixing one entry of each; XLA drops it).
  mixed = sum(x.reshape(-1)[0] * 0 for x in (rays, dep, table, w0, b0, wc, bc, ws))
  mat = getattr(jax.typeof(mixed), "mat", None)  # (older JAX: no such attribute, no check)
  sds = (jax.ShapeDtypeStruct if mat is None else
         functools.partial(jax.ShapeDtypeStruct, manual_axis_type=mat))
  full = lambda shape: pl.BlockSpec(shape, lambda j: (0,) * len(shape))  # noqa: E731
  in_specs = [pl.BlockSpec((8, rb), lambda j: (0, j)), pl.BlockSpec((rb,), lambda j: (j,)),
              pl.BlockSpec((sp, rb), lambda j: (0, j)), full(table.shape), full((cp, hd)),
              full((hd,)), full((hd, fp)), full((fp,)), full((hd,)), full((16,))]
  out_specs = [pl.BlockSpec((rb, fp), lambda j: (j, 0)), pl.BlockSpec((rb,), lambda j: (j,)),
               pl.BlockSpec((rb,), lambda j: (j,))]
  out_shape = [sds((npad, fp), f32), sds((npad,), f32), sds((npad,), f32)]
  if st.with_weights:
    out_specs.append(pl.BlockSpec((sp, rb), lambda j: (0, j)))
    out_shape.append(sds((sp, npad), f32))
  outs = pl.pallas_call(
      functools.partial(_kernel, st=st),
      grid=(npad // rb,),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      interpret=st.interpret,
      compiler_params=pl_triton.CompilerParams(num_warps=4, num_stages=1),
      name="eg3d_triplane_raymarch",
  )(rays, base, dep, table, w0, b0, wc, bc, ws, bs)
  rgb = outs[0][:n, :f].reshape(b, m, f)
  depth = outs[1][:n].reshape(b, m, 1)
  total = outs[2][:n].reshape(b, m, 1)
  weights = outs[3][: s - 1, :n].T.reshape(b, m, s - 1, 1) if st.with_weights else None
  return rgb, depth, total, weights


def _batch_partitioned(st: _Static):
  """The kernel call, partitioned over the batch for sharded ``jit`` (``custom_partitioning``).

  A ``pallas_call`` is opaque to XLA's partitioner, which would otherwise gather every input and
  run the whole batch on every device. Here each device runs the kernel on its own images (planes,
  rays, depths sharded along B like the first argument; decoder weights replicated); rays are
  independent, so this is exact.
  """
  from jax.experimental.custom_partitioning import custom_partitioning
  from jax.sharding import NamedSharding, PartitionSpec

  def local(planes, w_hidden, b_hidden, w_out, b_out, origins, directions, depths):
    lst = dataclasses.replace(st, batch=depths.shape[0], rays=depths.shape[1])
    out = _kernel_call(planes, MLPDecoder(w_hidden, b_hidden, w_out, b_out), origins, directions,
                       depths, lst)
    return out if st.with_weights else out[:3]

  call = custom_partitioning(local)

  def shardings(mesh, spec0, ndims):
    return tuple(NamedSharding(mesh, PartitionSpec(spec0, *([None] * (n - 1))) if batched else
                               PartitionSpec()) for n, batched in ndims)

  args_nd = ((5, True), (2, False), (1, False), (2, False), (1, False), (3, True), (3, True),
             (4, True))
  outs_nd = ((3, True), (3, True), (3, True), (4, True))[: 4 if st.with_weights else 3]

  def batch_axes(sharding):
    spec = getattr(sharding, "spec", None)
    return spec[0] if spec else None

  def infer(mesh, arg_shapes, result_shape):
    return shardings(mesh, batch_axes(arg_shapes[0].sharding), outs_nd)

  def partition(mesh, arg_shapes, result_shape):
    spec0 = batch_axes(arg_shapes[0].sharding)
    return mesh, local, shardings(mesh, spec0, outs_nd), shardings(mesh, spec0, args_nd)

  outs = "b m f, b m u, b m u" + (", b m t u" if st.with_weights else "")
  call.def_partition(
      infer_sharding_from_operands=infer, partition=partition,
      sharding_rule=f"b p h w c, c k, k, k o, o, b m x, b m x, b m s u -> {outs}",
      need_replication_factors=("p", "h", "w", "c", "k", "o", "m", "x", "s", "u", "f")
      + (("t",) if st.with_weights else ()))
  return call


@functools.lru_cache(maxsize=None)
def _march_fn(st: _Static):
  reference = functools.partial(
      march_reference, box_warp=st.box_warp, plane_axes=st.plane_axes, white_back=st.white_back,
      with_weights=st.with_weights)
  call = _batch_partitioned(st)

  @jax.custom_vjp
  def fused(planes, decoder, origins, directions, depths):
    out = call(planes, *decoder, origins, directions, depths)
    return tuple(out) if st.with_weights else (*out, None)

  def fwd(planes, decoder, origins, directions, depths):
    return fused(planes, decoder, origins, directions, depths), (
        planes, decoder, origins, directions, depths)

  def bwd(residuals, cotangents):
    _, vjp = jax.vjp(reference, *residuals)
    return vjp(cotangents)

  fused.defvjp(fwd, bwd)
  return fused


def march(planes, decoder: MLPDecoder, origins, directions, depths, *, box_warp: float,
          plane_axes, white_back: bool = False, with_weights: bool = False,
          interpret: bool = False, block_rays: int = 64):
  """Fused ray marching through tri-planes; see the module docstring.

  Args:
    planes: [B, 3, H, W, C] tri-plane features (float32).
    decoder: ``MLPDecoder`` (gains applied).
    origins, directions: [B, M, 3] ray origins and (unit) directions.
    depths: [B, M, S, 1] sorted sample depths along each ray, S >= 2.
    box_warp: side of the cube the planes span; plane_axes: the 3 (grid-x, grid-y) world-axis
      pairs (``render.options.PLANE_AXES_EG3D`` for official weights).
    white_back: composite onto white; with_weights: also return the per-interval weights.
    interpret: run the kernel in Pallas interpret mode (any backend; tests on CPU).
    block_rays: rays per program (a power of two >= 16, Triton's ``tl.dot`` minimum).
  Returns:
    (rgb [B, M, F], depth [B, M, 1] unclamped, weights_sum [B, M, 1], weights [B, M, S-1, 1] | None).
  """
  b, m, s, _ = depths.shape
  _, n_planes, h, w, c = planes.shape
  if n_planes != 3 or len(plane_axes) != 3:
    raise ValueError(f"march: expected 3 planes and 3 plane_axes, got {planes.shape}, {plane_axes}")
  if s < 2:
    raise ValueError(f"march: need at least 2 samples per ray, got depths {depths.shape}")
  if block_rays < 16 or block_rays & (block_rays - 1):
    raise ValueError(f"march: block_rays must be a power of two >= 16, got {block_rays}")
  st = _Static(batch=b, rays=m, samples=s, height=h, width=w, channels=c,
               features=decoder.w_out.shape[1] - 1, box_warp=float(box_warp),
               plane_axes=tuple(tuple(int(i) for i in a) for a in plane_axes),
               white_back=bool(white_back), with_weights=bool(with_weights),
               interpret=bool(interpret), block_rays=int(block_rays))
  return _march_fn(st)(planes, decoder, origins, directions, depths)
