"""A 2D convolution whose weight gradient is fast on XLA:CPU (NHWC images, HWIO kernels).

``conv2d(x, w, stride, padding)`` is ``lax.conv_general_dilated`` (PyTorch ``conv2d``: a plain
correlation, explicit symmetric zero padding, fp32 at HIGHEST precision) with one change in the
backward pass. XLA:CPU computes a kernel gradient as one convolution whose "kernel" is the whole
output gradient; for the large maps of an IR-SE encoder that runs several times slower than the
forward pass (2 x 256 x 256 x 64 -> 64, 3x3: 0.67-0.92 s against 0.07 s forward, this 2-core
CPU). The same sum split into bands of a few output rows, one small convolution each, runs at
about forward speed (0.13 s). So on the CPU backend, when a convolution is large enough to matter
(``_CHUNK_MIN_FLOPS``), the kernel gradient is that banded sum; other backends and small
convolutions keep XLA's own. Likewise the input gradient of a large stride-2 convolution on CPU
is the polyphase transposed convolution (``conv_transpose_stride2``: four stride-1 convolutions;
XLA:CPU's own convolves a zero-stuffed map on its slow generic path); any other input gradient
is XLA's. The forward pass is unchanged, so outputs are bit-identical to
``lax.conv_general_dilated``; gradients differ only by float summation order (relative 1e-5
at most in the tests).

On CPU every gradient convolution is also emitted in XLA:CPU's canonical layout (NHWC input,
HWIO kernel, NHWC output, with explicit transposes around it). XLA's own gradient convolutions
have permuted dimension numbers, which XLA:CPU's ``ConvCanonicalization`` rewrites only in the
entry computation: inside a ``lax.scan`` / ``while`` body or a ``lax.cond`` branch they ran on
the generic loop emitter, 30-300x slower (PTI's scanned tuning step on the tiny fixture G: 2.0 s
-> 0.3 s). Every convolution of the package's trained or inverted networks goes through here
(the exceptions: the symmetry prior's ``ConvTranspose`` decoder and SSIM's fixed filters).

Gradients are only computed for what is differentiated (``custom_vjp`` with symbolic zeros): a
frozen network's kernels (LPIPS, ArcFace in a loss) cost no kernel gradient.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")
HIGHEST = jax.lax.Precision.HIGHEST
_CHUNK_MIN_FLOPS = 2e8     # 2 * B * Ho * Wo * kh * kw * I * O below which XLA's own is kept
_CHUNK_PIXELS = 2048       # output pixels (batch x rows x width) per band, measured on CPU
_MAX_BANDS = 64            # bound on the bands of one kernel gradient (compile time)


def _plain(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_DN,
                                      precision=HIGHEST)


def _band_rows(b: int, ho: int, wo: int) -> int:
  rows = max(1, min(8, _CHUNK_PIXELS // max(b * wo, 1)))
  return max(rows, -(-ho // _MAX_BANDS))


def _kernel_grad_xla(x, g, w_shape, stride, padding):
  return jax.vjp(lambda w: _plain(x, w, stride, padding), jnp.zeros(w_shape, x.dtype))[1](g)[0]


def _kernel_grad_canonical(x, g, w_shape, stride, padding):
  """The kernel gradient as ONE convolution in XLA:CPU's canonical layout (NHWC input, HWIO
  kernel, NHWC output) between explicit transposes: the image's channels act as the batch, the
  output gradient as the kernel (dilated by the stride), the batch is summed as the channels.

  XLA's own transpose rule emits the same convolution with permuted dimension numbers, which
  XLA:CPU rewrites into this form only in the entry computation
  (``ConvCanonicalization`` visits ``module->entry_computation()``); inside a ``while`` body, i.e.
  a ``lax.scan`` step, it stays on the generic loop emitter, tens to hundreds of times slower.
  """
  kh, kw = w_shape[0], w_shape[1]
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
  lhs = jnp.transpose(xp, (3, 1, 2, 0))   # [I, Hp, Wp, B]
  rhs = jnp.transpose(g, (1, 2, 0, 3))    # [Ho, Wo, B, O]
  out = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", rhs_dilation=(stride, stride),
                                     dimension_numbers=_DN, precision=HIGHEST)
  return jnp.transpose(out[:, :kh, :kw], (1, 2, 0, 3))  # [kh, kw, I, O]


def _kernel_grad_banded(x, g, w_shape, stride, padding):
  """``sum over bands of output rows`` of each band's kernel gradient (VALID convs on slices)."""
  kh = w_shape[0]
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  b, ho, wo, _ = g.shape
  rows = _band_rows(b, ho, wo)
  valid = ((0, 0), (0, 0))
  acc = None
  for r0 in range(0, ho, rows):
    r1 = min(r0 + rows, ho)
    xs = xp[:, r0 * stride:(r1 - 1) * stride + kh]
    part = _kernel_grad_canonical(xs, g[:, r0:r1], w_shape, stride, valid)
    acc = part if acc is None else acc + part
  return acc


