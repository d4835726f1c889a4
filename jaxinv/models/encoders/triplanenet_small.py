"""A small stand-in for TriPlaneNet's tri-plane offset U-Net, for CPU smoke runs and tests.

Same contract as :class:`jaxinv.models.encoders.triplanenet.TriPlaneEncoder`:
``x_input [B, S, S, in_ch] -> offsets [B, 3, P, P, 32]`` (``G.planes`` layout), with ``in_ch`` 6
(v1: ``[y_hat, x - y_hat]``) or 9 (paper / v2: ``+ x_m - y_hat_m``) and ``P`` the tri-plane size
(256 for EG3D). Architecture: two IR-SE units (stride 2 each), a bilinear resize to ``P``, a
3x3 conv + PReLU and a 1x1 conv to the 96 plane channels.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.models.encoders.triplanenet import NUM_PLANES, PLANE_CHANNELS, offsets_to_planes
from jaxinv.nn.irse import BottleneckIRSE, IRSEInputLayer, PReLU, conv2d


class SmallOffsetEncoder(nn.Module):
  in_ch: int = 6
  width: int = 16
  plane_resolution: int = 256

  @nn.compact
  def __call__(self, x_input):
    if x_input.ndim != 4 or x_input.shape[-1] != self.in_ch:
      raise ValueError(f"SmallOffsetEncoder: expected x_input [B, H, W, {self.in_ch}], "
                       f"got {x_input.shape}")
    h = IRSEInputLayer(self.width, name="input_layer")(x_input)
    h = BottleneckIRSE(self.width, 2, name="down1")(h)
    h = BottleneckIRSE(2 * self.width, 2, name="down2")(h)
    p = self.plane_resolution
    h = jax.image.resize(h, (h.shape[0], p, p, h.shape[-1]), "linear")
    h = PReLU(name="prelu")(conv2d(self.width, 3, 1, 1, use_bias=True, name="conv")(h))
    raw = conv2d(NUM_PLANES * PLANE_CHANNELS, 1, 1, 0, use_bias=True, name="out")(h)
    return offsets_to_planes(raw)
