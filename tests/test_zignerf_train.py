"""ZIGNeRF's two stages (``configs/zignerf.py``) through the one train loop, runlocal: falling
losses, bit-exact resume, the frozen generator read by the inverter stage; config checks.

One subprocess (tests/_zignerf_train_run.py) runs both stages for the tests of this module.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import zignerf as z_config  # noqa: E402

STEPS, RESUME_AT = 10, 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("zignerf")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run([sys.executable, str(ROOT / "tests" / "_zignerf_train_run.py"), str(tmp),
                      str(STEPS), str(RESUME_AT)], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=1500)
  assert p.returncode == 0, p.stderr[-4000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


def _mean(rows, name, lo, hi):
  return float(np.mean([r[name] for r in rows if lo <= r["step"] <= hi and name in r]))


@pytest.mark.slow
def test_generator_stage_trains_g_and_d_with_falling_world_loss(run):
  rows = run["generator"]["metrics"]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for r in rows:
    assert {"loss", "loss_D", "loss_G", "d_real", "d_fake", "g_adv", "world_image", "world_depth",
            "world_mask"} <= set(r)
    assert all(np.isfinite(v) for v in r.values())
  # R1 runs lazily (runlocal: every 2 steps; the loop's 0-based step, logged as step + 1).
  assert [("d_r1" in r) for r in rows] == [(r["step"] - 1) % 2 == 0 for r in rows]
  # Every term is in G's loss with its weight (runlocal: adversarial 0.05, world 1 / 1 / 0.5).
  for r in rows:
    np.testing.assert_allclose(r["loss_G"], 0.05 * r["g_adv"] + r["world_image"] + r["world_depth"]
                               + 0.5 * r["world_mask"], rtol=1e-5)
  assert _mean(rows, "world_image", 7, 10) < 0.9 * _mean(rows, "world_image", 1, 3)


@pytest.mark.slow
def test_inverter_stage_trains_on_generated_images_with_every_term_weighted(run):
  rows = run["inverter"]["metrics"]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for r in rows:
    assert {"loss", "realism", "latent_l1", "image_l1", "ssim", "lpips", "pose_l1"} <= set(r)
    np.testing.assert_allclose(
        r["loss"], r["realism"] + 10 * r["latent_l1"] + 100 * r["image_l1"] + (1 - r["ssim"])
        + r["lpips"] + 10 * r["pose_l1"], rtol=1e-5)
  # Ten runlocal steps at batch 2 are too noisy in the log to show a fall (measured: image_l1
  # 0.071 over steps 1-3, 0.075 over 7-10: every step draws new scenes), so the runner scores the
  # initial, step-5 and final inverter on one fixed batch of 16 of G's scenes at their source
  # pose. Measured (2026-12-03): image L1 0.0950 -> 0.0921 -> 0.0921 (0.970x), code L1 0.870 ->
  # 0.861 -> 0.861 (0.990x); an inverter that does not learn stays at 1x. The full-size fall is
  # in the shipped run's manifest (jaxinv/assets/zignerf_inverter.json: first and last logged).
  assert run["inverter"]["mid_digest"] != run["inverter"]["digest"]
  fixed = run["inverter_fixed_batch"]
  assert fixed["final"]["image_l1"] < 0.99 * fixed["init"]["image_l1"], fixed
  assert fixed["final"]["latent_l1"] < fixed["init"]["latent_l1"], fixed


@pytest.mark.slow
def test_both_stages_export_to_the_files_inference_reads(run):
  e = run["export"]
  assert e["same_config"] and e["steps"] == STEPS
  assert e["inverter_equal"] and e["generator_equal"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["generator", "inverter"])
def test_resume_is_bit_exact(run, stage):
  s = run[stage]
  assert s["resumed_digest"] == s["digest"] and s["resumed_state_digest"] == s["state_digest"]
  assert s["mid_digest"] != s["digest"]           # the second half really trained
  a = {r["step"]: r for r in s["metrics"]}
  assert [r["step"] for r in s["resumed_metrics"]] == list(range(RESUME_AT + 1, STEPS + 1))
  for r in s["resumed_metrics"]:
    assert r == a[r["step"]]


def test_config_fields_and_checks():
  for stage in ("generator", "inverter"):
    c = z_config.get_config(f"stage={stage}")
    for f in ("total_steps", "batch_size", "seed", "log_every", "checkpoint_every"):
      assert f in c
    assert c.stage == stage and c.scene.rotation_range == (0.0, 1.0)
  g = z_config.get_config("stage=generator")
  assert g.loss.r1_gamma == 10.0 and g.optimizer_d.name == "rmsprop" and g.optimizer_d.lr == 7e-5
  i = z_config.get_config("stage=inverter")
  assert (i.loss.realism, i.loss.latent, i.loss.image, i.loss.ssim) == (1.0, 10.0, 100.0, 1.0)
  assert i.generator.path == "toy"
  with pytest.raises(ValueError, match="unknown args"):
    z_config.get_config("stage=generator,typo")
  with pytest.raises(ValueError, match="stage must be"):
    z_config.get_config("stage=both")


def test_inverter_stage_without_a_generator_is_a_clear_error(tmp_path):
  from jaxinv.train.tasks import build_task
  c = z_config.get_config("stage=inverter")
  c.generator.path = ""
  with pytest.raises(FileNotFoundError, match="generator.path is empty"):
    build_task(c).init(__import__("jax").random.PRNGKey(0))
  c.generator.path = str(tmp_path / "nope.npz")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    build_task(c).init(__import__("jax").random.PRNGKey(0))
