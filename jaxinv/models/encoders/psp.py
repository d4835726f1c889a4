"""pSp-family image encoders on an IR-SE-50 trunk: pSp, e4e and PREIM3D's W+ encoder.

All take images ``x: [B, 256, 256, in_ch]`` (NHWC, [-1, 1]) and return latent codes
``[B, n_styles, 512]`` *relative to* the generator's average latent: the callers add ``w_avg``
(``latent_avg``) themselves, as the upstream wrappers do.

* ``GradualStyleEncoder`` (pSp, Richardson et al. 2021): the trunk's stage ends c1 (64x64x128),
  c2 (32x32x256), c3 (16x16x512) feed a small feature pyramid
  ``p2 = up(c3) + lat1(c2)``, ``p1 = up(p2) + lat2(c1)`` (bilinear, align_corners=True).
  Style heads 0-2 read c3, heads 3-6 read p2, the rest read p1.
* ``Encoder4Editing`` (e4e, Tov et al. 2021): the same heads, but head 0 predicts one code that is
  copied to every row and heads 1.. add deltas to it. Training is progressive: at stage ``k``
  only the deltas ``1..k`` are active (``progressive_stage``), the inference form uses all.
* ``WPlusEncoder`` (PREIM3D's ``BackboneEncoderUsingLastLayerIntoWPlus``): BN, adaptive average
  pooling 16 -> 7 (PyTorch's overlapping windows), C,H,W flatten, Linear 25088 -> 512,
  EqualLinear 512 -> n_styles * 512.

Parameter trees (``{'params': ..., 'batch_stats': ...}``) use the IR-SE names of
``jaxinv.nn.irse`` under ``input_layer`` / ``body``, then ``latlayer1``, ``latlayer2`` (1x1 convs)
and ``style_{i}/{conv_{j}, linear}`` for the heads (``WPlusEncoder``: ``output_bn``, ``output_fc``,
``linear``). ``jaxinv.convert.psp`` fills them from upstream state dicts.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.nn.irse import BatchNormInference, IRSEBody, IRSEInputLayer, conv2d, irse50_units
from jaxinv.ops.pooling import adaptive_avg_pool2d
from jaxinv.ops.resample import resize_bilinear_align_corners

_HIGHEST = jax.lax.Precision.HIGHEST

# Style-head boundaries shared by pSp and e4e: heads [0, 3) read c3, [3, 7) read p2, [7, n) read p1.
COARSE_END = 3
MIDDLE_END = 7

# e4e's ``ProgressiveStage.Inference``: every delta active.
E4E_INFERENCE_STAGE = 18


def n_styles_for_resolution(resolution: int) -> int:
  """Number of w+ rows of a StyleGAN2 synthesis network: ``2 * log2(resolution) - 2``.

  18 for StyleGAN2-1024; 14 for EG3D, whose tri-plane backbone is a 256-px StyleGAN2 (PREIM3D's
  ``stylegan_size = 256``).
  """
  log = int(round(math.log2(resolution)))
  if 2 ** log != resolution:
    raise ValueError(f"resolution must be a power of two, got {resolution}")
  return 2 * log - 2


class EqualLinear(nn.Module):
  """StyleGAN2's equalised-learning-rate linear layer (no activation).

  ``y = x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul``; ``params/kernel [in, out]`` holds the
  *unscaled* weight transposed (init N(0, 1) / lr_mul), ``params/bias [out]`` (init 0).
  """
  features: int
  lr_mul: float = 1.0

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param("kernel", lambda k, s, d=jnp.float32: jax.random.normal(k, s, d) / self.lr_mul,
                        (fan_in, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    scale = self.lr_mul / math.sqrt(fan_in)
    return jnp.dot(x, kernel * scale, precision=_HIGHEST) + bias * self.lr_mul


class GradualStyleBlock(nn.Module):
  """pSp style head: ``log2(spatial)`` x [conv3x3 stride 2 pad 1 -> LeakyReLU(0.01)] -> EqualLinear.

  ``x: [B, spatial, spatial, C] -> [B, out_features]`` (convs of ``features`` channels;
  ``out_features`` defaults to ``features``, as upstream where both are 512).
  """
  features: int
  spatial: int
  out_features: int | None = None

  @nn.compact
  def __call__(self, x):
    if x.shape[1] != self.spatial or x.shape[2] != self.spatial:
      raise ValueError(f"GradualStyleBlock: expected {self.spatial}x{self.spatial} features, "
                       f"got {x.shape[1]}x{x.shape[2]}")
    n = int(round(math.log2(self.spatial)))
    for j in range(n):
      x = conv2d(self.features, 3, 2, 1, use_bias=True, name=f"conv_{j}")(x)
      x = nn.leaky_relu(x, 0.01)
    x = x.reshape(x.shape[0], self.features)  # [B, 1, 1, F] -> [B, F]
    return EqualLinear(self.out_features or self.features, name="linear")(x)


def _head_spatial(i: int) -> int:
  return 16 if i < COARSE_END else 32 if i < MIDDLE_END else 64


def _upsample_add(top, lateral):
  """pSp's ``_upsample_add``: bilinear (align_corners=True) resize of ``top`` + ``lateral``."""
  return resize_bilinear_align_corners(top, lateral.shape[1:3]) + lateral


