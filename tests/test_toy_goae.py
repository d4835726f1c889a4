"""GOAE's toy-world configs (configs/goae.py:stage=1,toy and stage=2,toy): short runs of both
training commands on the built-in toy G export the encoder and AFA files that
``jaxinv.invert(method="goae")`` reads, and inference on them reproduces what the stage-2 task
renders for the same image; the toy-encoder export measures each stage."""
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from _toy_runs import short_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import goae as goae_config  # noqa: E402


def test_toy_configs():
  c1, c2 = goae_config.get_config("stage=1,toy"), goae_config.get_config("stage=2,toy")
  for c in (c1, c2):
    assert c.generator.path == "toy" and c.model.encoder == c.model.afa == "toy"
    assert c.data.generated and c.data.synthetic.kind == "uniform"
    assert c.losses.loss_resolution == 128 and c.losses.lpips == c.losses.id == 0.0
    assert c.losses.bg_depth == 0.0   # the toy G renders every ray opaque: no background
  assert (c1.total_steps, c2.total_steps) == (1500, 1000)
  assert c1.progressive.stage_list == (150, 300, 450)
  assert c2.encoder.checkpoint == "runs/goae_toy1"
  with pytest.raises(ValueError, match="pick one"):
    goae_config.get_config("stage=1,runlocal,toy")


def _short(stage, work, **extra):
  c = goae_config.get_config(f"stage={stage},toy")
  c.batch_size = 2
  c.progressive.stage_list = (0, 0, 1)
  for k, v in extra.items():
    c.encoder[k] = v
  return short_run(c, work)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  w1, w2 = tmp_path_factory.mktemp("goae1"), tmp_path_factory.mktemp("goae2")
  c1 = _short(1, w1)
  c2 = _short(2, w2, checkpoint=str(w1))
  return (w1, c1), (w2, c2)


@pytest.mark.slow
def test_exported_toy_runs_invert_as_the_stage2_task_renders(runs, tmp_path):
  import jaxinv
  from jaxinv.data import world
  from jaxinv.train import checkpoint as ckpt
  from jaxinv.train.tasks import build_task
  from jaxinv.train.tasks import toy_encoders
  (w1, c1), (w2, c2) = runs
  for w in (w1, w2):
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
  from jaxinv.train.export import main as export_main
  assert export_main(["--workdir", str(w1), "--out", str(tmp_path / "e.npz")]) == 0
  assert export_main(["--workdir", str(w2), "--out", str(tmp_path / "a.npz")]) == 0
  enc, afa = tmp_path / "toy_goae_encoder.npz", tmp_path / "toy_goae_afa.npz"
  m1 = toy_encoders.export(str(w1), str(enc), num_scenes=2)
  assert m1["stage"] == 1 and m1["stored"] == "float16"
  (tmp_path / "other").mkdir()
  with pytest.raises(FileNotFoundError, match="stage-1 encoder"):
    toy_encoders.export(str(w2), str(tmp_path / "other" / "afa.npz"), num_scenes=2)
  assert not list((tmp_path / "other").iterdir())   # nothing written
  m2 = toy_encoders.export(str(w2), str(afa), num_scenes=2, half=False)
  assert m2["stage"] == 2 and m2["encoder_file"] == enc.name
  assert json.loads(afa.with_suffix(".json").read_text())["heldout_metrics"] == json.loads(
      json.dumps(m2["heldout_metrics"]))

  z = world.sample_z(jax.random.PRNGKey(13), 2)
  cam = world.orbit_label(np.array([0.0, 0.5]))
  x = world.render(z, cam, resolution=128)["image"]
  # the stage-2 task renders with the run's own (float32) stage-1 encoder: train.export's file
  enc32 = tmp_path / "e.npz"
  from jaxinv.inversion import goae as gi
  goae = gi.load_goae(str(enc32), str(afa))
  G = jaxinv.load_generator("toy")
  out = gi.forward(goae, G, x, cam)
  task = build_task(c2)
  init = task.init(jax.random.PRNGKey(0))
  ck = ckpt.load_checkpoint(str(w2))
  ref = task.preview(ck["params"], init.model_state, init.frozen, {"image": x, "c": cam})
  # stage 2 trains on the refined tri-plane's input view (stage2.render='refined'), which is
  # inference's ``image``; the inversion keeps the occlusion-mixed planes for other views.
  # (the preview clips to [-1, 1])
  np.testing.assert_allclose(np.clip(out["image"], -1, 1), np.asarray(ref["reconstruction"]),
                             atol=2e-4)
  np.testing.assert_allclose(np.clip(out["image_w"], -1, 1), np.asarray(ref["reconstruction_w"]),
                             atol=2e-4)
  inv = jaxinv.invert(x, pose=cam, method="goae", weights=dict(encoder=str(enc32), afa=str(afa)))
  np.testing.assert_allclose(np.asarray(inv.ws), np.asarray(out["ws"]), atol=1e-5)
  # jit vs eager: the mask's blur moves a few texels at its edge by ~2e-4
  np.testing.assert_allclose(np.asarray(inv.planes), np.asarray(out["planes"]), rtol=1e-4,
                             atol=1e-3)
