"""TriPlaneNet's tri-plane offset encoder (Bhattarai et al., WACV 2024, v1 ``TriPlane_Encoder``).

A U-Net on an IR-SE-50 trunk that maps ``[y_hat, x - y_hat]`` (the first-pass reconstruction and
its residual, 6 channels) to offsets that are added to EG3D's tri-planes.

``x_input: [B, 256, 256, 6] -> offsets [B, 3, 256, 256, 32]`` (``G.planes`` layout: upstream
channel ``c`` of the 96 goes to plane ``c // 32``, feature ``c % 32``).

Decoder (upstream semantics kept exactly; names are the parameter-tree names):
* skips from the trunk: c0 = unit 2 (128^2 x 64), c1 = unit 6 (64^2 x 128), c2 = unit 20
  (32^2 x 256), c3 = unit 21 (16^2 x 512, the *first* stage-4 unit), bottom = unit 23.
* ``up{k}(x1, skip)``: pixel-shuffle ``x1`` by r, concatenate ``[skip, x1]`` (skip first), then
  ``DoubleConv``. up1 r=1 1024->512, up2 r=2 384->384, up3 r=2 224->256, up4 r=2 128->96.
* ``head``: pixel-shuffle 2 (96 -> 24 channels at 256^2); ``final_head``: conv3x3 24->96, PReLU,
  conv3x3 96->96, PReLU, conv1x1 96->96.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.nn.irse import BatchNormInference, IRSEBody, IRSEInputLayer, PReLU, conv2d, irse50_units
from jaxinv.ops.resample import pixel_shuffle

PLANE_CHANNELS = 32
NUM_PLANES = 3
# (upscale factor, output channels) of up1..up4.
UP_SPECS = ((1, 512), (2, 384), (2, 256), (2, 96))


class DoubleConv(nn.Module):
  """``BN(in) -> conv3x3 -> PReLU -> conv3x3 -> PReLU -> PReLU`` (the upstream block really has
  two consecutive PReLUs with separate slopes; converted weights need both)."""
  features: int

  @nn.compact
  def __call__(self, x):
    x = BatchNormInference(name="bn")(x)
    x = conv2d(self.features, 3, 1, 1, use_bias=True, name="conv1")(x)
    x = PReLU(name="prelu1")(x)
    x = conv2d(self.features, 3, 1, 1, use_bias=True, name="conv2")(x)
    x = PReLU(name="prelu2")(x)
    return PReLU(name="prelu3")(x)


class Up(nn.Module):
  """Pixel-shuffle ``x1`` by ``scale``, concatenate ``[skip, x1]``, ``DoubleConv``."""
  features: int
  scale: int = 2

  @nn.compact
  def __call__(self, x1, skip):
    x1 = pixel_shuffle(x1, self.scale)
    return DoubleConv(self.features, name="conv")(jnp.concatenate([skip, x1], axis=-1))


def offsets_to_planes(offsets: jax.Array) -> jax.Array:
  """``[B, H, W, 96]`` (upstream channel order) -> ``[B, 3, H, W, 32]`` (``G.planes`` layout)."""
  b, h, w, c = offsets.shape
  if c != NUM_PLANES * PLANE_CHANNELS:
    raise ValueError(f"offsets_to_planes: expected {NUM_PLANES * PLANE_CHANNELS} channels, got {c}")
  return offsets.reshape(b, h, w, NUM_PLANES, PLANE_CHANNELS).transpose(0, 3, 1, 2, 4)


class TriPlaneEncoder(nn.Module):
  """TriPlaneNet v1 ``TriPlane_Encoder``.

  ``x_input: [B, 256, 256, in_ch] -> offsets [B, 3, 256, 256, 32]``; with
  ``return_features=True`` also ``{'c3', 'body23', 'up1', 'up2', 'raw'}`` where ``raw`` is the
  ``[B, 256, 256, 96]`` head output in upstream channel order.
  """
  in_ch: int = 6

  @nn.compact
  def __call__(self, x_input, return_features: bool = False):
    x = x_input
    if x.ndim != 4 or x.shape[-1] != self.in_ch:
      hint = " (looks channels-first)" if x.ndim == 4 and x.shape[1] == self.in_ch else ""
      raise ValueError(f"TriPlaneEncoder: expected x_input [B, H, W, {self.in_ch}], "
                       f"got shape {x.shape}{hint}")
    if x.shape[1] % 16 or x.shape[2] % 16:
      raise ValueError(f"TriPlaneEncoder: spatial size must be a multiple of 16, got {x.shape[1:3]}")
    h = IRSEInputLayer(64, name="input_layer")(x)
    c0, c1, c2, c3, bottom = IRSEBody(irse50_units(), name="body")(
        h, return_indices=(2, 6, 20, 21, 23))
    t = bottom
    feats = {"c3": c3, "body23": bottom}
    for k, ((r, f), skip) in enumerate(zip(UP_SPECS, (c3, c2, c1, c0)), start=1):
      t = Up(f, r, name=f"up{k}")(t, skip)
      feats[f"up{k}"] = t
    t = pixel_shuffle(t, 2)
    t = conv2d(96, 3, 1, 1, use_bias=True, name="final_conv1")(t)
    t = PReLU(name="final_prelu1")(t)
    t = conv2d(96, 3, 1, 1, use_bias=True, name="final_conv2")(t)
    t = PReLU(name="final_prelu2")(t)
    raw = conv2d(96, 1, 1, 0, use_bias=True, name="final_conv3")(t)
    planes = offsets_to_planes(raw)
    if return_features:
      feats["raw"] = raw
      return planes, feats
    return planes