def _kernel_grad(x, g, w_shape, stride, padding):
  """CPU: the banded sum when large enough to matter (and no negative padding), else one
  canonical convolution; other backends: XLA's own."""
  if (_flops(g.shape, w_shape) < _CHUNK_MIN_FLOPS or g.shape[1] < 2
      or any(q < 0 for pair in padding for q in pair)):
    cpu = lambda x, g: _kernel_grad_canonical(x, g, w_shape, stride, padding)
  else:
    cpu = lambda x, g: _kernel_grad_banded(x, g, w_shape, stride, padding)
  return jax.lax.platform_dependent(
      x, g, cpu=cpu, default=lambda x, g: _kernel_grad_xla(x, g, w_shape, stride, padding))


def _flops(g_shape, w_shape) -> float:
  b, ho, wo, co = g_shape
  return 2.0 * b * ho * wo * w_shape[0] * w_shape[1] * w_shape[2] * co


def _input_grad_xla(g, w, x_shape, stride, padding):
  return jax.vjp(lambda x_: _plain(x_, w, stride, padding), jnp.zeros(x_shape, g.dtype))[1](g)[0]


def _input_grad_canonical(g, w, x_shape, stride, padding):
  """The input gradient as one canonical convolution (see ``_kernel_grad_canonical``): the
  output gradient, dilated by the stride, correlated with the flipped kernel (I/O swapped by an
  explicit transpose, not by permuted dimension numbers)."""
  kh, kw = w.shape[0], w.shape[1]
  (pt, pb), (pl, pr) = padding
  rh = (x_shape[1] + pt + pb - kh) % stride
  rw = (x_shape[2] + pl + pr - kw) % stride
  wt = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
  return jax.lax.conv_general_dilated(
      g, wt, (1, 1), ((kh - 1 - pt, kh - 1 - pb + rh), (kw - 1 - pl, kw - 1 - pr + rw)),
      lhs_dilation=(stride, stride), dimension_numbers=_DN, precision=HIGHEST)


def _input_grad_polyphase(g, w, x_shape, padding):
  # x_pad[i + top] meets g[o] through w[t] where i + top = 2 o + t: the transposed convolution of
  # g (kernel I/O swapped), uncropped, read from row ``top`` / column ``left`` on.
  full = conv_transpose_stride2(g, jnp.swapaxes(w, 2, 3), 0, 0)
  (top, _), (left, _) = padding
  h, wd = x_shape[1], x_shape[2]
  full = jnp.pad(full, ((0, 0), (0, max(0, top + h - full.shape[1])),
                        (0, max(0, left + wd - full.shape[2])), (0, 0)))
  return full[:, top:top + h, left:left + wd]


def _input_grad(g, w, x_shape, stride, padding):
  """The input gradient. On CPU: stride 2 (when large enough to matter, no negative padding) the
  polyphase transposed convolution (XLA:CPU runs its own, a convolution over a zero-stuffed map,
  on a slow generic path), else one canonical convolution; other backends: XLA's."""
  if (stride != 2 or _flops(g.shape, w.shape) < _CHUNK_MIN_FLOPS
      or any(q < 0 for pair in padding for q in pair)):
    cpu = lambda g, w: _input_grad_canonical(g, w, x_shape, stride, padding)
  else:
    cpu = lambda g, w: _input_grad_polyphase(g, w, x_shape, padding)
  return jax.lax.platform_dependent(
      g, w, cpu=cpu, default=lambda g, w: _input_grad_xla(g, w, x_shape, stride, padding))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, stride, padding):
  return _plain(x, w, stride, padding)


