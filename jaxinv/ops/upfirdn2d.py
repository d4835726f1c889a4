"""FIR up/down-sampling of NHWC images with StyleGAN2's ``upfirdn2d`` semantics.

``upfirdn2d`` = zero-insertion upsampling by ``up``, padding (negative values crop), a true
convolution with the FIR filter ``f`` (correlation with ``f`` when ``flip_filter``), then keeping
every ``down``-th sample. The filter is a numpy constant (a trace-time value), which lets the
filtering be written as a short sum of shifted slices instead of a depthwise convolution: XLA fuses
those into one loop, which on CPU is several times faster than a grouped convolution.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def setup_filter(f: Sequence[float] | np.ndarray = (1, 3, 3, 1), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1.0,
                 separable: bool | None = None) -> np.ndarray:
  """Builds a float32 FIR filter the way StyleGAN2 does.

  A 1-D tap list becomes the 2-D outer product unless ``separable`` (default: only for 8+ taps).

  Returns:
    [fh, fw] (2-D) or [fw] (separable) float32 filter, normalised to sum 1 when ``normalize``.
  """
  f = np.asarray(1.0 if f is None else f, np.float32)
  if f.ndim == 0:
    f = f[None]
  if separable is None:
    separable = f.ndim == 1 and f.size >= 8
  if f.ndim == 1 and not separable:
    f = np.outer(f, f)
  if normalize:
    f = f / f.sum()
  if flip_filter:
    f = f[::-1, ::-1] if f.ndim == 2 else f[::-1]
  f = f * (gain ** (f.ndim / 2))
  return np.ascontiguousarray(f, np.float32)


STANDARD_FILTER = setup_filter([1, 3, 3, 1])  # the [4, 4] resample_filter of every EG3D checkpoint


def parse_padding(padding) -> tuple[int, int, int, int]:
  """int | (x, y) | (x0, x1, y0, y1) -> (px0, px1, py0, py1), as StyleGAN2 orders them."""
  if isinstance(padding, (int, np.integer)):
    return (int(padding),) * 4
  padding = tuple(int(p) for p in padding)
  if len(padding) == 2:
    return padding[0], padding[0], padding[1], padding[1]
  if len(padding) == 4:
    return padding
  raise ValueError(f"padding: expected an int, (x, y) or (x0, x1, y0, y1), got {padding}")


def _separate(f: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
  """(fy, fx) with ``outer(fy, fx) == f`` up to float32 rounding, or None if ``f`` is not rank 1."""
  i, j = np.unravel_index(np.argmax(np.abs(f)), f.shape)
  piv = np.float64(f[i, j])
  if piv == 0:
    return None
  fy = f[:, j].astype(np.float64) / piv
  fx = f[i, :].astype(np.float64)
  if np.allclose(np.outer(fy, fx), f, rtol=1e-6, atol=1e-12):
    return fy.astype(np.float32), fx.astype(np.float32)
  return None


def _fir_axis(x: jax.Array, taps, axis: int) -> jax.Array:
  """Valid correlation of ``x`` with ``taps`` along ``axis``."""
  n = x.shape[axis] - len(taps) + 1
  out = None
  for i, t in enumerate(taps):
    if t == 0:
      continue
    term = jax.lax.slice_in_dim(x, i, i + n, axis=axis) * jnp.asarray(np.float32(t), x.dtype)
    out = term if out is None else out + term
  if out is None:
    shape = list(x.shape)
    shape[axis] = n
    out = jnp.zeros(shape, x.dtype)
  return out


def _fir_axis_padded(x: jax.Array, taps, axis: int, p0: int, p1: int, down: int):
  """``_fir_axis(pad(x, p0, p1))[::down]`` along ``axis`` without the padded copy, or None.

  Output ``o`` sums ``taps[a] * x[down * o + a - p0]`` over the taps that land inside ``x``. The
  outputs all of whose taps land inside are strided slices of ``x`` itself; the few at each edge
  are summed from single rows, and the three parts are concatenated. Same numbers as padding
  (a zero tap term adds exactly nothing), but nothing here is a slice of a pad: XLA:CPU rewrites
  those into one padded copy of the input per tap and materialises each (in the backward pass
  of the EG3D backbone's skip upsampling, a 256^2 x 96 gradient copied four times per pass).
  None when there is no such interior (tiny inputs) or a pad is negative (a crop).
  """
  n = x.shape[axis]
  k = len(taps)
  n_out = (n + p0 + p1 - k) // down + 1
  lo = -(-p0 // down)
  hi = (n - k + p0) // down + 1
  if p0 < 0 or p1 < 0 or n_out <= 0 or hi <= lo:
    return None

  def rows(o0: int, o1: int):
    """Outputs [o0, o1) from the taps that land inside x (all of them in the interior)."""
    out = None
    for a, t in enumerate(taps):
      if t == 0:
        continue
      first = max(o0, -(-(p0 - a) // down))            # down * o + a - p0 >= 0
      last = min(o1, (n - 1 - a + p0) // down + 1)     # down * o + a - p0 <= n - 1
      if last <= first:
        continue
      start = down * first + a - p0
      term = jax.lax.slice_in_dim(x, start, start + down * (last - first - 1) + 1, down, axis)
      term = term * jnp.asarray(np.float32(t), x.dtype)
      if (first, last) != (o0, o1):  # an edge output some taps miss: only single rows here
        pad = [(0, 0)] * x.ndim
        pad[axis] = (first - o0, o1 - last)
        term = jnp.pad(term, pad)
      out = term if out is None else out + term
    if out is None:
      shape = list(x.shape)
      shape[axis] = o1 - o0
      out = jnp.zeros(shape, x.dtype)
    return out

  parts = [rows(0, lo)] if lo > 0 else []
  parts.append(rows(lo, hi))
  if hi < n_out:
    parts.append(rows(hi, n_out))
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)


def _fir_2d(x: jax.Array, f) -> jax.Array:
  """Valid 2-D correlation of ``x [B,H,W,C]`` with the 2-D filter ``f [fh][fw]``."""
  fh, fw = len(f), len(f[0])
  ho, wo = x.shape[1] - fh + 1, x.shape[2] - fw + 1
  out = None
  for i in range(fh):
    for j in range(fw):
      if f[i][j] == 0:
        continue
      term = x[:, i:i + ho, j:j + wo, :] * jnp.asarray(np.float32(f[i][j]), x.dtype)
      out = term if out is None else out + term
  return out if out is not None else jnp.zeros((x.shape[0], ho, wo, x.shape[3]), x.dtype)


def _taps(a: np.ndarray) -> tuple:
  """A float32 filter as nested tuples of its exact values (hashable: a static argument)."""
  return tuple(_taps(r) for r in a) if a.ndim > 1 else tuple(float(v) for v in a)


def _reverse(taps: tuple) -> tuple:
  return tuple(_reverse(r) if isinstance(r, tuple) else r for r in taps[::-1])


def _sizes(taps) -> tuple[int, int]:
  """(fh, fw) of the correlation taps ``('sep', ty, tx)`` or ``('2d', rows)``."""
  return (len(taps[1]), len(taps[2])) if taps[0] == "sep" else (len(taps[1]), len(taps[1][0]))


def _apply(x, taps, up, down, pads):
  """Zero insertion by ``up`` (up-1 zeros after every sample), padding ``pads`` (negative crops),
  valid correlation with ``taps``, then every ``down``-th sample. ``up``/``down``: (y, x);
  ``pads``: (py0, py1, px0, px1)."""
  (upy, upx), (downy, downx), (py0, py1, px0, px1) = up, down, pads
  if taps[0] == "sep" and upy == upx == 1:
    y = _fir_axis_padded(x, taps[2], 2, px0, px1, downx)
    y = None if y is None else _fir_axis_padded(y, taps[1], 1, py0, py1, downy)
    if y is not None:
      return y
  pad_cfg = [(0, 0, 0), (py0, py1 + upy - 1, upy - 1), (px0, px1 + upx - 1, upx - 1), (0, 0, 0)]
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), pad_cfg)
  if taps[0] == "sep":
    # Each pass keeps every down-th sample of its own axis right away (the same numbers as
    # decimating at the end): the second pass then filters half as many rows.
    x = _fir_axis(x, taps[2], axis=2)
    if downx > 1:
      x = x[:, :, ::downx, :]
    x = _fir_axis(x, taps[1], axis=1)
    if downy > 1:
      x = x[:, ::downy, :, :]
    return x
  x = _fir_2d(x, taps[1])
  if downx > 1 or downy > 1:
    x = x[:, ::downy, ::downx, :]
  return x


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _upfirdn(x, taps, up, down, pads, in_hw):
  return _apply(x, taps, up, down, pads)


def _upfirdn_fwd(x, taps, up, down, pads, in_hw):
  return _apply(x, taps, up, down, pads), None


def _adjoint_pads(n: int, n_out: int, k: int, up: int, down: int, p0: int) -> tuple[int, int]:
  """Padding of the adjoint pass along one axis. Output sample o of the forward pass reads input i
  through tap a exactly when ``down * o + a - p0 == up * i``; zero-inserting the cotangent by
  ``down`` and correlating with the reversed taps from ``k - 1 - p0`` samples of left padding
  reads the same pairs at ``up * i``, and the right padding makes the pass end with input n."""
  left = k - 1 - p0
  right = n * up - up + 1 + k - 1 - n_out * down - left
  return left, right


def _upfirdn_bwd(taps, up, down, pads, in_hw, _, g):
  # The adjoint of a linear upfirdn2d is an upfirdn2d itself (up and down swapped, taps reversed):
  # one fused loop of shifted slices, like the forward pass, instead of the transposes of every
  # slice (a zero-padded copy of the cotangent per tap).
  fh, fw = _sizes(taps)
  ly = _adjoint_pads(in_hw[0], g.shape[1], fh, up[0], down[0], pads[0])
  lx = _adjoint_pads(in_hw[1], g.shape[2], fw, up[1], down[1], pads[2])
  rev = (taps[0],) + tuple(_reverse(t) for t in taps[1:])
  return (_upfirdn(g, rev, down, up, ly + lx, tuple(g.shape[1:3])),)


_upfirdn.defvjp(_upfirdn_fwd, _upfirdn_bwd)


def upfirdn2d(x: jax.Array, f: np.ndarray | None, up: int | Sequence[int] = 1,
              down: int | Sequence[int] = 1, padding=0, flip_filter: bool = False,
              gain: float = 1.0, separable_fast_path: bool = True) -> jax.Array:
  """Upsample, pad, FIR-filter and downsample a batch of NHWC images.

  Args:
    x: [B, H, W, C].
    f: [fh, fw] 2-D or [fw] separable filter (numpy; ``None`` means identity).
    up, down: integer factors, or (x, y) pairs.
    padding: int, (x, y) or (x0, x1, y0, y1) after upsampling; negative values crop.
    flip_filter: correlate with ``f`` instead of convolving (matters only for asymmetric filters).
    gain: overall signal gain (the filter is scaled by ``gain ** (f.ndim / 2)`` per pass).
    separable_fast_path: filter a rank-1 2-D filter as two 1-D passes (same result up to float32
      rounding; set False for the literal 2-D sum).

  Returns:
    [B, H', W', C] with H' = (H * up_y + py0 + py1 - fh + down_y) // down_y (likewise W').

  The gradient with respect to ``x`` is the adjoint upfirdn2d (``_upfirdn_bwd``), exact up to
  float32 summation order.
  """
  if f is None:
    f = np.ones((1, 1), np.float32)
  f = np.asarray(f, np.float32)
  upx, upy = (up, up) if isinstance(up, (int, np.integer)) else tuple(up)
  downx, downy = (down, down) if isinstance(down, (int, np.integer)) else tuple(down)
  px0, px1, py0, py1 = parse_padding(padding)
  # A true convolution is a correlation with the flipped filter.
  if not flip_filter:
    f = f[::-1, ::-1] if f.ndim == 2 else f[::-1]
  if f.ndim == 1:
    t = _taps(f * np.float32(gain ** 0.5))
    taps = ("sep", t, t)
  else:
    f = f * np.float32(gain)
    sep = _separate(f) if separable_fast_path else None
    taps = ("sep", _taps(sep[0]), _taps(sep[1])) if sep is not None else ("2d", _taps(f))
  return _upfirdn(x, taps, (int(upy), int(upx)), (int(downy), int(downx)),
                  (py0, py1, px0, px1), tuple(x.shape[1:3]))


def _filter_size(f) -> tuple[int, int]:
  if f is None:
    return 1, 1
  f = np.asarray(f)
  return (f.shape[-1], f.shape[0]) if f.ndim == 2 else (f.shape[0], f.shape[0])


def upsample2d(x: jax.Array, f, up: int = 2, padding=0, flip_filter: bool = False,
               gain: float = 1.0) -> jax.Array:
  """[B,H,W,C] -> [B,H*up,W*up,C]: upfirdn2d with the padding that keeps the image centred."""
  fw, fh = _filter_size(f)
  px0, px1, py0, py1 = parse_padding(padding)
  p = (px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2)
  return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x: jax.Array, f, down: int = 2, padding=0, flip_filter: bool = False,
                 gain: float = 1.0) -> jax.Array:
  """[B,H,W,C] -> [B,H/down,W/down,C]: filter then decimate."""
  fw, fh = _filter_size(f)
  px0, px1, py0, py1 = parse_padding(padding)
  p = (px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2,
       py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2)
  return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


def filter2d(x: jax.Array, f, padding=0, flip_filter: bool = False, gain: float = 1.0) -> jax.Array:
  """Same-size FIR filtering."""
  fw, fh = _filter_size(f)
  px0, px1, py0, py1 = parse_padding(padding)
  p = (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2)
  return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)
