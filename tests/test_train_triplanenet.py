"""TriPlaneNet's runlocal config through the one train loop: both branches' losses fall, branch 1 is
bit-identical while frozen (branch 2 keeps training), resume is bit-exact; config switches.

The 50-step run is one subprocess (tests/_b1_train_run.py) shared by the tests of this module.
"""
import pathlib
import sys

import numpy as np
import pytest

from _b1_train_run import launch, series

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import triplanenet as tpn_config  # noqa: E402

STEPS, RESUME_AT = 50, 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return launch("triplanenet", tmp_path_factory.mktemp("triplanenet"), STEPS, RESUME_AT)


@pytest.mark.slow
def test_runlocal_trains_both_branches_with_falling_losses(run):
  rows = run["metrics"]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for r in rows:
    assert {"loss", "loss_psp", "loss_triplane", "tri_pixel", "tri_symmetry"} <= set(r)
    assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float))
  # Schedule (runlocal): branch 2 updated from step 10, branch 1 frozen from step 40.
  assert [r["psp_active"] for r in rows] == [1.0] * 40 + [0.0] * 10
  assert [r["tri_active"] for r in rows] == [0.0] * 10 + [1.0] * 40
  psp = series(rows, "psp_pixel", 1, 40)
  assert np.mean(psp[-8:]) < 0.7 * np.mean(psp[:5]), psp
  tri = series(rows, "tri_pixel", 1, 50)
  assert np.mean(tri[-8:]) < 0.7 * np.mean(tri[:5]), tri


@pytest.mark.slow
def test_branch_one_frozen_while_branch_two_trains(run):
  d = run["digests"]
  # Steps 40..49 run with branch 1 frozen: its weights are bit-identical, branch 2's move.
  assert d["40"]["psp"] == d["50"]["psp"]
  assert d["40"]["triplane"] != d["50"]["triplane"]
  # Before step 10 branch 2 is not updated; after it both move.
  assert d["10"]["triplane"] != d["20"]["triplane"] and d["10"]["psp"] != d["20"]["psp"]
  # runlocal trains with model.batchnorm='frozen': the running statistics never move.
  assert len(set(map(str, run["model_state_digests"].values()))) == 1


@pytest.mark.slow
def test_resume_is_bit_exact(run):
  assert run["resumed_digest"] == run["digests"][str(STEPS)]
  a = {r["step"]: r for r in run["metrics"]}
  for r in run["resumed_metrics"]:
    assert r == a[r["step"]]
  assert [r["step"] for r in run["resumed_metrics"]][-1] == STEPS


def test_config_fields_and_presets():
  c = tpn_config.get_config()
  for f in ("total_steps", "batch_size", "seed", "log_every", "checkpoint_every"):
    assert f in c
  assert c.optim.psp.name == c.optim.triplane.name == "ranger"
  assert c.optim.psp.lr == c.optim.triplane.lr == 1e-4
  assert (c.schedule.add_triplanenet, c.schedule.stop_psp, c.total_steps) == (20_000, 500_000,
                                                                               1_500_000)
  assert c.losses.lpips_psp == 1.0 and c.losses.symmetry_eps < 1e-3
  assert c.data.synthetic.truncation_psi == 1.0 and c.data.synthetic.flip_prob == 0.5
  code = tpn_config.get_config("code")
  assert code.losses.lpips_psp == code.losses.lpips_triplane_mirror == 0.8
  assert code.losses.symmetry_eps == 1.0
  local = tpn_config.get_config("runlocal")
  assert local.runlocal and local.model.size == "small" and local.total_steps == 50
  with pytest.raises(ValueError, match="unknown args"):
    tpn_config.get_config("runlocal,typo")


def test_build_refuses_bad_schedule_and_missing_files():
  from jaxinv.train.tasks import build_task
  c = tpn_config.get_config()
  with pytest.raises(FileNotFoundError, match="generator.path"):
    build_task(c)
  c = tpn_config.get_config("runlocal")
  c.generator.path = "/nonexistent/G.npz"
  with pytest.raises(FileNotFoundError, match="no such file"):
    build_task(c)


def test_gated_optimizer_freezes_outside_its_window():
  import jax
  import jax.numpy as jnp
  import optax
  from jaxinv.train.optimizers import make_optimizer
  from jaxinv.train.tasks.triplanenet import gated
  opt = gated(make_optimizer(dict(name="ranger", lr=0.1)), start=2, stop=4)
  p = {"w": jnp.ones(3)}
  s = opt.init(p)
  seen = []
  for _ in range(6):
    u, s = opt.update({"w": jnp.ones(3)}, s, p)
    p = optax.apply_updates(p, u)
    seen.append(float(p["w"][0]))
  # Calls 0, 1: inactive; 2, 3: moving; 4, 5: frozen again at exactly the value after call 3.
  assert seen[0] == seen[1] == 1.0 and seen[2] != 1.0 and seen[3] != seen[2]
  assert seen[4] == seen[5] == seen[3]
  assert int(s["count"]) == 6


