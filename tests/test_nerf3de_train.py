"""NeRF-3DE's runlocal config through the one train loop: base stage then refiner stage with falling
losses, the base frozen in the refiner stage, bit-exact resume; config fields and checks.

The 50-step run is one subprocess (tests/_b1_train_run.py) shared by the tests of this module.
"""
import pathlib
import sys

import numpy as np
import pytest

from _b1_train_run import launch, series

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import nerf3de as n3_config  # noqa: E402

STEPS, RESUME_AT = 50, 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return launch("nerf3de", tmp_path_factory.mktemp("nerf3de"), STEPS, RESUME_AT)


@pytest.mark.slow
def test_runlocal_two_stages_with_falling_losses(run):
  rows = run["metrics"]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for r in rows:
    assert {"loss", "loss_base", "loss_refiner", "base_triplet", "base_l1", "base_pixel", "ref_pixel",
            "ref_l1", "margin"} <= set(r)
    assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float))
  assert rows[0]["margin"] > 0 and len({r["margin"] for r in rows}) == 1
  assert [r["base_active"] for r in rows] == [1.0] * 25 + [0.0] * 25
  assert [r["ref_active"] for r in rows] == [0.0] * 25 + [1.0] * 25
  # Every term is wired into its stage's loss with its weight (runlocal: weights 1, no LPIPS/ID).
  for r in rows[:25]:
    np.testing.assert_allclose(r["loss_base"], r["base_triplet"] + r["base_l1"] + r["base_pixel"],
                               rtol=1e-5)
  for r in rows[25:]:
    np.testing.assert_allclose(r["loss_refiner"], r["ref_l1"] + r["ref_pixel"], rtol=1e-5)
  # The triplet hinge binds (runlocal's margin_scale 1.0; at 0.1 it never did): 15 of 25 steps.
  assert sum(r["base_triplet"] > 0 for r in rows[:25]) >= 8
  # Measured (deterministic run, 2026-12-02, margin_scale 1.0): base_pixel 0.49x, ref_pixel 0.68x,
  # base_l1 only 0.93x of its start (the latent L1 falls slowly in 25 steps; the triplet term is
  # noisy, so the base stage's total is not asked to fall).
  for name, lo, hi, factor in (("base_pixel", 1, 25, 0.8), ("ref_pixel", 1, 50, 0.8),
                               ("base_l1", 1, 25, 0.95)):
    s = series(rows, name, lo, hi)
    assert np.mean(s[-6:]) < factor * np.mean(s[:5]), (name, s)


@pytest.mark.slow
def test_base_frozen_in_the_refiner_stage_and_refiner_idle_before(run):
  d = run["digests"]
  assert d["30"]["base"] == d["40"]["base"] == d["50"]["base"]
  assert d["10"]["base"] != d["20"]["base"]
  assert d["10"]["refiner"] == d["20"]["refiner"]          # not updated before step 25
  assert d["30"]["refiner"] != d["50"]["refiner"]


@pytest.mark.slow
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
