"""Convolution with FIR resampling (StyleGAN2 ``conv2d_resample``) and the modulated convolution.

Layouts: images NHWC, kernels HWIO ``[kh, kw, I, O]`` (PyTorch ``[O, I, kh, kw]`` transposed).
``flip_weight=True`` means a plain correlation (PyTorch ``conv2d``); the flags keep the official
meaning so that converted weights give the official result on every path.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.ops import conv as conv_op
from jaxinv.ops.upfirdn2d import _filter_size, parse_padding, upfirdn2d

_DN = ("NHWC", "HWIO", "NHWC")
HIGHEST = jax.lax.Precision.HIGHEST


def _conv(x, w, stride=1, padding=((0, 0), (0, 0)), flip_weight=True):
  """Correlation of NHWC ``x`` with HWIO ``w`` (flipped first when ``not flip_weight``)."""
  if not flip_weight and (w.shape[0] > 1 or w.shape[1] > 1):
    w = w[::-1, ::-1]
  if w.shape[:2] == (1, 1) and stride == 1 and all(p == 0 for pair in padding for p in pair):
    # A 1x1 convolution is a matmul over channels. XLA:CPU runs few-output-channel convolutions
    # (ToRGB: 3 outputs) about 10x slower than the same contraction written as a dot.
    return conv_op.conv1x1(x, w[0, 0])
  return conv_op.conv2d(x, w.astype(x.dtype), stride, padding)


def conv2d_resample(x: jax.Array, w: jax.Array, f: np.ndarray | None = None, up: int = 1,
                    down: int = 1, padding=0, flip_weight: bool = True,
                    flip_filter: bool = False) -> jax.Array:
  """2-D convolution with optional FIR up/down-sampling, exactly as StyleGAN2 orders the steps.

  Args:
    x: [B, H, W, I].
    w: [kh, kw, I, O].
    f: FIR filter for resampling (numpy, e.g. ``upfirdn2d.STANDARD_FILTER``); None = identity.
    up, down: integer factors.
    padding: int | (x, y) | (x0, x1, y0, y1), in input pixels before resampling.
    flip_weight: False flips the kernel (StyleGAN2 passes False on the upsampling layers).

  Returns:
    [B, H*up/down, W*up/down, O] (for the usual ``padding = k // 2``).
  """
  kh, kw = int(w.shape[0]), int(w.shape[1])
  fw, fh = _filter_size(f)
  px0, px1, py0, py1 = parse_padding(padding)
  if up > 1:
    px0 += (fw + up - 1) // 2
    px1 += (fw - up) // 2
    py0 += (fh + up - 1) // 2
    py1 += (fh - up) // 2
  if down > 1:
    px0 += (fw - down + 1) // 2
    px1 += (fw - down) // 2
    py0 += (fh - down + 1) // 2
    py1 += (fh - down) // 2

  if kw == 1 and kh == 1 and down > 1 and up == 1:
    x = upfirdn2d(x, f, down=down, padding=(px0, px1, py0, py1), flip_filter=flip_filter)
    return _conv(x, w, flip_weight=flip_weight)
  if kw == 1 and kh == 1 and up > 1 and down == 1:
    x = _conv(x, w, flip_weight=flip_weight)
    return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up ** 2,
                     flip_filter=flip_filter)
  if down > 1 and up == 1:
    x = upfirdn2d(x, f, padding=(px0, px1, py0, py1), flip_filter=flip_filter)
    return _conv(x, w, stride=down, flip_weight=flip_weight)
  if up > 1:
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    # The official code hands conv_transpose2d flip_weight=(not flip_weight), so the kernel it
    # scatters is flipped exactly when ``flip_weight`` is True.
    scatter = w if not flip_weight else w[::-1, ::-1]
    if up == 2:
      x = conv_op.conv_transpose_stride2(x, scatter, pyt, pxt)
    else:
      # Generic stride: zero-stuffed input, correlation with the spatially flipped scatter kernel.
      x = jax.lax.conv_general_dilated(
          x, scatter[::-1, ::-1].astype(x.dtype), (1, 1),
          ((kh - 1 - pyt, kh - 1 - pyt), (kw - 1 - pxt, kw - 1 - pxt)), lhs_dilation=(up, up),
          dimension_numbers=_DN, precision=HIGHEST)
    x = upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up ** 2,
                  flip_filter=flip_filter)
    if down > 1:
      x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
  if up == 1 and down == 1:
    # lax convolutions take asymmetric (and negative) padding directly.
    return _conv(x, w, padding=((py0, py1), (px0, px1)), flip_weight=flip_weight)
  raise AssertionError("unreachable")


def modulated_conv2d(x: jax.Array, weight: jax.Array, styles: jax.Array,
                     noise: jax.Array | None = None, up: int = 1, down: int = 1, padding=0,
                     resample_filter: np.ndarray | None = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: bool = False,
                     conv_dtype=None) -> jax.Array:
  """StyleGAN2 modulated convolution (weight demodulation), fused or non-fused form.

  Both forms compute ``conv(x, weight * s) * d + noise`` with ``s = styles`` per input channel and
  ``d = rsqrt(sum((weight * s)^2) + 1e-8)`` per output channel. The fused form builds one kernel
  per sample (the official eval-mode grouped convolution); the non-fused form scales activations
  instead and shares one kernel over the batch, which is much faster on CPU. They agree to
  float32 rounding (tested).

  Args:
    x: [B, H, W, I].
    weight: [kh, kw, I, O] raw parameter (no gain).
    styles: [B, I].
    noise: broadcastable to the output [B, H', W', O] (e.g. [H', W', 1] or [B, H', W', 1]).
    conv_dtype: None (float32) or e.g. ``jnp.bfloat16``: run the convolution itself (with its FIR
      resampling) on inputs and kernel cast to this dtype and return to ``x.dtype`` right after;
      styles, demodulation coefficients, noise stay float32 (the bf16 policy of EG3DConfig).

  Returns:
    [B, H', W', O].
  """
  if x.shape[-1] != weight.shape[2] or styles.shape != (x.shape[0], weight.shape[2]):
    raise ValueError(f"modulated_conv2d: x {x.shape}, weight {weight.shape} (HWIO) and styles "
                     f"{styles.shape} do not agree")
  dcoefs = None
  if demodulate or fused_modconv:
    w = weight[None] * styles[:, None, None, :, None]  # [B, kh, kw, I, O]
  if demodulate:
    dcoefs = jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3)) + 1e-8)  # [B, O]
  kwargs = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
  out_dtype = x.dtype

  def conv(xx, ww):
    if conv_dtype is None:
      return conv2d_resample(xx, ww, **kwargs)
    return conv2d_resample(xx.astype(conv_dtype), ww.astype(conv_dtype), **kwargs).astype(out_dtype)

  if not fused_modconv:
    x = x * styles[:, None, None, :].astype(x.dtype)
    x = conv(x, weight)
    if demodulate:
      x = x * dcoefs[:, None, None, :].astype(x.dtype)
  else:
    if demodulate:
      w = w * dcoefs[:, None, None, None, :]
    x = jax.vmap(lambda xi, wi: conv(xi[None], wi)[0])(x, w)
  if noise is not None:
    x = x + noise.astype(x.dtype)
  return x
