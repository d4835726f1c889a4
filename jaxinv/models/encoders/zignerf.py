"""ZIGNeRF's inverter I_theta (its sec. 3.2, Fig. 3): a residual CNN with four linear heads.

``image [B, R, R, 3] in [-1, 1] -> dict(obj_shape [B, N, Ds], obj_app [B, N, Da], bg_shape [B, Dbs],
bg_app [B, Dba], pose [B, N, 3])``.

Backbone: a 3x3 stem, then per level a residual block (ReLU, no normalisation: the paper's
"stacked residual encoder blocks with ReLU") and a 2x average pool, until 4x4; flattened, one
ReLU FC layer, then the paper's four linear heads (object shape, object appearance, background
shape, background appearance). The paper leaves open how a real image's object pose is found;
jaxinv adds a fifth linear head, ``pose`` = (cos theta, sin theta, camera pitch) per object
(trained with an L1 term on the source pose; ``jaxinv.inversion.zignerf`` reads theta with
``atan2`` and can refine it by a search, see there).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.nn.giraffe import ResBlock

HIGHEST = jax.lax.Precision.HIGHEST


class ZIGNeRFInverter(nn.Module):
  obj_shape_dim: int = 14
  obj_app_dim: int = 5
  bg_shape_dim: int = 1
  bg_app_dim: int = 4
  n_objects: int = 1
  channels: tuple = (32, 64, 128, 128)
  hidden: int = 256

  @nn.compact
  def __call__(self, image):
    if image.ndim != 4 or image.shape[-1] != 3:
      raise ValueError(f"ZIGNeRFInverter: expected image [B, R, R, 3], got {image.shape}")
    levels = int(round(math.log2(image.shape[1] / 4)))
    x = nn.Conv(self.channels[0], (3, 3), padding="SAME", precision=HIGHEST, name="stem")(image)
    for i in range(levels):
      ch = self.channels[min(i, len(self.channels) - 1)]
      x = ResBlock(ch, spectral_norm=False, name=f"block_{i}")(x, False)
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(x).reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, precision=HIGHEST, name="fc")(x))
    b, n = x.shape[0], self.n_objects

    def head(size, name):
      return nn.Dense(size, precision=HIGHEST, name=name)(x)
    return dict(obj_shape=head(n * self.obj_shape_dim, "head_obj_shape").reshape(b, n, -1),
                obj_app=head(n * self.obj_app_dim, "head_obj_app").reshape(b, n, -1),
                bg_shape=head(self.bg_shape_dim, "head_bg_shape"),
                bg_app=head(self.bg_app_dim, "head_bg_app"),
                pose=head(n * 3, "head_pose").reshape(b, n, 3))


def for_generator(gcfg, channels=(32, 64, 128, 128), hidden: int = 256) -> ZIGNeRFInverter:
  """The inverter whose heads match generator config ``gcfg`` (a ``GiraffeConfig``)."""
  return ZIGNeRFInverter(gcfg.obj_shape_dim, gcfg.obj_app_dim, gcfg.bg_shape_dim, gcfg.bg_app_dim,
                         gcfg.n_objects, tuple(channels), hidden)
