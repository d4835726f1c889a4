"""pSp / e4e / PREIM3D training tasks on tiny models (runlocal configs, no files).

One tiny EG3D generator for the module; each task's step is compiled once. ``psp`` also trains
for a few dozen steps and must lower its in-domain L2 on a fixed held-out batch.
"""
import importlib
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.train import state as state_lib
from jaxinv.train import step as step_lib
from jaxinv.train.tasks import build_task

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

pytestmark = pytest.mark.slow


def _config(name, arg="runlocal", **over):
  c = importlib.import_module(name).get_config(arg)
  for k, v in over.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def _setup(config):
  task = build_task(config)
  params, model_state, frozen = task.init(jax.random.PRNGKey(1))
  state = state_lib.create(params, model_state, task.optimizers, 0)
  return task, state, frozen, jax.jit(step_lib.make_step_fn(task), donate_argnums=0)


def _finite_tree(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def test_full_configs_without_weight_files_are_clear_errors():
  for name in ("psp", "e4e", "preim3d"):
    with pytest.raises(FileNotFoundError, match=r"config\.generator\.path"):
      build_task(_config(name, None))
  with pytest.raises(ValueError, match="unknown argument"):
    _config("preim3d", "runlocal,typo")


def test_toy_variants_train_into_the_toy_generator_without_weight_files():
  """``:toy`` (issue 12's world encoders): the built-in G, pixel losses only, the G's orbit."""
  for name in ("psp", "e4e", "preim3d"):
    c = _config(name, "toy")
    assert c.generator.path == "toy" and c.losses.lpips == 0 and c.losses.id == 0
    assert c.synthetic.yaw_range == pytest.approx(57.3) and not c.runlocal
    task = build_task(c)          # no weight file is read
    assert task.name == name
  with pytest.raises(ValueError, match="pick one"):
    _config("psp", "toy,runlocal")


def test_psp_step_is_finite_and_training_lowers_in_domain_l2():
  task, state, frozen, step = _setup(_config("psp", batch_size=2))
  held_out = task.make_batch(frozen, jax.random.PRNGKey(123), jnp.int32(0), None)
  loss_fn = jax.jit(lambda s: task.phases[0].loss_fn(s.params, s.model_state, frozen, held_out,
                                                     jax.random.PRNGKey(0), s.step)[1]["metrics"])
  before = float(loss_fn(state)["l2"])
  p0 = jax.tree_util.tree_map(np.asarray, state.params)
  state, m = step(state, frozen, None)
  m = jax.device_get(m)
  assert {"l2", "lpips", "id", "loss", "grad_norm_encoder"} <= set(m)
  assert all(np.isfinite(v) for v in m.values()) and m["grad_norm_encoder"] > 0
  assert _finite_tree(state.params) and _finite_tree(state.model_state)
  changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, np.asarray(b)), p0,
                                   state.params)
  assert any(jax.tree_util.tree_leaves(changed))
  # BatchNorm ran in train mode: the running statistics moved.
  assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(state.model_state)[0]),
                         np.asarray(jax.tree_util.tree_leaves(
                             task.init(jax.random.PRNGKey(1)).model_state)[0]))
  for _ in range(24):
    state, m = step(state, frozen, None)
  after = float(loss_fn(state)["l2"])
  assert after < 0.8 * before, (before, after)


def test_e4e_step_updates_encoder_and_latent_discriminator():
  task, state, frozen, step = _setup(_config("e4e", batch_size=2))
  assert [p.label for p in task.phases] == ["disc", "disc_r1", "encoder"]  # the coach's order
  p0 = jax.tree_util.tree_map(np.asarray, state.params)
  state, m = step(state, frozen, None)  # step 0: R1 runs too
  m = jax.device_get(m)
  for k in ("l2", "delta_reg", "enc_adv", "d_loss", "d_r1", "stage", "loss"):
    assert np.isfinite(m[k]), k
  assert m["stage"] == 0 and m["delta_reg"] == 0  # before progressive_start only w0 is used
  assert m["grad_norm_disc"] > 0 and m["grad_norm_disc_r1"] > 0
  for g in ("encoder", "disc"):
    leaves0 = jax.tree_util.tree_leaves(p0[g])
    leaves1 = jax.tree_util.tree_leaves(state.params[g])
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(leaves0, leaves1)), g
  assert int(state.model_state["real_count"]) == 2 and int(state.model_state["fake_count"]) == 2
  np.testing.assert_array_equal(np.asarray(state.model_state["real_w"]),
                                np.asarray(state.model_state["real_pool"][:2]))
  from jaxinv.train.tasks.e4e import progressive_stage
  assert [int(progressive_stage(jnp.int32(s), 14, 10, 5)) for s in (0, 9, 10, 14, 15, 999)] == \
      [0, 0, 1, 1, 2, 13]


