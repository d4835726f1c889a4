"""GOAE training (``configs/goae.py``, both stages) on the one train loop.

The fast tests check the pieces (progressive rows, ``D_avg`` accumulation, configs). The heavy
ones run ``configs/goae.py:stage=1,runlocal`` and ``stage=2,runlocal`` (tiny random EG3D, tiny
Swin / AFA, images generated on device) in ONE subprocess (``_goae_train_run.py``): per stage a
straight run and a run resumed from its mid checkpoint through the loop; stage 2 reads the
stage-1 run's encoder.
"""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.inversion import goae as gi
from jaxinv.losses import goae as L
from jaxinv.train.tasks import goae as task_goae

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "configs"))
import goae as goae_config  # noqa: E402

STEPS1, STEPS2 = 30, 16


# ------------------------------------------------------------------------------ fast pieces

def test_progressive_levels_and_rows():
  stage_list = (4, 8, 12)
  assert [int(task_goae.progressive_level(s, stage_list)) for s in (0, 3, 4, 7, 8, 12, 99)] == \
      [0, 0, 1, 1, 2, 3, 3]
  np.testing.assert_array_equal(task_goae.row_levels((1, 3, 3, 7)),
                                [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3])
  np.testing.assert_array_equal(task_goae.group_start_rows((1, 3, 3, 7)), [0, 1, 4, 7])


def test_select_levels_switches_deltas_off():
  split = (1, 2, 2, 3)
  ws = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 4))
  base = jnp.broadcast_to(ws[:, :1], ws.shape) - 1.0
  np.testing.assert_array_equal(task_goae.select_levels(ws, base, split, 3), ws)
  for lvl in range(3):
    out = np.asarray(jax.jit(task_goae.select_levels, static_argnums=2)(ws, base, split, lvl))
    on = task_goae.row_levels(split) <= lvl
    assert on.sum() == sum(split[:lvl + 1])
    np.testing.assert_array_equal(out[:, on], np.asarray(ws)[:, on])
    np.testing.assert_array_equal(out[:, ~on], np.asarray(base)[:, ~on])


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class _FakeG:
  """A stand-in generator: ws = z; depth 2 + |z_0| + pixel offsets; fixed opacity pattern."""
  scale: jax.Array
  z_dim: int = 3

  def tree_flatten(self):
    return (self.scale,), self.z_dim

  @classmethod
  def tree_unflatten(cls, z_dim, children):
    return cls(children[0], z_dim)

  def mapping(self, z, c, truncation_psi=1.0):
    return jnp.broadcast_to(z[:, None, :] * self.scale, (z.shape[0], 2, self.z_dim))

  def synthesis(self, ws, c, key=None, neural_rendering_resolution=None):
    b = ws.shape[0]
    depth = 2 + jnp.abs(ws[:, 0, 0])[:, None, None, None] + jnp.array([[0.0, 0.1], [0.2, 0.3]])[
        None, :, :, None]
    wsum = jnp.broadcast_to(jnp.array([[0.9, 0.1], [0.2, 0.8]])[None, :, :, None], (b, 2, 2, 1))
    return dict(image_depth=depth, weights_sum=wsum)


def test_average_background_depth_accumulates_every_batch():
  G = _FakeG(jnp.float32(1.0))
  key = jax.random.PRNGKey(7)
  d = gi.average_background_depth(G, key, num_samples=5, batch_size=2, mask_threshold=0.5)
  # By hand: ceil(5 / 2) = 3 batches of 2, the same key splits; background = pixels (0,1), (1,0).
  total, count = 0.0, 0
  for k in jax.random.split(key, 3):
    kz, _ = jax.random.split(k)
    z0 = np.asarray(jax.random.normal(kz, (2, 3)))[:, 0]
    for v in z0:
      total += (2 + abs(v) + 0.1) + (2 + abs(v) + 0.2)
      count += 2
  np.testing.assert_allclose(d, total / count, rtol=1e-6)
  # The same rule as the training term's mask.
  wsum = G.synthesis(jnp.zeros((1, 2, 3)), None)["weights_sum"]
  np.testing.assert_array_equal(L.background_mask(wsum)[0, ..., 0], [[0, 1], [1, 0]])


def test_configs():
  for arg in ("stage=1", "stage=2", "stage=1,runlocal", "stage=2,runlocal"):
    c = goae_config.get_config(arg)
    for f in ("total_steps", "batch_size", "seed", "log_every", "checkpoint_every"):
      assert f in c
    assert c.task == "goae"
  c = goae_config.get_config("stage=1")
  assert (c.losses.l2, c.losses.lpips, c.losses.id, c.losses.adv, c.losses.bg_depth,
          c.losses.w_delta, c.losses.delta_f) == (1.0, 0.8, 0.25, 0.05, 5.0, 0.001, 1e-4)
  assert c.latent_d.r1_gamma == 10.0 and tuple(c.progressive.stage_list) == (10000, 20000, 30000)
  assert goae_config.get_config("stage=2").losses.stage2_latent_d == 0.0
  with pytest.raises(ValueError, match="stage"):
    goae_config.get_config("stage=3")
  with pytest.raises(ValueError, match="unknown"):
    goae_config.get_config("stage=1,res=3")
  # Without runlocal, missing files are clear errors naming the field.
  with pytest.raises(FileNotFoundError, match="generator.path"):
    task_goae.build(goae_config.get_config("stage=1"))