def test_small_stylegan2_discriminator():
  import jax
  import jax.numpy as jnp
  from jaxinv.losses import adversarial
  from jaxinv.models.stylegan2_discriminator import ResnetDiscriminator, minibatch_std
  d = ResnetDiscriminator(16, channel_base=128, channel_max=16, mbstd_group_size=2)
  x = jnp.tanh(jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3)))
  v = d.init(jax.random.PRNGKey(1), x)
  logits = d.apply(v, x)
  assert logits.shape == (4,) and bool(jnp.all(jnp.isfinite(logits)))
  assert {"fromrgb", "b16_conv0", "b16_conv1", "b16_skip", "b8_skip", "b4_conv", "b4_fc",
          "b4_out"} <= set(v["params"])
  r1 = adversarial.r1_penalty(lambda im: d.apply(v, im), x)
  assert float(r1) > 0
  # Minibatch std: one extra channel, identical within a group's members' positions.
  y = minibatch_std(jnp.arange(4 * 2 * 2 * 1, dtype=jnp.float32).reshape(4, 2, 2, 1), 2)
  assert y.shape == (4, 2, 2, 2)
  np.testing.assert_allclose(np.asarray(y[0, ..., 1]), np.asarray(y[2, ..., 1]))
  with pytest.raises(ValueError, match="16"):
    d.apply(v, jnp.zeros((1, 8, 8, 3)))


def test_batchnorm_trains_on_batch_statistics():
  """Both encoders run BatchNorm in train mode (the coaches' ``net.train()``): the step's losses do
  not depend on the running statistics, and it updates them. (The runlocal run above checks
  ``'frozen'``: statistics bit-identical over 50 steps.)"""
  import jax
  import jax.numpy as jnp
  from jaxinv.train import state as state_lib
  from jaxinv.train import step as step_lib
  from jaxinv.train.tasks import build_task
  c = tpn_config.get_config("runlocal")
  c.batch_size, c.schedule.add_triplanenet = 2, 0
  c.losses.mirror, c.model.offset_input = 0.0, "v1"     # fewer renders: a smaller compile
  c.model.batchnorm = "train"
  task = build_task(c)
  params, ms, frozen = task.init(jax.random.PRNGKey(0))
  assert ms["psp"]["batch_stats"] and ms["triplane"]["batch_stats"]
  step = jax.jit(step_lib.make_step_fn(task))
  shifted = jax.tree_util.tree_map(lambda v: v + 3.0, ms)   # running means / vars moved
  (s0, m0), (_, m1) = [step(state_lib.create(params, m, task.optimizers, 0), frozen, None)
                       for m in (ms, shifted)]
  for k in ("loss_psp", "loss_triplane", "psp_pixel", "tri_pixel"):
    assert float(m0[k]) == float(m1[k]), k
  for g in ("psp", "triplane"):
    a, b = jax.tree_util.tree_leaves(ms[g]), jax.tree_util.tree_leaves(s0.model_state[g])
    assert all(bool(jnp.all(jnp.isfinite(y))) for y in b)
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)), g
  c.model.batchnorm = "eval"
  with pytest.raises(ValueError, match="model.batchnorm"):
    build_task(c)


def test_branch_order():
  """'paper' (default): branch 2 starts from branch 1's first pass of the step (the phi branch 1's
  loss used, eq. 8 / the v1 coach's one forward), handed over in model_state; 'v2': re-run."""
  import jax
  from jaxinv.train.tasks import build_task
  c = tpn_config.get_config("runlocal")
  assert c.schedule.branch_order == "paper"
  t = build_task(c)
  assert [p.group for p in t.phases] == ["psp", "triplane"]
  ms = t.init(jax.random.PRNGKey(0)).model_state
  assert set(ms["first_pass"]) == {"ws", "y0", "y0_m"}          # 9-channel offset input
  assert ms["first_pass"]["y0"].shape == (1, 64, 64, 3)
  c.schedule.branch_order = "v2"
  assert "first_pass" not in build_task(c).init(jax.random.PRNGKey(0)).model_state
  c.schedule.branch_order = "v3"
  with pytest.raises(ValueError, match="branch_order"):
    build_task(c)
