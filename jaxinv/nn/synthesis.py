"""StyleGAN2 synthesis network ("skip" architecture) producing EG3D's tri-plane features.

Layouts: activations NHWC; conv weights HWIO ``[k, k, I, O]``; ``const [R, R, C]``;
``noise_const [R, R]``. Noise modes: ``'const'`` (stored ``noise_const * noise_strength``),
``'random'`` (fresh N(0,1) per sample from the ``'noise'`` RNG stream, times ``noise_strength``)
and ``'none'``.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.nn.layers import FullyConnectedLayer, _normal_init
from jaxinv.ops.bias_act import ACTIVATIONS, bias_act
from jaxinv.ops.modconv import modulated_conv2d
from jaxinv.ops.upfirdn2d import STANDARD_FILTER, upsample2d

NOISE_MODES = ("const", "random", "none")


def _check_noise_mode(noise_mode: str) -> None:
  if noise_mode not in NOISE_MODES:
    raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv (optionally 2x upsampling) + noise + bias + lrelu (+ clamp).

  Attributes:
    in_channels, out_channels, w_dim: sizes.
    resolution: output resolution (size of ``noise_const``).
    kernel_size: conv kernel size.
    up: 1 or 2.
    use_noise: whether the layer has noise inputs.
    activation: bias_act activation name.
    conv_clamp: clamp of the activations (None = off; 256 in the released SR blocks).
    fused_modconv: use the per-sample-kernel form instead of activation scaling (same result).
    conv_dtype: None (float32) or 'bfloat16' for the convolution itself (``modulated_conv2d``).
  """
  in_channels: int
  out_channels: int
  w_dim: int
  resolution: int
  kernel_size: int = 3
  up: int = 1
  use_noise: bool = True
  activation: str = "lrelu"
  conv_clamp: Optional[float] = None
  fused_modconv: bool = False
  conv_dtype: Optional[str] = None

  @nn.compact
  def __call__(self, x, w, noise_mode: str = "random", gain: float = 1.0):
    """x: [B, H, W, I], w: [B, w_dim] -> [B, resolution, resolution, O]."""
    _check_noise_mode(noise_mode)
    styles = FullyConnectedLayer(self.w_dim, self.in_channels, bias_init=1.0, name="affine")(w)
    k = self.kernel_size
    weight = self.param("weight", _normal_init(1.0), (k, k, self.in_channels, self.out_channels))
    noise = None
    if self.use_noise:
      noise_const = self.param("noise_const", _normal_init(1.0), (self.resolution, self.resolution))
      noise_strength = self.param("noise_strength", nn.initializers.zeros, ())
      if noise_mode == "random":
        shape = (x.shape[0], self.resolution, self.resolution, 1)
        noise = jax.random.normal(self.make_rng("noise"), shape, x.dtype) * noise_strength
      elif noise_mode == "const":
        noise = (noise_const * noise_strength)[:, :, None]
    bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    # The official layer convolves upsampling layers with the kernel flipped (flip_weight=False);
    # it matters for converted weights.
    x = modulated_conv2d(x, weight, styles, noise=noise, up=self.up, padding=k // 2,
                         resample_filter=STANDARD_FILTER, flip_weight=(self.up == 1),
                         fused_modconv=self.fused_modconv, conv_dtype=self.conv_dtype)
    act_gain = ACTIVATIONS[self.activation].def_gain * gain
    act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return bias_act(x, bias, act=self.activation, gain=act_gain, clamp=act_clamp)