def _reference_pool(pool, count, ws, draws):
  """e4e's LatentCodesPool.query (upstream logic) with the given (uniform, randint) draws."""
  pool, out, branches = [np.array(p) for p in pool], [], []
  for w, (u, rid) in zip(ws, draws):
    if count < len(pool):
      pool[count] = w
      count += 1
      out.append(w)
      branches.append("fill")
    elif u > 0.5:
      out.append(pool[rid].copy())
      pool[rid] = w
      branches.append("swap")
    else:
      out.append(w)
      branches.append("keep")
  return np.stack(out), np.stack(pool), count, branches


def test_e4e_latent_pool_follows_upstream_query():
  from jaxinv.train.tasks.e4e import latent_pool_query
  size, d = 3, 4
  rng = np.random.default_rng(0)
  pool, count = np.zeros((size, d), np.float32), 0
  j_pool, j_count = jnp.asarray(pool), jnp.int32(0)
  seen = set()
  for t in range(6):  # fills the pool, then both branches of the full pool
    ws = rng.standard_normal((2, d)).astype(np.float32)
    key = jax.random.PRNGKey(t)
    draws = []
    for k in jax.random.split(key, 2):
      k_u, k_i = jax.random.split(k)
      draws.append((float(jax.random.uniform(k_u)), int(jax.random.randint(k_i, (), 0, size))))
    ref_out, pool, count, branches = _reference_pool(pool, count, ws, draws)
    seen.update(branches)
    out, j_pool, j_count = latent_pool_query(j_pool, j_count, jnp.asarray(ws), key)
    np.testing.assert_array_equal(np.asarray(out), ref_out)
    np.testing.assert_array_equal(np.asarray(j_pool), pool)
    assert int(j_count) == count
  assert seen == {"fill", "swap", "keep"}  # every branch was exercised
  ws = jnp.ones((2, d))
  out, p0, c0 = latent_pool_query(jnp.zeros((0, d)), jnp.int32(0), ws, jax.random.PRNGKey(0))
  assert out is ws and p0.shape == (0, d)


def test_preim3d_alternates_domains_with_latent_regression_and_multiview_id():
  cfg = _config("preim3d", batch_size=2, **{"preim3d.sur_start": 0})
  task, state, frozen, step = _setup(cfg)
  state, m0 = step(state, frozen, None)
  state, m1 = step(state, frozen, None)
  m0, m1 = jax.device_get(m0), jax.device_get(m1)
  assert m0["in_domain"] == 1 and m1["in_domain"] == 0
  assert m0["w_rec"] > 0 and m1["w_rec"] == 0
  assert m0["id_multi"] > 0 and m0["lambda_sur"] > 0
  for m in (m0, m1):
    assert all(np.isfinite(v) for v in m.values())
  assert _finite_tree(state.params)
  from jaxinv.train.tasks.preim3d import ramp
  paper = [float(ramp(jnp.int32(s), 20_000, 5_000, 1e-4)) for s in (0, 19_999, 20_000, 24_999,
                                                                     25_000)]
  np.testing.assert_allclose(paper, [0, 0, 1e-4, 1e-4, 2e-4], rtol=1e-6)
  release = [float(ramp(jnp.int32(s), 5_000, 5_000, 0.1, 100)) for s in (4_999, 5_000, 10**7)]
  np.testing.assert_allclose(release, [0, 0.1, 10.0], rtol=1e-6)


def test_preim3d_toy_takes_its_out_of_domain_half_from_the_world():
  # PREIM3D's real photos are, in the toy world, the world's own renders (preim3d.real='world').
  from jaxinv.data import synthetic, world
  from jaxinv.train.tasks import psp_family as F
  c = _config("preim3d", "toy", batch_size=2)
  assert c.preim3d.real == "world"
  task = build_task(c)
  frozen = dict(G=F.build_generator(c))
  key = jax.random.PRNGKey(5)
  out = jax.jit(lambda k: task.make_batch(frozen, k, jnp.int32(1), None))(key)
  _, k_out = jax.random.split(key)
  k_z, k_c = jax.random.split(k_out)
  cams = synthetic.sample_poses(k_c, 2, F.synthetic_config(c, "stand_in").poses)
  want = world.render_jit(world.sample_z(k_z, 2), cams, 128)["image"]
  assert float(out["in_domain"]) == 0 and out["y"].shape == (2, 128, 128, 3)
  np.testing.assert_allclose(np.asarray(out["y"]), np.asarray(want), atol=2e-3)  # jit vs eager
  np.testing.assert_array_equal(np.asarray(out["ws"]), 0)
  for bad, match in (({"preim3d.real": "photos"}, "preim3d.real"),
                     ({"data.path": "/x"}, "pick one")):
    with pytest.raises(ValueError, match=match):
      build_task(_config("preim3d", "toy", **bad))
