"""Shared by the ``test_invert_*`` modules: ONE tiny EG3D per process (slow to build), a target
rendered by it, and tiny stand-in encoders with the released encoders' call signatures."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.models.eg3d import tiny_eg3d
from jaxinv.models.encoders.triplanenet import offsets_to_planes
from jaxinv.ops.pooling import adaptive_avg_pool2d
from jaxinv.render.camera import Camera

NRR = 16


@functools.lru_cache(maxsize=None)
def setup():
  """``(G, c [2, 25], target [2, 128, 128, 3])``: G's own renders of two random codes."""
  G = tiny_eg3d(0, neural_rendering_resolution=NRR)
  c = jnp.concatenate([Camera.look_at(0.3, 0.05).label, Camera.look_at(-0.2, -0.05).label])
  ws = G.mapping(jax.random.normal(jax.random.PRNGKey(1), (2, G.z_dim)), c)
  target = jnp.clip(G.synthesis(ws, c)["image"], -1, 1)
  return G, c, target


class TinyCodes(nn.Module):
  """Stand-in pSp-family encoder: ``x [B, 256, 256, in_ch] -> codes [B, n_styles, 512]``."""
  n_styles: int = 14

  @nn.compact
  def __call__(self, x):
    h = adaptive_avg_pool2d(x, 4).reshape(x.shape[0], -1)
    out = nn.Dense(self.n_styles * 512, kernel_init=nn.initializers.normal(0.05))(h)
    return out.reshape(-1, self.n_styles, 512)


class TinyOffsets(nn.Module):
  """Stand-in TriPlaneNet U-Net: ``[B, 256, 256, 6] -> offsets [B, 3, 256, 256, 32]``."""

  @nn.compact
  def __call__(self, x):
    return offsets_to_planes(nn.Conv(96, (1, 1), kernel_init=nn.initializers.normal(0.01))(x))


@functools.lru_cache(maxsize=None)
def psp_checkpoint():
  from jaxinv.convert.psp import EncoderCheckpoint
  m = TinyCodes()
  v = m.init(jax.random.PRNGKey(5), jnp.zeros((1, 256, 256, 3)))
  return EncoderCheckpoint("GradualStyleEncoder", m, v, None, {})


@functools.lru_cache(maxsize=None)
def triplanenet_checkpoint():
  from jaxinv.convert.triplanenet import TriPlaneNetCheckpoint
  t = TinyOffsets()
  tv = t.init(jax.random.PRNGKey(6), jnp.zeros((1, 256, 256, 6)))
  ck = psp_checkpoint()
  return TriPlaneNetCheckpoint(ck.model, ck.variables, t, tv, {}, {})


@functools.lru_cache(maxsize=None)
def goae_model():
  from _goae_helpers import random_variables, tiny_afa_config, tiny_encoder_config
  from jaxinv.inversion import goae as gi
  from jaxinv.models.encoders.goae import AFA, GOAEncoder
  G, _, _ = setup()
  ecfg = tiny_encoder_config(w_dim=512, ws_split=(1, 3, 3, 7))
  acfg = tiny_afa_config(feat_dim=gi._feature_channels(G))
  s = ecfg.swin.img_size
  r = G.config.img_resolution
  enc = random_variables(GOAEncoder(ecfg).init, jnp.zeros((1, s, s, 3)), seed=1)
  z = jnp.zeros((1, r, r, 3))
  afa = random_variables(AFA(acfg).init, z, z, jnp.zeros((1, 32, 32, acfg.feat_dim)), seed=2)
  return gi.GOAE(ecfg, acfg, enc, afa)
