"""TriPlaneNet's toy-world config (configs/triplanenet.py:toy): a short run of the training command
on the built-in toy G exports a file that ``jaxinv.invert(method="triplanenet")`` reads, and
inference on it reproduces what the task itself renders for the same image (the encoders read
64 px inputs pooled from the 128 px images in both, BatchNorm on its running statistics)."""
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _toy_runs import short_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import triplanenet as tpn_config  # noqa: E402


def test_toy_config():
  c = tpn_config.get_config("toy")
  assert c.generator.path == "toy" and c.model.size == "toy" and c.model.input_size == 64
  assert c.model.offset_input == "v1"          # the form inference runs
  assert c.losses.loss_resolution == 128 and c.losses.mirror == 0.1
  assert c.losses.lpips_psp == c.losses.id_triplane == 0.0
  assert c.data.synthetic.kind == "uniform" and c.data.synthetic.yaw_range == 1.0
  assert c.model.psp_init == "toy"             # branch 1: the built-in toy pSp, frozen
  assert (c.schedule.add_triplanenet, c.schedule.stop_psp, c.total_steps) == (0, 0, 1000)
  with pytest.raises(ValueError, match="pick one"):
    tpn_config.get_config("runlocal,toy")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  work = tmp_path_factory.mktemp("tpn_toy")
  c = tpn_config.get_config("toy")
  c.batch_size = 2
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
  assert [r["step"] for r in rows] == [1, 2] and rows[1]["tri_active"] == 1.0
  assert all(np.isfinite(r["loss"]) for r in rows)
  out = tmp_path / "tpn.npz"
  assert export_main(["--workdir", str(work), "--out", str(out)]) == 0
  assert export_main(["--workdir", str(work), "--out", str(out)]) == 2   # kept, not overwritten

  enc = jaxinv.load_encoder(out)
  assert type(enc.triplane_model).__name__ == "SmallOffsetEncoder" and enc.psp_model.input_size == 64
  # Branch 1 started from the built-in toy pSp and stayed frozen: its weights are that file's.
  from jaxinv.convert.psp import load_native_encoder, toy_encoder_path
  psp = load_native_encoder(toy_encoder_path("psp")).variables
  jax.tree_util.tree_map(np.testing.assert_array_equal, dict(enc.psp_variables), dict(psp))
  z = world.sample_z(jax.random.PRNGKey(11), 2)
  cam = world.orbit_label(np.array([0.0, 0.4]))
  x = world.render(z, cam, resolution=128)["image"]
  inv = jaxinv.invert(x, pose=cam, method="triplanenet", weights=dict(encoder=str(out)))
  assert inv.offsets.shape == (2, 3, 256, 256, 32)

  # The task's own render of the same image from the same checkpoint (eval mode, key None).
  task = build_task(c)
  init = task.init(jax.random.PRNGKey(0))
  ck = ckpt.load_checkpoint(str(work))
  ms = {**init.model_state, **{k: ck["model_state"][k] for k in ("psp", "triplane")}}
  batch = {"x": x, "c": cam, "x_m": jnp.flip(x, 2), "c_m": cam}
  ref = task.preview(ck["params"], ms, init.frozen, batch)["triplanenet"]
  got = inv.render(cam)["image"]
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-4)
  # and the exported latent average is the generator's
  G = jaxinv.load_generator("toy")
  w_avg = G.params["params"]["backbone"]["mapping"]["w_avg"]
  np.testing.assert_allclose(np.asarray(enc.latent_avg)[3], np.asarray(w_avg), atol=1e-6)


def test_export_refuses_a_nine_channel_run(tmp_path):
  from jaxinv.train.tasks import triplanenet
  c = tpn_config.get_config("toy")
  c.model.offset_input = "paper"
  with pytest.raises(ValueError, match="only 'v1' runs export"):
    triplanenet.export(str(tmp_path), str(tmp_path / "x.npz"), c)


def test_psp_init_refuses_a_missing_or_foreign_file(tmp_path):
  from jaxinv.train.tasks import build_task
  c = tpn_config.get_config("toy")
  c.model.psp_init = str(tmp_path / "none.npz")
  with pytest.raises(FileNotFoundError, match="psp_init: no such file"):
    build_task(c)
  # a pSp file of another shape (the release trunk) does not fit branch 1
  from jaxinv.convert.psp import EncoderCheckpoint, build_encoder, save_native_encoder
  from jaxinv.train.tasks.psp_family import TINY_TAPS, TINY_UNITS
  wider = [list(u) for u in TINY_UNITS[:-1]] + [[48, 96, 2]]   # the last unit wider
  model = build_encoder("psp", 14, units=wider, taps=TINY_TAPS, input_size=64)
  v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  bad = tmp_path / "other.npz"
  save_native_encoder(bad, EncoderCheckpoint("psp", model, v, np.zeros((14, 512), np.float32), {}))
  c.model.psp_init = str(bad)
  with pytest.raises(ValueError, match="branch 1's variables"):
    build_task(c)
  # the toy pSp's network with another latent average: an encoder of another generator
  from jaxinv.convert.psp import load_native_encoder, toy_encoder_path
  ck = load_native_encoder(toy_encoder_path("psp"))
  save_native_encoder(bad, ck._replace(latent_avg=np.zeros((14, 512), np.float32)))
  with pytest.raises(ValueError, match="not this generator's w_avg"):
    build_task(c)