def _conv_fwd(x, w, stride, padding):
  y = _plain(x.value, w.value, stride, padding)
  # Residuals: only what the needed cotangents use (None marks a cotangent nobody asked for).
  return y, (x.value if w.perturbed else None, w.value if x.perturbed else None,
             x.value.shape, w.value.shape)


def _conv_bwd(stride, padding, res, g):
  x, w, x_shape, w_shape = res
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return None, None
  dx = None if w is None else _input_grad(g, w, x_shape, stride, padding)
  dw = None if x is None else _kernel_grad(x, g, w_shape, stride, padding)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd, symbolic_zeros=True)


def conv2d(x, w, stride: int = 1, padding=0):
  """PyTorch ``conv2d(x, w, stride, padding)`` on NHWC ``x`` and HWIO ``w`` (no bias).

  ``padding``: an int (both sides of both axes) or ``((top, bottom), (left, right))``.
  """
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _conv(x, w.astype(x.dtype), int(stride), padding)


def _channel_dot(x, w):
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=HIGHEST)


@jax.custom_vjp
def _conv1x1(x, w):
  return _channel_dot(x, w)


def _conv1x1_fwd(x, w):
  y = _channel_dot(x.value, w.value)
  return y, (x.value if w.perturbed else None, w.value if x.perturbed else None)


def _conv1x1_bwd(res, g):
  x, w = res
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return None, None
  dx = None if w is None else jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())),
                                                  precision=HIGHEST)
  # Contracting the leading (pixel) axes of both operands as they lie. Autodiff's transpose of the
  # dot instead made XLA:CPU copy the output gradient into channel-major order first: for the
  # tri-plane ToRGB (256^2 pixels x 96 channels) that copy alone took 15 ms of a 16 ms gradient.
  lead = tuple(range(g.ndim - 1))
  dw = None if x is None else jax.lax.dot_general(x, g, ((lead, lead), ((), ())),
                                                  precision=HIGHEST)
  return dx, dw


_conv1x1.defvjp(_conv1x1_fwd, _conv1x1_bwd, symbolic_zeros=True)


def conv1x1(x, w):
  """A 1x1 convolution ``[..., I] x [I, O] -> [..., O]`` as a dot over channels (fp32, HIGHEST),
  with a kernel gradient that contracts the pixels in place."""
  return _conv1x1(x, w.astype(x.dtype))


def conv_transpose_stride2(x, w, pad_y: int, pad_x: int):
  """PyTorch ``conv_transpose2d(x, w^T, stride=2, padding=(pad_y, pad_x))`` for HWIO ``w``.

  ``w`` is the kernel as the transposed convolution *scatters* it (no flip applied here). Written
  polyphase: output pixel parity (a, b) only ever meets the kernel taps of the same parity, so
  four small stride-1 convolutions replace one convolution over a zero-stuffed input (4x fewer
  multiply-adds, which is what makes the 512^2 superresolution cheap on CPU).
  """
  b, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  # Full (uncropped) transposed-conv output: size 2*(n-1) + k, then crop pad from both ends.
  full_h, full_w = 2 * (h - 1) + kh, 2 * (wd - 1) + kw
  ph, pw = (full_h + 1) // 2, (full_w + 1) // 2
  rows = []
  for a in range(2):
    cols = []
    for c in range(2):
      # Output pixel (2m + a, 2n + c) sums x[m - t, n - u] * w[a + 2t, c + 2u]: a true
      # convolution with the taps of that parity, i.e. a correlation with them flipped.
      taps = w[a::2, c::2]
      th, tw = taps.shape[:2]
      if th == 0 or tw == 0:
        cols.append(jnp.zeros((b, ph, pw, o), x.dtype))
        continue
      y = conv2d(x, taps[::-1, ::-1].astype(x.dtype), 1,
                 ((th - 1, th - 1), (tw - 1, tw - 1)))  # [B, h+th-1, w+tw-1, O]
      cols.append(jnp.pad(y, ((0, 0), (0, ph - y.shape[1]), (0, pw - y.shape[2]), (0, 0))))
    rows.append(jnp.stack(cols, axis=3))  # [B, ph, pw, 2, O]
  out = jnp.stack(rows, axis=2)  # [B, ph, 2, pw, 2, O]: interleave the phases by reshaping
  out = out.reshape(b, 2 * ph, 2 * pw, o)
  return out[:, pad_y:full_h - pad_y, pad_x:full_w - pad_x, :]
