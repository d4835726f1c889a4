"""A trained pSp-family run exported to the native encoder file that inference reads."""
import json

import jax
import numpy as np
import pytest

import jaxinv
from jaxinv.train import export as export_lib
from jaxinv.train import load_checkpoint, train_and_evaluate
from jaxinv.train.tasks import psp_family as F
from jaxinv.train.tasks.psp_configs import psp_family_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("psp_export")
  c = psp_family_config("psp", "runlocal")
  c.total_steps, c.log_every, c.checkpoint_every, c.preview_every, c.progress = 2, 1, 2, 0, False
  train_and_evaluate(c, str(wd))
  return wd, c


@pytest.mark.slow
def test_exported_encoder_is_the_trained_one_in_eval_mode(run, tmp_path, capsys):
  wd, c = run
  assert json.loads((wd / "config.json").read_text())["task"] == "psp"
  out = tmp_path / "enc.npz"
  assert export_lib.main(["--workdir", str(wd), "--out", str(out)]) == 0
  ck = jaxinv.load_encoder(str(out))
  trained = load_checkpoint(str(wd))
  G = F.build_generator(c)
  enc, size = F.make_encoder(c, "psp", G.num_ws)
  x = jax.random.uniform(jax.random.PRNGKey(3), (2, size, size, 3), minval=-1, maxval=1)
  want = enc.apply({"params": trained["params"]["encoder"], **trained["model_state"]}, x)
  got = ck.model.apply(ck.variables, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(ck.latent_avg[3], np.asarray(F.w_avg_of(G)))
  # jaxinv.invert reads it: the encoder sees the image pooled to its own 64 px input.
  img = jax.random.uniform(jax.random.PRNGKey(4), (1, 128, 128, 3), minval=-1, maxval=1)
  cam = jaxinv.Camera.look_at(0.0, 0.0).label
  inv = jaxinv.invert(img, cam, method="psp", weights={"generator": G, "encoder": str(out)})
  assert inv.ws.shape == (1, G.num_ws, 512) and np.all(np.isfinite(np.asarray(inv.ws)))
  # Errors: one line, nothing overwritten.
  assert export_lib.main(["--workdir", str(wd), "--out", str(out)]) == 2
  assert "already exists" in capsys.readouterr().err
  assert export_lib.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
  assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["psp", "e4e", "preim3d"])
def test_invert_feeds_an_exported_encoder_the_input_size_it_was_trained_on(task, tmp_path):
  # A toy encoder reads 64 px images; the file must say so and jaxinv.invert must pool to it
  # (PREIM3D's W+ encoder takes any size, so a lost input_size fed it 256 px without an error).
  from jaxinv.convert import psp as psp_convert
  from jaxinv.ops.pooling import adaptive_avg_pool2d
  c = psp_family_config(task, "runlocal")
  G = F.build_generator(c)
  enc, size = F.make_encoder(c, F.KINDS[task], G.num_ws)
  assert size == 64
  params, state = F.init_encoder(c, enc, size, jax.random.PRNGKey(0))
  variables = {"params": params, **state}
  path = tmp_path / f"{task}.npz"
  latent_avg = np.zeros((G.num_ws, 512), np.float32)
  psp_convert.save_native_encoder(path, psp_convert.EncoderCheckpoint(
      F.ENCODER_TYPES[task], enc, variables, latent_avg, {}))
  assert jaxinv.load_encoder(str(path)).model.input_size == 64
  r = G.config.img_resolution
  img = jax.random.uniform(jax.random.PRNGKey(4), (1, r, r, 3), minval=-1, maxval=1)
  cam = jaxinv.Camera.look_at(0.0, 0.0).label
  inv = jaxinv.invert(img, cam, method=task, weights={"generator": G, "encoder": str(path)})
  want = enc.apply(variables, adaptive_avg_pool2d(img, (64, 64)) if r > 64 else img)
  np.testing.assert_allclose(np.asarray(inv.ws), np.asarray(want), rtol=1e-5, atol=1e-5)