class ToRGBLayer(nn.Module):
  """Modulated 1x1 conv without demodulation, + bias (+ clamp)."""
  in_channels: int
  out_channels: int
  w_dim: int
  kernel_size: int = 1
  conv_clamp: Optional[float] = None
  fused_modconv: bool = False
  conv_dtype: Optional[str] = None

  @nn.compact
  def __call__(self, x, w):
    """x: [B, H, W, I], w: [B, w_dim] -> [B, H, W, out_channels]."""
    k = self.kernel_size
    styles = FullyConnectedLayer(self.w_dim, self.in_channels, bias_init=1.0, name="affine")(w)
    styles = styles * (1.0 / np.sqrt(self.in_channels * k * k))
    weight = self.param("weight", _normal_init(1.0), (k, k, self.in_channels, self.out_channels))
    bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    x = modulated_conv2d(x, weight, styles, demodulate=False, fused_modconv=self.fused_modconv,
                         conv_dtype=self.conv_dtype)
    return bias_act(x, bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
  """One resolution of the skip-architecture synthesis network.

  ``upsample=False`` gives EG3D's ``SynthesisBlockNoUp`` (superresolution): no 2x upsampling of
  either the features or the incoming image.

  Call: ``x [B, R', R', in] | None, img [B, R', R', img_channels] | None, ws [B, n, w_dim]``
  with ``n = num_conv + num_torgb``; returns ``(x [B, R, R, out], img [B, R, R, img_channels])``.
  """
  in_channels: int
  out_channels: int
  w_dim: int
  resolution: int
  img_channels: int
  is_last: bool
  architecture: str = "skip"
  conv_clamp: Optional[float] = None
  upsample: bool = True
  fused_modconv: bool = False
  conv_dtype: Optional[str] = None

  @property
  def num_conv(self) -> int:
    return 1 if self.in_channels == 0 else 2

  @property
  def num_torgb(self) -> int:
    return 1 if (self.is_last or self.architecture == "skip") else 0

  @nn.compact
  def __call__(self, x, img, ws, noise_mode: str = "random"):
    if self.architecture != "skip":
      raise NotImplementedError(f"SynthesisBlock: only the 'skip' architecture (EG3D's) is "
                                f"implemented, got {self.architecture!r}")
    if ws.shape[1] != self.num_conv + self.num_torgb:
      raise ValueError(f"SynthesisBlock b{self.resolution}: expected {self.num_conv + self.num_torgb}"
                       f" ws, got {ws.shape[1]}")
    layer = dict(w_dim=self.w_dim, resolution=self.resolution, conv_clamp=self.conv_clamp,
                 fused_modconv=self.fused_modconv, conv_dtype=self.conv_dtype)
    i = 0
    if self.in_channels == 0:
      const = self.param("const", _normal_init(1.0),
                         (self.resolution, self.resolution, self.out_channels))
      x = jnp.broadcast_to(const[None], (ws.shape[0],) + const.shape)
    else:
      x = SynthesisLayer(self.in_channels, self.out_channels, up=2 if self.upsample else 1,
                         name="conv0", **layer)(x, ws[:, i], noise_mode)
      i += 1
    x = SynthesisLayer(self.out_channels, self.out_channels, name="conv1", **layer)(
        x, ws[:, i], noise_mode)
    i += 1
    if img is not None and self.upsample:
      img = upsample2d(img, STANDARD_FILTER)
    if self.is_last or self.architecture == "skip":
      y = ToRGBLayer(self.out_channels, self.img_channels, w_dim=self.w_dim,
                     conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                     conv_dtype=self.conv_dtype, name="torgb")(x, ws[:, i])
      img = y if img is None else img + y
    return x, img


def block_channels(img_resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
  """{resolution: channels} of the StyleGAN2 synthesis blocks (4, 8, ..., img_resolution)."""
  log2 = int(np.log2(img_resolution))
  return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, log2 + 1)}


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] -> image [B, img_resolution, img_resolution, img_channels].

  For EG3D: img_resolution 256, img_channels 96 (the three 32-channel planes).
  """
  w_dim: int
  img_resolution: int
  img_channels: int
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  fused_modconv: bool = False
  conv_dtype: Optional[str] = None

  @property
  def block_resolutions(self) -> list[int]:
    return sorted(block_channels(self.img_resolution, self.channel_base, self.channel_max))

  @property
  def num_ws(self) -> int:
    # Every block's first conv consumes a new w; the last ToRGB adds one more.
    return 1 + 2 * (len(self.block_resolutions) - 1) + 1

  @nn.compact
  def __call__(self, ws, noise_mode: str = "random"):
    if ws.ndim != 3 or ws.shape[1] < self.num_ws or ws.shape[2] != self.w_dim:
      raise ValueError(f"SynthesisNetwork: expected ws [B, {self.num_ws}, {self.w_dim}], got "
                       f"{ws.shape}")
    ch = block_channels(self.img_resolution, self.channel_base, self.channel_max)
    x = img = None
    w_idx = 0
    for res in self.block_resolutions:
      in_ch = ch[res // 2] if res > 4 else 0
      block = SynthesisBlock(in_ch, ch[res], w_dim=self.w_dim, resolution=res,
                             img_channels=self.img_channels, is_last=(res == self.img_resolution),
                             conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                             conv_dtype=self.conv_dtype, name=f"b{res}")
      n = block.num_conv + block.num_torgb
      x, img = block(x, img, ws[:, w_idx:w_idx + n], noise_mode)
      w_idx += block.num_conv
    return img
