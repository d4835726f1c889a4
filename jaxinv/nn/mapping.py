"""StyleGAN2 mapping network with camera conditioning and truncation."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.nn.layers import FullyConnectedLayer, normalize_2nd_moment


def truncate(ws: jax.Array, w_avg: jax.Array, psi, cutoff=None) -> jax.Array:
  """Pulls ``ws [B, num_ws, w_dim]`` towards ``w_avg [w_dim]`` by ``psi`` for the first ``cutoff``.

  Written like ``torch.lerp`` (``a + t (b - a)`` for ``|t| < 0.5``, else ``b - (b - a)(1 - t)``)
  so psi = 1 returns ``ws`` bit for bit. ``psi`` and ``cutoff`` may be traced values, so one
  compiled function serves every truncation setting.
  """
  psi = jnp.asarray(psi, ws.dtype)
  diff = ws - w_avg
  lerped = jnp.where(jnp.abs(psi) < 0.5, w_avg + psi * diff, ws - diff * (1 - psi))
  if cutoff is None:
    return lerped
  keep = jnp.arange(ws.shape[1]) < jnp.asarray(cutoff)
  return jnp.where(keep[None, :, None], lerped, ws)


class MappingNetwork(nn.Module):
  """z [B, z_dim], c [B, c_dim] -> ws [B, num_ws, w_dim].

  Params: ``embed`` (c -> embed_features, when c_dim > 0), ``fc0..fc{num_layers-1}``, and
  ``w_avg [w_dim]`` (the tracked mean w; a buffer officially, kept with the params here).
  """
  z_dim: int
  c_dim: int
  w_dim: int
  num_ws: int
  num_layers: int = 8
  embed_features: Optional[int] = None
  layer_features: Optional[int] = None
  activation: str = "lrelu"
  lr_multiplier: float = 0.01

  @nn.compact
  def __call__(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
    embed_features = self.w_dim if self.embed_features is None else self.embed_features
    if self.c_dim == 0:
      embed_features = 0
    layer_features = self.w_dim if self.layer_features is None else self.layer_features
    features = [self.z_dim + embed_features] + [layer_features] * (self.num_layers - 1) + [self.w_dim]
    x = None
    if self.z_dim > 0:
      x = normalize_2nd_moment(z.astype(jnp.float32))
    if self.c_dim > 0:
      y = FullyConnectedLayer(self.c_dim, embed_features, name="embed")(c.astype(jnp.float32))
      y = normalize_2nd_moment(y)
      x = y if x is None else jnp.concatenate([x, y], axis=1)
    for i in range(self.num_layers):
      x = FullyConnectedLayer(features[i], features[i + 1], activation=self.activation,
                              lr_multiplier=self.lr_multiplier, name=f"fc{i}")(x)
    w_avg = self.param("w_avg", nn.initializers.zeros, (self.w_dim,))
    ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
    return truncate(ws, w_avg, truncation_psi, truncation_cutoff)
