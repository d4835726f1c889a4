"""The shipped toy models (jaxinv/assets): manifests, the size budget, and a floor on held-out z.

The floors are the manifest's own held-out measurement minus a small margin (a few fixed held-out
scenes here vs. the manifest's larger set), so a broken loader, a config mismatch or a corrupted
file fails, while the number the manifest reports is what a user gets.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

import jaxinv
from jaxinv.data import world

ASSETS = pathlib.Path(jaxinv.__file__).resolve().parent / "assets"
TOY = ASSETS / "toy_eg3d.npz"
BUDGET_BYTES = 40 * 1024 * 1024


def test_assets_fit_the_budget_and_every_file_has_a_manifest():
  files = sorted(p for p in ASSETS.glob("*") if p.is_file()) if ASSETS.is_dir() else []
  assert sum(p.stat().st_size for p in files) <= BUDGET_BYTES
  for p in files:
    if p.suffix == ".npz":
      m = json.loads(p.with_suffix(".json").read_text())
      for k in ("config", "training_command", "commit", "steps", "heldout_metrics"):
        assert k in m, (p.name, k)
      assert m["size_bytes"] == p.stat().st_size


@pytest.fixture(scope="module")
def toy():
  if not TOY.is_file():
    pytest.skip(f"{TOY} is not shipped in this checkout")
  return jaxinv.load_generator("toy"), json.loads(TOY.with_suffix(".json").read_text())


def test_toy_generator_reproduces_the_world_on_held_out_scenes(toy):
  from jaxinv.train.tasks import toy_eg3d
  G, manifest = toy
  assert G.z_dim == world.Z_DIM
  m = toy_eg3d.evaluate(G, num_scenes=4, yaws=(-0.4, 0.0, 0.4), batch=4)
  ref = manifest["heldout_metrics"]
  assert m["psnr"] >= ref["psnr"] - 1.5, (m, ref)
  assert m["depth_l1"] <= ref["depth_l1"] * 1.5 + 0.005, (m, ref)
  # And it is a trained model, not a random one (a random-init G of this config scores ~3 dB).
  assert m["psnr"] > 12.0 and np.isfinite(m["depth_l1"])


def test_toy_generator_carries_the_mean_of_its_mapping(toy):
  # w_avg is the truncation centre and every toy encoder's latent_avg: the export measures it
  # (100k z); 20k other draws agree to ~0.1 % of its norm (a file with w_avg = 0 is off by 100 %).
  from jaxinv.train.tasks import toy_eg3d
  G, _ = toy
  w = np.asarray(G.params["params"]["backbone"]["mapping"]["w_avg"])
  est = toy_eg3d.measure_w_avg(G, num=20_000, seed=1)
  assert np.linalg.norm(w - est) < 0.01 * np.linalg.norm(est), (np.linalg.norm(w - est),
                                                                np.linalg.norm(est))


def test_load_generator_names_the_missing_file_when_not_shipped(monkeypatch, tmp_path):
  import importlib.resources
  monkeypatch.setattr(importlib.resources, "files", lambda pkg: tmp_path)
  with pytest.raises(FileNotFoundError, match="toy_eg3d"):
    jaxinv.load_generator("toy")


@pytest.mark.slow
def test_a_short_run_of_the_training_command_reproduces_the_manifests_first_losses(tmp_path):
  """The manifest's training command, cut to its first logged step, logs the same losses."""
  import importlib.util
  from jaxinv.train import train_and_evaluate
  if not TOY.is_file():
    pytest.skip(f"{TOY} is not shipped in this checkout")
  manifest = json.loads(TOY.with_suffix(".json").read_text())
  spec = importlib.util.spec_from_file_location(
      "toy_cfg", pathlib.Path(__file__).resolve().parents[1] / "configs" / "toy_eg3d.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  assert c.to_dict() == manifest["config"]      # the shipped model's config is the file's
  first = manifest["first_logged"]
  c.total_steps = c.checkpoint_every = int(first["step"])   # the LR schedule keeps decay_steps
  c.preview_every = 0
  train_and_evaluate(c, str(tmp_path))
  rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  row = next(r for r in rows if r["step"] == first["step"])
  for k in ("loss", "image_mse", "image_raw_mse", "depth_l1", "opacity_l1"):
    assert row[k] == pytest.approx(first[k], rel=2e-3), k


from jaxinv.convert.psp import TOY_ENCODERS, toy_encoder_path  # noqa: E402

SHIPPED = [m for m in TOY_ENCODERS if toy_encoder_path(m) is not None]
NOT_SHIPPED = [m for m in TOY_ENCODERS if m not in SHIPPED]


def _manifest(method):
  path = toy_encoder_path(method)
  path = path[-1] if isinstance(path, tuple) else path   # GOAE: the stage-2 (AFA) file's
  return json.loads(pathlib.Path(path).with_suffix(".json").read_text())


def _explicit_weights(method):
  path = toy_encoder_path(method)
  return dict(encoder=path[0], afa=path[1]) if method == "goae" else dict(encoder=path)


def test_psp_ships():
  assert "psp" in SHIPPED   # the floor tests below are parametrised over what ships


@pytest.mark.parametrize("method", SHIPPED)
def test_builtin_encoder_inverts_held_out_scenes_with_weights_none(method):
  # weights=None means the toy G *and* the method's built-in encoder: the manifest's held-out
  # numbers (16 scenes) hold on 8 of the same scenes (the first 4 alone sit 1-1.5 dB below the
  # 16-scene mean for pSp, e4e and PREIM3D), and the encoder beats the mean latent.
  from jaxinv.train.tasks import toy_encoders
  man = _manifest(method)
  assert man["method"] == method and man["steps"] > 0
  assert man["config"]["generator"]["path"] == "toy"
  m = toy_encoders.evaluate(method, None, num_scenes=8, batch=8, offsets=(0.0, 0.6))
  ref = man["heldout_metrics"]
  for off in ("+0.0", "+0.6"):
    assert m["inversion"][off]["psnr"] >= ref["inversion"][off]["psnr"] - 1.5, (off, m, ref)
  assert m["inversion"]["+0.0"]["psnr"] > m["mean_latent"]["+0.0"]["psnr"] + 0.5, m
  # The same result as naming the file explicitly.
  z = world.sample_z(jax.random.PRNGKey(3), 1)
  c = world.orbit_label(np.zeros(1))
  image = world.render(z, c, resolution=128)["image"]
  a = jaxinv.invert(image, pose=c, method=method)
  b = jaxinv.invert(image, pose=c, method=method, weights=_explicit_weights(method))
  np.testing.assert_array_equal(np.asarray(a.ws), np.asarray(b.ws))


@pytest.mark.parametrize("method", NOT_SHIPPED)
def test_methods_without_a_builtin_encoder_still_ask_for_one(method):
  c = world.orbit_label(np.zeros(1))
  image = world.render(world.sample_z(jax.random.PRNGKey(3), 1), c, resolution=128)["image"]
  with pytest.raises(ValueError, match="needs its encoder"):
    jaxinv.invert(image, pose=c, method=method)


@pytest.mark.slow
@pytest.mark.parametrize("method", SHIPPED)
def test_a_short_run_of_an_encoders_training_command_reproduces_its_manifests_first_losses(
    method, tmp_path):
  import importlib.util
  from jaxinv.train import train_and_evaluate
  man = _manifest(method)
  spec = importlib.util.spec_from_file_location(
      f"{method}_cfg", pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{method}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(f"stage={man['stage']},toy" if method == "goae" else "toy")
  assert c.to_dict() == man["config"]        # the shipped encoder's config is the file's
  first = man["first_logged"]
  c.total_steps = c.checkpoint_every = int(first["step"])
  c.preview_every = 0
  c.progress = False
  train_and_evaluate(c, str(tmp_path))
  rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  row = next(r for r in rows if r["step"] == first["step"])
  keys = [k for k in first if k == "loss" or k.startswith("loss_")]
  assert "loss" in keys
  for k in keys:
    assert row[k] == pytest.approx(first[k], rel=2e-3), k
