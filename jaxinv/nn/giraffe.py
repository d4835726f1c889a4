"""Flax layers of the GIRAFFE-style compositional generator (ZIGNeRF): feature fields, the neural
renderer and the residual blocks its renderer and discriminator share.

Parameters only; the rendering maths (transforms, composition, volume rendering) is in
``jaxinv/models/giraffe.py``. Spectral normalisation is Flax's ``nn.SpectralNorm`` (one power
iteration per training call, its ``u`` / ``sigma`` in the ``batch_stats`` collection); callers
pass ``update_stats`` explicitly.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def positional_encoding(x: jax.Array, num_frequencies: int) -> jax.Array:
  """NeRF's gamma: ``[..., D] -> [..., D * (1 + 2 L)]`` = (x, sin(2^k pi x), cos(2^k pi x)), k < L."""
  if num_frequencies == 0:
    return x
  freqs = (2.0 ** jnp.arange(num_frequencies, dtype=jnp.float32)) * jnp.pi
  xf = x[..., None, :] * freqs[:, None]                         # [..., L, D]
  enc = jnp.concatenate([jnp.sin(xf), jnp.cos(xf)], axis=-2)     # [..., 2L, D]
  return jnp.concatenate([x, enc.reshape(x.shape[:-1] + (-1,))], axis=-1)


def _dense(features: int, name: str):
  return nn.Dense(features, precision=HIGHEST, name=name)


class FeatureField(nn.Module):
  """GIRAFFE's decoder f_theta: ``(gamma(p), gamma(d), z_shape, z_app) -> (sigma, feature)``.

  As GIRAFFE's ``Decoder``: ``num_layers`` ReLU FC layers of ``hidden`` units on gamma(p); z_shape
  is added after the first layer; at ``skip`` (if any) z_shape and gamma(p) are added again; the
  density head reads the last layer; z_app is added after it, then one view-dependent layer (on
  gamma(d)) and the feature head.

  Inputs: points ``[B, P, 3]`` (already in the field's own frame and scale), dirs ``[B, P, 3]``,
  z_shape ``[B, Ds]``, z_app ``[B, Da]`` (broadcast over P). Returns sigma ``[B, P]`` (raw, before
  the density activation) and features ``[B, P, feature_dim]``.
  """
  hidden: int = 64
  num_layers: int = 4
  skip: int | None = None
  feature_dim: int = 32
  freq_points: int = 10
  freq_dirs: int = 4

  @nn.compact
  def __call__(self, points, dirs, z_shape, z_app):
    gp = positional_encoding(points, self.freq_points)
    gd = positional_encoding(dirs, self.freq_dirs)
    h = nn.relu(_dense(self.hidden, "fc_in")(gp) + _dense(self.hidden, "fc_z_shape")(z_shape)[:, None])
    for i in range(self.num_layers - 1):
      h = _dense(self.hidden, f"fc_{i}")(h)
      if self.skip is not None and i + 1 == self.skip:
        h = h + _dense(self.hidden, f"skip_z_{i}")(z_shape)[:, None] + _dense(
            self.hidden, f"skip_p_{i}")(gp)
      h = nn.relu(h)
    sigma = _dense(1, "sigma_out")(h)[..., 0]
    h = _dense(self.hidden, "feat_view")(h) + _dense(self.hidden, "fc_z_app")(z_app)[:, None]
    h = nn.relu(h + _dense(self.hidden, "fc_dir")(gd))
    return sigma, _dense(self.feature_dim, "feat_out")(h)


class SNConv(nn.Module):
  """A spectrally normalised convolution (``nn.SpectralNorm`` around ``nn.Conv``, NHWC)."""
  features: int
  kernel: int = 3
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, x, update_stats: bool):
    conv = nn.Conv(self.features, (self.kernel, self.kernel), padding="SAME", precision=HIGHEST)
    if not self.spectral_norm:
      return conv(x)
    return nn.SpectralNorm(conv, n_steps=1)(x, update_stats=update_stats)


class ResBlock(nn.Module):
  """Residual block: ``x + conv(relu(conv(relu(x))))`` with a 1x1 shortcut when widths differ;
  ReLU and spectral norm (ZIGNeRF's change to GIRAFFE's renderer and discriminator)."""
  features: int
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, x, update_stats: bool):
    h = SNConv(self.features, 3, self.spectral_norm, name="conv_0")(nn.relu(x), update_stats)
    h = SNConv(self.features, 3, self.spectral_norm, name="conv_1")(nn.relu(h), update_stats)
    if x.shape[-1] != self.features:
      x = SNConv(self.features, 1, self.spectral_norm, name="shortcut")(x, update_stats)
    return x + h


def _upsample_nearest(x):
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


def _upsample_bilinear(x):
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")


class NeuralRenderer(nn.Module):
  """pi_theta: feature image ``[B, r, r, M_f]`` -> RGB ``[B, R, R, 3]`` in [-1, 1], R = r * 2^n.

  GIRAFFE's renderer with ZIGNeRF's changes: every upsampling block is nearest-neighbour x2 then
  a residual block (ReLU, spectral norm) halving the channels (at least ``min_channels``); RGB
  skips as GIRAFFE (an RGB head at every level, the running RGB upsampled bilinearly and added);
  a final sigmoid, mapped to [-1, 1].
  """
  num_upsamples: int = 2
  channels: int = 64
  min_channels: int = 16
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, features, update_stats: bool):
    x = SNConv(self.channels, 1, self.spectral_norm, name="conv_in")(features, update_stats)
    rgb = SNConv(3, 3, self.spectral_norm, name="rgb_0")(x, update_stats)
    ch = self.channels
    for i in range(self.num_upsamples):
      ch = max(ch // 2, self.min_channels)
      x = ResBlock(ch, self.spectral_norm, name=f"block_{i}")(_upsample_nearest(x), update_stats)
      rgb = _upsample_bilinear(rgb) + SNConv(3, 3, self.spectral_norm, name=f"rgb_{i + 1}")(
          x, update_stats)
    return jax.nn.sigmoid(rgb) * 2.0 - 1.0


class ResidualDiscriminator(nn.Module):
  """ZIGNeRF's discriminator: residual blocks with spectral norm, average-pool downsampling,
  a linear head. ``image [B, R, R, 3] -> logits [B]``."""
  channels: tuple = (32, 64, 128, 128)
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, image, update_stats: bool):
    x = SNConv(self.channels[0], 3, self.spectral_norm, name="conv_in")(image, update_stats)
    for i, ch in enumerate(self.channels):
      x = ResBlock(ch, self.spectral_norm, name=f"block_{i}")(x, update_stats)
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(x).reshape(x.shape[0], -1)
    head = nn.Dense(1, precision=HIGHEST)
    if self.spectral_norm:
      return nn.SpectralNorm(head, n_steps=1)(x, update_stats=update_stats)[:, 0]
    return head(x)[:, 0]
