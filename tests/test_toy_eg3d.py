"""The toy EG3D task (configs/toy_eg3d.py): config, generator config, on-device world batches.

A full train step compiles the generator's backward pass (minutes on a shared 2-core CPU), so it
is not run here; ``python -m jaxinv.train --config configs/toy_eg3d.py:runlocal`` runs 3 steps.
"""
from __future__ import annotations

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from jaxinv.data import world
from jaxinv.train import tasks

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "toy_eg3d.py"


def _config(arg=None):
  spec = importlib.util.spec_from_file_location("toy_eg3d_config", CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_configs_have_the_loop_fields_and_refuse_unknown_args():
  for arg in (None, "runlocal"):
    c = _config(arg)
    for f in ("task", "total_steps", "batch_size", "seed", "log_every", "checkpoint_every"):
      assert f in c, f
    assert c.task == "toy_eg3d" and c.batch_size % c.views == 0
  assert _config("runlocal").total_steps <= 5
  with pytest.raises(ValueError, match="unknown"):
    _config("res=3")


def test_generator_config_is_a_camera_independent_eg3d_of_the_world():
  from jaxinv.train.tasks import toy_eg3d
  g = toy_eg3d.generator_config(_config().model)
  assert g.z_dim == world.Z_DIM and g.c_gen_conditioning_zero
  assert g.neural_rendering_resolution == 32 and g.img_resolution == 128
  # Every ray of the orbit reaches the world's backdrop inside the rendering range.
  ro = g.render_options
  assert ro.ray_start <= 2.7 - world.BOUND_RADIUS and ro.ray_end >= 2.7 + world.BACKGROUND_RADIUS
  assert ro.box_warp >= 2 * world.BACKGROUND_RADIUS


def test_make_batch_renders_multiview_world_targets_on_device():
  task = tasks.TASKS["toy_eg3d"](_config("runlocal"))
  batch = jax.jit(lambda k: task.make_batch({}, k, 0, None))(jax.random.PRNGKey(0))
  z, c = np.asarray(batch["z"]), np.asarray(batch["c"])
  assert z.shape == (2, world.Z_DIM) and c.shape == (2, 25)
  np.testing.assert_array_equal(z[0], z[1])          # one scene, two views
  assert not np.allclose(c[0], c[1])
  assert batch["image"].shape == (2, 128, 128, 3) and batch["image_raw"].shape == (2, 16, 16, 3)
  m, d = np.asarray(batch["mask"]), np.asarray(batch["depth"])
  assert m.shape == d.shape == (2, 16, 16, 1) and 0 < m.mean() < 1
  assert np.all(np.isfinite(d)) and np.all(d[m == 0] == 0)
  # The targets are the world's own renders at those cameras.
  ref = world.render(z, c, resolution=16)
  np.testing.assert_allclose(np.asarray(batch["image_raw"]), np.asarray(ref["image"]), atol=1e-5)
