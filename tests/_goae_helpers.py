"""Small GOAE configurations and cheap random variables for the GOAE tests.

``jax.jit(model.init)`` of even a tiny Swin costs tens of seconds of compilation (one RNG
initialiser per leaf); filling the abstract tree from ``jax.eval_shape`` with numpy is instant.
"""
import math

import jax
import numpy as np

from jaxinv.models.encoders.goae import AFAConfig, GOAEncoderConfig
from jaxinv.nn.irse import irse_units
from jaxinv.nn.swin import SwinV2Config


def tiny_encoder_config(w_dim=16, ws_split=(1, 2, 2, 3)):
  """64x64 input, 16/8/4/2 token maps (stage 0 shifts), 4 query tokens."""
  return GOAEncoderConfig(
      swin=SwinV2Config(img_size=64, embed_dim=8, depths=(2, 1, 1, 1), num_heads=(1, 1, 2, 2),
                        window_size=4, pretrained_window_sizes=(3, 3, 3, 2)),
      w_dim=w_dim, ws_split=ws_split, ca_heads=2, ca_ffn=16)


def tiny_afa_config(feat_dim=16):
  return AFAConfig(units=irse_units(((16, 1), (16, 1), (32, 1)), in_ch=16), stem=16,
                   feat_dim=feat_dim, num_heads=2, ffn_dim=16)


def random_variables(init, *args, seed=0):
  """Variables shaped like ``init(key, *args)``, drawn with numpy (He-scaled kernels)."""
  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = str(getattr(path[-1], "key", path[-1]))
    shape = s.shape
    if name == "var":
      v = rng.uniform(0.5, 1.5, shape)
    elif name == "scale":
      v = 1 + 0.1 * rng.standard_normal(shape)
    elif name == "logit_scale":
      v = math.log(10) + 0.1 * rng.standard_normal(shape)
    elif name == "alpha":
      v = np.full(shape, 0.25)
    elif name in ("kernel", "weight") and len(shape) >= 2:
      fan_in = int(np.prod(shape[:-1]))
      # EqualConv2d applies 1/sqrt(fan_in) itself.
      v = rng.standard_normal(shape) * (1.0 if name == "weight" else 1 / math.sqrt(fan_in))
    else:
      v = 0.1 * rng.standard_normal(shape)
    return np.asarray(v, np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)