def _check_input(x, in_ch: int, what: str):
  if x.ndim != 4 or x.shape[-1] != in_ch:
    hint = " (looks channels-first; jaxinv takes NHWC)" if x.ndim == 4 and x.shape[1] == in_ch else ""
    raise ValueError(f"{what}: expected images [B, H, W, {in_ch}], got shape {x.shape}{hint}")
  if x.shape[1] % 16 or x.shape[2] % 16:
    raise ValueError(f"{what}: spatial size must be a multiple of 16, got {x.shape[1:3]}")


class _PyramidEncoder(nn.Module):
  """The IR-SE-50 body, the two lateral 1x1 convs and one style head per style (pSp and e4e).

  The defaults are the upstream networks. ``units`` / ``taps`` / ``input_size`` / ``w_dim``
  shrink them for tests and ``runlocal`` training (e.g. 4 narrow units on 64x64 inputs): the
  pyramid and heads then take their widths from the tapped units and their spatial sizes from
  ``input_size``.
  """
  n_styles: int = 18
  in_ch: int = 3
  units: tuple | None = None       # None: IR-SE-50
  taps: tuple = (6, 20, 23)        # body units read as c1, c2, c3
  input_size: int = 256
  w_dim: int = 512

  def _units(self):
    return irse50_units() if self.units is None else tuple(self.units)

  def _head_spatial(self, i: int) -> int:
    if self.units is None and self.input_size == 256:
      return _head_spatial(i)
    tap = self.taps[2] if i < COARSE_END else self.taps[1] if i < MIDDLE_END else self.taps[0]
    size = self.input_size
    for u in self._units()[: tap + 1]:
      size = -(-size // u.stride)
    return size

  def setup(self):
    units = self._units()
    width = units[self.taps[2]].depth
    self.input_layer = IRSEInputLayer(units[0].in_ch)
    self.body = IRSEBody(units)
    self.latlayer1 = conv2d(width, 1, 1, 0, use_bias=True)
    self.latlayer2 = conv2d(width, 1, 1, 0, use_bias=True)
    self.styles = [GradualStyleBlock(width, self._head_spatial(i), out_features=self.w_dim,
                                     name=f"style_{i}")
                   for i in range(self.n_styles)]


class GradualStyleEncoder(_PyramidEncoder):
  """pSp encoder. ``x: [B, 256, 256, in_ch] -> codes [B, n_styles, 512]`` (no ``latent_avg``).

  With ``return_features=True`` also returns ``{'c1', 'c2', 'c3', 'p2', 'p1'}`` (NHWC maps).
  The style heads require a 256x256 input (c3 must be 16x16).
  """
  n_styles: int = 18
  in_ch: int = 3


  def __call__(self, x, return_features: bool = False):
    _check_input(x, self.in_ch, type(self).__name__)
    h = self.input_layer(x)
    c1, c2, c3 = self.body(h, return_indices=self.taps)
    p2 = _upsample_add(c3, self.latlayer1(c2))
    p1 = _upsample_add(p2, self.latlayer2(c1))
    feats = [c3 if i < COARSE_END else p2 if i < MIDDLE_END else p1 for i in range(self.n_styles)]
    codes = jnp.stack([head(f) for head, f in zip(self.styles, feats)], axis=1)
    if return_features:
      return codes, {"c1": c1, "c2": c2, "c3": c3, "p2": p2, "p1": p1}
    return codes


def e4e_progressive_steps(n_styles: int, progressive_start: int,
                          progressive_step_every: int = 2000) -> tuple[int, ...]:
  """e4e's ``--progressive_start``: stage ``i`` starts at ``steps[i]`` (``steps[0] = 0``)."""
  return (0,) + tuple(progressive_start + i * progressive_step_every for i in range(n_styles - 1))


def e4e_progressive_stage(step: int, progressive_steps: Sequence[int] | None) -> int:
  """The e4e progressive stage at training ``step``.

  The stage is the number of the last entry of ``progressive_steps`` (ascending, starting at 0)
  that ``step`` has reached; without a schedule, training runs in the inference form.
  """
  if progressive_steps is None:
    return E4E_INFERENCE_STAGE
  if list(progressive_steps) != sorted(progressive_steps) or progressive_steps[0] != 0:
    raise ValueError(f"progressive_steps must be ascending and start at 0, got {progressive_steps}")
  return max(i for i, s in enumerate(progressive_steps) if step >= s)


def e4e_active_deltas(stage: int, n_styles: int) -> tuple[int, ...]:
  """Rows whose delta is added at ``stage`` (row 0 is the base code and always present)."""
  return tuple(range(1, min(stage + 1, n_styles)))


class Encoder4Editing(_PyramidEncoder):
  """e4e encoder. ``x: [B, 256, 256, 3] -> codes [B, n_styles, 512]`` (no ``latent_avg``).

  ``codes[:, i] = w0 + delta_i`` with ``w0 = style_0(c3)``; at progressive ``stage`` (a Python
  int, static under jit) only the deltas ``1..stage`` are computed and added; the default is the
  inference form (all of them). ``return_features=True`` adds ``{'c1','c2','c3','w0'}``.
  """
  n_styles: int = 14
  in_ch: int = 3


  def __call__(self, x, stage: int = E4E_INFERENCE_STAGE, return_features: bool = False):
    _check_input(x, self.in_ch, type(self).__name__)
    h = self.input_layer(x)
    c1, c2, c3 = self.body(h, return_indices=self.taps)
    w0 = self.styles[0](c3)
    rows = [w0] * self.n_styles
    features, p2 = c3, None
    for i in e4e_active_deltas(stage, self.n_styles):
      # The pyramid levels are built lazily, so early stages skip their cost, as upstream.
      if i == COARSE_END:
        p2 = features = _upsample_add(c3, self.latlayer1(c2))
      elif i == MIDDLE_END:
        features = _upsample_add(p2, self.latlayer2(c1))
      rows[i] = w0 + self.styles[i](features)
    codes = jnp.stack(rows, axis=1)
    if return_features:
      return codes, {"c1": c1, "c2": c2, "c3": c3, "w0": w0}
    return codes


class WPlusEncoder(nn.Module):
  """PREIM3D's ``BackboneEncoderUsingLastLayerIntoWPlus``.

  ``x: [B, 256, 256, 3] -> codes [B, n_styles, 512]``; ``return_features=True`` adds
  ``{'body': [B,16,16,512], 'pool7': [B,7,7,512], 'fc512': [B,512]}``. ``input_size``: the image
  size the encoder was trained on, which ``jaxinv.invert`` pools its input to (the adaptive 7x7
  pool lets the network itself take any multiple of 16, so nothing here would catch a mismatch).
  """
  n_styles: int = 14
  in_ch: int = 3
  units: tuple | None = None       # None: IR-SE-50 (smaller for tests / runlocal)
  w_dim: int = 512
  input_size: int = 256

  @nn.compact
  def __call__(self, x, return_features: bool = False):
    _check_input(x, self.in_ch, type(self).__name__)
    units = irse50_units() if self.units is None else tuple(self.units)
    h = IRSEInputLayer(units[0].in_ch, name="input_layer")(x)
    body = IRSEBody(units, name="body")(h)
    y = BatchNormInference(name="output_bn")(body)
    pool7 = adaptive_avg_pool2d(y, (7, 7))
    # The upstream Flatten runs on NCHW: flatten in C, H, W order so converted weights line up.
    flat = jnp.transpose(pool7, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    fc = nn.Dense(self.w_dim, precision=_HIGHEST, name="output_fc")(flat)
    codes = EqualLinear(self.w_dim * self.n_styles, name="linear")(fc).reshape(
        -1, self.n_styles, self.w_dim)
    if return_features:
      return codes, {"body": body, "pool7": pool7, "fc512": fc}
    return codes
