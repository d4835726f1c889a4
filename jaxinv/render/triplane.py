"""Bilinear reads of tri-plane features at 3-D points."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.render.options import PLANE_AXES_EG3D


def project_to_planes(coordinates, box_warp: float, plane_axes=PLANE_AXES_EG3D):
  """Grid positions ``[B, 3, N, 2]`` (grid-x, grid-y) in [-1, 1] of world points ``[B, N, 3]``.

  Points are scaled by 2/box_warp so the cube of side ``box_warp`` maps onto the planes; plane p reads
  the world axes ``plane_axes[p]`` (``PLANE_AXES_EG3D``: XY, XZ, ZX).
  """
  scaled = (2.0 / box_warp) * coordinates
  return jnp.stack([scaled[..., list(axes)] for axes in plane_axes], axis=1)


def _pixel_coords(grid, h: int, w: int):
  """Top-left corner ``(ix0, iy0)`` and fractions ``(fx, fy)`` of ``grid [..., 2]`` on an
  ``h x w`` map, as PyTorch computes them for align_corners=False."""
  ix = ((grid[..., 0] + 1) * w - 1) / 2
  iy = ((grid[..., 1] + 1) * h - 1) / 2
  ix0 = jnp.floor(ix)
  iy0 = jnp.floor(iy)
  return ix0, iy0, ix - ix0, iy - iy0


def grid_sample_bilinear(features, grid):
  """``grid_sample`` (bilinear, zero padding, align_corners=False) of channels-last maps.

  The plain read (a zero border, autodiff's gradients); ``sample_from_planes`` computes the same
  numbers with a faster backward pass, and its tests compare against this.

  Args:
    features: [P, H, W, C] maps.
    grid: [P, N, 2] positions (x indexes W, y indexes H), -1/+1 are the outer pixel edges.
  Returns:
    [P, N, C] samples; corners outside the map contribute zero.
  """
  p, h, w, c = features.shape
  ix0, iy0, fx, fy = _pixel_coords(grid, h, w)
  # A one-pixel zero border lets every out-of-range corner read a zero instead of being masked:
  # corner indices are clipped into [-1, W] (resp. [-1, H]), which is the border after the shift.
  padded = jnp.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
  table = padded.reshape(p, (h + 2) * (w + 2), c)

  def corner(yy, xx):
    xi = jnp.clip(xx, -1, w).astype(jnp.int32) + 1
    yi = jnp.clip(yy, -1, h).astype(jnp.int32) + 1
    idx = yi * (w + 2) + xi
    return jnp.take_along_axis(table, idx[..., None], axis=1, mode="clip")

  # Weight order and products as in PyTorch's kernel: nw, ne, sw, se.
  out = corner(iy0, ix0) * ((1 - fx) * (1 - fy))[..., None]
  out = out + corner(iy0, ix0 + 1) * (fx * (1 - fy))[..., None]
  out = out + corner(iy0 + 1, ix0) * ((1 - fx) * fy)[..., None]
  out = out + corner(iy0 + 1, ix0 + 1) * (fx * fy)[..., None]
  return out


def _corners(grid, h: int, w: int):
  """The four bilinear corners of ``grid [B, N, 2]`` on an ``h x w`` map, in PyTorch's order
  (nw, ne, sw, se): ``[(pixel index [B, N] int32, weight [B, N])]``, zero weight off the map."""
  ix0, iy0, fx, fy = _pixel_coords(grid, h, w)
  out = []
  for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                         (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
    yy, xx = iy0 + dy, ix0 + dx
    inside = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
    pix = (jnp.clip(yy, 0, h - 1).astype(jnp.int32) * w + jnp.clip(xx, 0, w - 1).astype(jnp.int32))
    out.append((pix, weight * inside.astype(weight.dtype)))
  return out


def _gather_rows(table, rows):
  return jnp.take_along_axis(table, rows[..., None], axis=1, mode="clip")


@functools.lru_cache(maxsize=None)
def _packed_reader(shape, dtype):
  """``read(packed, rows)``: ``packed [B, K, C]`` (of ``shape``) at every ``rows[p][k] [B, N]``
  (int32, in range), as the same nesting of ``[B, N, C]`` reads. The backward pass scatter-adds
  every read into ONE zero table, in place, where autodiff gives each read its own zero-filled
  table and adds them up."""

  @jax.custom_vjp
  def read(packed, rows):
    return tuple(tuple(_gather_rows(packed, r) for r in per) for per in rows)

  def fwd(packed, rows):
    return read(packed, rows), rows

  def bwd(rows, cotangents):
    add = jax.vmap(lambda t, r, v: t.at[r].add(v, mode="promise_in_bounds"))
    table = jnp.zeros(shape, dtype)
    for per, cts in zip(rows, cotangents):
      for r, ct in zip(per, cts):
        table = add(table, r, ct)
    return table, None

  read.defvjp(fwd, bwd)
  return read


def to_pixel_major(planes):
  """``[B, 3, H, W, C]`` -> ``[B, H, W, 3, C]``, the layout the renderer reads.

  The generator's backbone emits ``[B, H, W, 3 * C]``, of which this is a reshape: XLA folds the
  two transposes away, so neither pass copies the tri-plane.
  """
  return jnp.transpose(planes, (0, 2, 3, 1, 4))


def sample_pixel_major(planes_hwpc, coordinates, box_warp: float, plane_axes=PLANE_AXES_EG3D):
  """``sample_from_planes`` of ``to_pixel_major(planes)``: ``[B, H, W, 3, C]`` -> ``[B, 3, N, C]``."""
  b, h, w, n_planes, c = planes_hwpc.shape
  if n_planes != len(plane_axes):
    raise ValueError(f"planes: expected {len(plane_axes)} planes, got {n_planes} "
                     f"(pixel-major [B, H, W, 3, C]: {planes_hwpc.shape})")
  grid = project_to_planes(coordinates, box_warp, plane_axes)  # [B, 3, N, 2]
  # One table of rows (pixel, plane). Corners off the map get zero weight instead of reading a
  # zero border (no padded copy).
  packed = planes_hwpc.reshape(b, h * w * n_planes, c)
  corners = [_corners(grid[:, i], h, w) for i in range(n_planes)]
  rows = tuple(tuple(pix * n_planes + i for pix, _ in corners[i]) for i in range(n_planes))
  reads = _packed_reader(packed.shape, jnp.dtype(packed.dtype))(packed, rows)
  # One read per plane, stacked afterwards. Same numbers as one batched read of all B*3 maps, but
  # XLA:CPU turns the decoder's mean over the stacked axis into plain adds of the three reads; over
  # a single batched read it emits a reduction that re-derives every bilinear read inside it (about
  # 3x slower for the whole renderer).
  out = []
  for vals, cs in zip(reads, corners):
    acc = vals[0] * cs[0][1][..., None]
    for v, (_, wt) in zip(vals[1:], cs[1:]):
      acc = acc + v * wt[..., None]
    out.append(acc)
  return jnp.stack(out, axis=1)


def sample_from_planes(planes, coordinates, box_warp: float, plane_axes=PLANE_AXES_EG3D):
  """Tri-plane features at world points (the official ``sample_from_planes``).

  Args:
    planes: [B, 3, H, W, C] tri-plane features.
    coordinates: [B, N, 3] world points.
    box_warp: side length of the cube spanned by the planes.
    plane_axes: world axes read by each plane (default: the official XY, XZ, ZX quirk).
  Returns:
    [B, 3, N, C] bilinear samples per plane (zero outside the cube); the same numbers as
    ``grid_sample_bilinear`` on each plane.
  """
  check_planes(planes, coordinates, plane_axes)
  return sample_pixel_major(to_pixel_major(planes), coordinates, box_warp, plane_axes)


def check_planes(planes, coordinates, plane_axes=PLANE_AXES_EG3D) -> None:
  checks.check_rank(planes, "planes", 5, "[B, 3, H, W, C]")
  checks.check_shape(coordinates, "coordinates", (planes.shape[0], None, 3), "[B, N, 3]")
  if planes.shape[1] != len(plane_axes):
    raise ValueError(f"planes: expected {len(plane_axes)} planes [B, 3, H, W, C], got {planes.shape}")
