"""NeRF-3DE's runlocal config through the one train loop: base stage then refiner stage with falling
losses, the base frozen in the refiner stage, bit-exact resume; config fields and checks.

The 50-step run is one subprocess (tests/_b1_train_run.py) shared by the tests of this module.
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

import nerf3de as n3_config  # noqa: E402

STEPS, RESUME_AT = 50, 30


# The 50-step run takes ~5 min on an idle 2-core CPU (minutes more under load): opt-in until it
# has been timed in CI (JAXINV_TRAIN_TESTS=1 runs it).
train_run = pytest.mark.skipif(not os.environ.get("JAXINV_TRAIN_TESTS"),
                               reason="50-step runlocal training run: set JAXINV_TRAIN_TESTS=1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("nerf3de")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run([sys.executable, str(ROOT / "tests" / "_b1_train_run.py"), "nerf3de",
                      str(tmp), str(STEPS), str(RESUME_AT)], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=2400)
  assert p.returncode == 0, p.stderr[-4000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_short_run_two_stages_and_bit_exact_resume(tmp_path):
  """4 steps with the refiner stage from step 2 (base frozen then); resume from step 2."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run([sys.executable, str(ROOT / "tests" / "_b1_train_run.py"), "nerf3de",
                      str(tmp_path), "4", "2", "2", "schedule.refiner_start=2"], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=1800)
  assert p.returncode == 0, p.stderr[-4000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  rows = out["metrics"]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert [r["base_active"] for r in rows] == [1.0, 1.0, 0.0, 0.0]
  assert [r["ref_active"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
  for r in rows:
    assert all(np.isfinite(v) for v in r.values() if isinstance(v, float)), r
    assert {"base_triplet", "base_l1", "base_pixel", "ref_l1", "ref_pixel", "margin"} <= set(r)
  assert rows[0]["margin"] > 0
  d = out["digests"]
  assert d["2"]["base"] == d["4"]["base"] and d["2"]["refiner"] != d["4"]["refiner"]
  assert out["resumed_digest"] == d["4"]
  a = {r["step"]: r for r in rows}
  assert out["resumed_metrics"] and all(r == a[r["step"]] for r in out["resumed_metrics"])


def _series(rows, name, lo, hi):
  return [r[name] for r in rows if lo <= r["step"] <= hi and name in r]


@pytest.mark.slow
@train_run
def test_runlocal_two_stages_with_falling_losses(run):
  rows = run["metrics"]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for r in rows:
    assert {"loss", "loss_base", "loss_refiner", "ref_pixel", "ref_l1", "margin"} <= set(r)
    assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float))
  assert rows[0]["margin"] > 0 and len({r["margin"] for r in rows}) == 1
  assert [r["base_active"] for r in rows] == [1.0] * 25 + [0.0] * 25
  assert [r["ref_active"] for r in rows] == [0.0] * 25 + [1.0] * 25
  for name, lo, hi in (("base_pixel", 1, 25), ("base_l1", 1, 25), ("ref_pixel", 1, 50)):
    s = _series(rows, name, lo, hi)
    assert np.mean(s[-6:]) < 0.8 * np.mean(s[:5]), (name, s)


@pytest.mark.slow
@train_run
def test_base_frozen_in_the_refiner_stage_and_refiner_idle_before(run):
  d = run["digests"]
  assert d["30"]["base"] == d["40"]["base"] == d["50"]["base"]
  assert d["10"]["base"] != d["20"]["base"]
  assert d["10"]["refiner"] == d["20"]["refiner"]          # not updated before step 25
  assert d["30"]["refiner"] != d["50"]["refiner"]


@pytest.mark.slow
@train_run
def test_resume_is_bit_exact(run):
  assert run["resumed_digest"] == run["digests"][str(STEPS)]
  a = {r["step"]: r for r in run["metrics"]}
  for r in run["resumed_metrics"]:
    assert r == a[r["step"]]


def test_config_fields_and_checks():
  c = n3_config.get_config()
  for f in ("total_steps", "batch_size", "seed", "log_every", "checkpoint_every"):
    assert f in c
  assert c.batch_size == c.data.identities * c.data.views
  assert c.losses.margin == 0.0 and c.losses.margin_scale == 0.1   # measured at start
  local = n3_config.get_config("runlocal")
  assert local.model.backbone == "small" and local.total_steps == 50
  with pytest.raises(ValueError, match="unknown args"):
    n3_config.get_config("stage=2")
  from jaxinv.train.tasks import build_task
  with pytest.raises(FileNotFoundError, match="generator.path"):
    build_task(c)
