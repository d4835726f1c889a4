"""A StyleGAN2 ``resnet`` image discriminator (Karras et al. 2020), unconditional (``c_dim = 0``):
TriPlaneNet v2's optional adversarial critic.

``x [B, R, R, 3] in [-1, 1] -> logits [B]``. Per resolution ``R, R/2, ..., 8`` one residual block
(``fromrgb`` 1x1 in the first only; ``conv0`` 3x3; ``conv1`` 3x3 after a 2x FIR downsample
([1, 3, 3, 1] filter); ``skip`` 1x1 after the same downsample, no bias; ``(skip + conv1) *
sqrt(0.5)``), then the 4x4 epilogue: minibatch standard deviation (group ``mbstd_group_size``, one
channel), 3x3 conv, dense to ``C``, dense to 1. Equalised learning rate everywhere (weights
``N(0, 1)`` scaled by ``1/sqrt(fan_in)`` at run time), leaky ReLU 0.2 with gain ``sqrt 2``.
Channels per resolution: ``min(channel_base // res, channel_max)``.

Random initialisation only: blur-then-convolve here, where the official ``conv2d_resample``
pads, blurs and strides inside the convolution -- the same operator family, not weight-compatible.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.ops import conv as conv_op
from jaxinv.ops.upfirdn2d import downsample2d, setup_filter

_GAIN = math.sqrt(2.0)
_FILTER = None


def _filter():
  global _FILTER
  if _FILTER is None:
    _FILTER = setup_filter((1, 3, 3, 1))
  return _FILTER


def _lrelu(x):
  return jax.nn.leaky_relu(x, 0.2) * _GAIN


class EqConv(nn.Module):
  features: int
  kernel: int = 3
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    k = self.kernel
    w = self.param("kernel", nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
    w = w / math.sqrt(k * k * x.shape[-1])
    y = conv_op.conv2d(x, w, 1, k // 2)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class EqDense(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    return jnp.dot(x, w / math.sqrt(x.shape[-1]), precision=jax.lax.Precision.HIGHEST) + b


def minibatch_std(x, group_size: int):
  """StyleGAN2's minibatch-stddev channel (one feature, groups of ``min(group_size, B)``)."""
  b, h, w, c = x.shape
  g = min(group_size, b) if group_size else b
  if b % g:
    g = 1
  y = x.reshape(g, b // g, h, w, c)
  y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)               # [B/g, H, W, C]
  y = jnp.mean(y, axis=(1, 2, 3))                       # [B/g]
  y = jnp.tile(y, (g,))[:, None, None, None]            # [B, 1, 1, 1] (sample i -> group i % (B/g))
  return jnp.concatenate([x, jnp.broadcast_to(y, (b, h, w, 1))], axis=-1)


class ResnetDiscriminator(nn.Module):
  resolution: int = 256
  channel_base: int = 32768
  channel_max: int = 512
  mbstd_group_size: int = 4

  def channels(self, res: int) -> int:
    return min(self.channel_base // res, self.channel_max)

  @nn.compact
  def __call__(self, x):
    r = self.resolution
    if x.ndim != 4 or x.shape[1:] != (r, r, 3):
      raise ValueError(f"ResnetDiscriminator: expected images [B, {r}, {r}, 3], got {x.shape}")
    log = int(round(math.log2(r)))
    if 2 ** log != r or r < 8:
      raise ValueError(f"resolution must be a power of two >= 8, got {r}")
    h = _lrelu(EqConv(self.channels(r), 1, name="fromrgb")(x))
    res = r
    while res > 4:
      cin, cout = self.channels(res), self.channels(res // 2)
      skip = EqConv(cout, 1, use_bias=False, name=f"b{res}_skip")(downsample2d(h, _filter()))
      y = _lrelu(EqConv(cin, 3, name=f"b{res}_conv0")(h))
      y = _lrelu(EqConv(cout, 3, name=f"b{res}_conv1")(downsample2d(y, _filter())))
      h = (skip + y) * np.float32(math.sqrt(0.5))
      res //= 2
    h = minibatch_std(h, self.mbstd_group_size)
    c4 = self.channels(4)
    h = _lrelu(EqConv(c4, 3, name="b4_conv")(h))
    h = _lrelu(EqDense(c4, name="b4_fc")(h.reshape(h.shape[0], -1)))
    return EqDense(1, name="b4_out")(h)[:, 0]


def from_config(cfg, resolution: int) -> ResnetDiscriminator:
  """The D of a config block with ``channel_base``, ``channel_max``, ``mbstd_group_size``."""
  return ResnetDiscriminator(resolution, int(cfg.channel_base), int(cfg.channel_max),
                             int(cfg.mbstd_group_size))
