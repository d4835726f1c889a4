"""NeRF-3DE's toy-world config (configs/nerf3de.py:toy): a short run of the training command on
the built-in toy G exports a native file that ``jaxinv.invert(method="nerf3de")`` reads, and
inference on it reproduces what the task itself renders for the same image (64 px encoder inputs
pooled from the 128 px images in both); the file format refuses what it cannot rebuild."""
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from _toy_runs import short_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import nerf3de as n3_config  # noqa: E402


def test_toy_config():
  c = n3_config.get_config("toy")
  assert c.generator.path == "toy" and c.model.backbone == "small" and c.model.input_size == 64
  assert c.losses.loss_resolution == 128 and c.losses.lpips == c.losses.id == 0.0
  assert c.data.truncation_psi == 1.0 and c.data.poses.yaw_deg == 57.3
  assert (c.schedule.refiner_start, c.total_steps, c.batch_size) == (1500, 3000, 8)
  with pytest.raises(ValueError, match="pick one"):
    n3_config.get_config("runlocal,toy")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  work = tmp_path_factory.mktemp("n3_toy")
  c = n3_config.get_config("toy")
  c.batch_size, c.data.identities, c.data.views = 4, 2, 2
  c.losses.margin_samples = 64
  c.schedule.refiner_start = 1
  c.schedule.freeze_base = False   # both encoders take a step
  return work, short_run(c, work)


@pytest.mark.slow
def test_exported_toy_run_inverts_as_the_task_renders(toy_run, tmp_path):
  import jaxinv
  from jaxinv.data import world
  from jaxinv.train import checkpoint as ckpt
  from jaxinv.train.export import main as export_main
  from jaxinv.train.tasks import build_task
  work, c = toy_run
  rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2] and rows[1]["ref_active"] == 1.0
  assert all(np.isfinite(r["loss"]) for r in rows)
  out = tmp_path / "n3.npz"
  assert export_main(["--workdir", str(work), "--out", str(out)]) == 0

  model, params = jaxinv.load_encoder(out)
  assert model.config.input_size == 64 and model.config.backbone == "small"
  z = world.sample_z(jax.random.PRNGKey(12), 2)
  cam = world.orbit_label(np.array([0.0, -0.4]))
  x = world.render(z, cam, resolution=128)["image"]
  inv = jaxinv.invert(x, pose=cam, method="nerf3de", weights=dict(encoder=str(out)))

  task = build_task(c)
  init = task.init(jax.random.PRNGKey(0))
  ck = ckpt.load_checkpoint(str(work))
  ref = task.preview(ck["params"], {}, init.frozen, {"x": x, "c": cam})["nerf3de"]
  np.testing.assert_allclose(np.asarray(inv.render(cam)["image"]), np.asarray(ref), atol=2e-4)
  G = jaxinv.load_generator("toy")
  np.testing.assert_allclose(np.asarray(params["w_avg"]),
                             np.asarray(G.params["params"]["backbone"]["mapping"]["w_avg"]),
                             atol=1e-6)


def test_native_file_round_trips_and_refuses_a_mismatch(tmp_path):
  from jaxinv.inversion import nerf3de as n3
  from jaxinv.models.encoders.nerf3de import NeRF3DEConfig
  model = n3.NeRF3DE.build(NeRF3DEConfig(num_ws=3, w_dim=16, input_size=32, backbone="small",
                                         small_widths=(16, 16)))
  params = model.init(jax.random.PRNGKey(0))
  n3.save(tmp_path / "a.npz", model, params)
  back_model, back = n3.load(tmp_path / "a.npz")
  assert back_model.config == model.config
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="missing"):
    n3.save(tmp_path / "b.npz", model, {"base": params["base"]})
  other = n3.NeRF3DE.build(NeRF3DEConfig(num_ws=4, w_dim=16, input_size=32, backbone="small",
                                         small_widths=(16, 16)))
  from jaxinv.convert.common import load_native, save_native
  import dataclasses
  save_native(tmp_path / "c.npz", n3.NATIVE_KIND, dataclasses.asdict(other.config), params)
  with pytest.raises(ValueError, match="NeRF-3DE parameters"):
    n3.load(tmp_path / "c.npz")
  assert load_native(tmp_path / "a.npz")[0] == "nerf3de"
