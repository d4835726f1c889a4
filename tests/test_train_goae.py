"""GOAE training (``configs/goae.py``, both stages) on the one train loop.

The fast tests check the pieces (progressive rows, ``D_avg`` accumulation, configs). The heavy
ones run ``configs/goae.py:stage=1,runlocal`` and ``stage=2,runlocal`` (tiny random EG3D, tiny
Swin / AFA, images generated on device) in ONE subprocess (``_goae_train_run.py``): per stage a
straight run and a run resumed from its mid checkpoint through the loop; stage 2 reads the
stage-1 run's encoder. That subprocess took 28 min on the shared 2-core machine at load 14-24
(build 143 s; stage 1: 712 s + 264 s resumed; stage 2: 403 s + 117 s; the XLA compiles dominate,
and the resumed runs reuse them through a persistent compile cache).
"""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.inversion import goae as gi
from jaxinv.losses import goae as L
from jaxinv.train.tasks import goae as task_goae

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "configs"))
import goae as goae_config  # noqa: E402

STEPS1, STEPS2 = 30, 16


# ------------------------------------------------------------------------------ fast pieces

def test_progressive_levels_and_rows():
  stage_list = (4, 8, 12)
  assert [int(task_goae.progressive_level(s, stage_list)) for s in (0, 3, 4, 7, 8, 12, 99)] == \
      [0, 0, 1, 1, 2, 3, 3]
  np.testing.assert_array_equal(task_goae.row_levels((1, 3, 3, 7)),
                                [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3])
  np.testing.assert_array_equal(task_goae.group_start_rows((1, 3, 3, 7)), [0, 1, 4, 7])


def test_select_levels_switches_deltas_off():
  split = (1, 2, 2, 3)
  ws = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 4))
  base = jnp.broadcast_to(ws[:, :1], ws.shape) - 1.0
  np.testing.assert_array_equal(task_goae.select_levels(ws, base, split, 3), ws)
  for lvl in range(3):
    out = np.asarray(jax.jit(task_goae.select_levels, static_argnums=2)(ws, base, split, lvl))
    on = task_goae.row_levels(split) <= lvl
    assert on.sum() == sum(split[:lvl + 1])
    np.testing.assert_array_equal(out[:, on], np.asarray(ws)[:, on])
    np.testing.assert_array_equal(out[:, ~on], np.asarray(base)[:, ~on])


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class _FakeG:
  """A stand-in generator: ws = z; depth 2 + |z_0| + pixel offsets; fixed opacity pattern."""
  scale: jax.Array
  z_dim: int = 3

  def tree_flatten(self):
    return (self.scale,), self.z_dim

  @classmethod
  def tree_unflatten(cls, z_dim, children):
    return cls(children[0], z_dim)

  def mapping(self, z, c, truncation_psi=1.0):
    return jnp.broadcast_to(z[:, None, :] * self.scale, (z.shape[0], 2, self.z_dim))

  def synthesis(self, ws, c, key=None, neural_rendering_resolution=None):
    b = ws.shape[0]
    depth = 2 + jnp.abs(ws[:, 0, 0])[:, None, None, None] + jnp.array([[0.0, 0.1], [0.2, 0.3]])[
        None, :, :, None]
    wsum = jnp.broadcast_to(jnp.array([[0.9, 0.1], [0.2, 0.8]])[None, :, :, None], (b, 2, 2, 1))
    return dict(image_depth=depth, weights_sum=wsum)


def test_average_background_depth_accumulates_every_batch():
  G = _FakeG(jnp.float32(1.0))
  key = jax.random.PRNGKey(7)
  d = gi.average_background_depth(G, key, num_samples=5, batch_size=2, mask_threshold=0.5)
  # By hand: ceil(5 / 2) = 3 batches of 2, the same key splits; background = pixels (0,1), (1,0).
  total, count = 0.0, 0
  for k in jax.random.split(key, 3):
    kz, _ = jax.random.split(k)
    z0 = np.asarray(jax.random.normal(kz, (2, 3)))[:, 0]
    for v in z0:
      total += (2 + abs(v) + 0.1) + (2 + abs(v) + 0.2)
      count += 2
  np.testing.assert_allclose(d, total / count, rtol=1e-6)
  # The same rule as the training term's mask.
  wsum = G.synthesis(jnp.zeros((1, 2, 3)), None)["weights_sum"]
  np.testing.assert_array_equal(L.background_mask(wsum)[0, ..., 0], [[0, 1], [1, 0]])


def test_configs():
  for arg in ("stage=1", "stage=2", "stage=1,runlocal", "stage=2,runlocal"):
    c = goae_config.get_config(arg)
    for f in ("total_steps", "batch_size", "seed", "log_every", "checkpoint_every"):
      assert f in c
    assert c.task == "goae"
  c = goae_config.get_config("stage=1")
  assert (c.losses.l2, c.losses.lpips, c.losses.id, c.losses.adv, c.losses.bg_depth,
          c.losses.w_delta, c.losses.delta_f) == (1.0, 0.8, 0.25, 0.05, 5.0, 0.001, 1e-4)
  assert c.latent_d.r1_gamma == 10.0 and tuple(c.progressive.stage_list) == (10000, 20000, 30000)
  assert goae_config.get_config("stage=2").losses.stage2_latent_d == 0.0
  with pytest.raises(ValueError, match="stage"):
    goae_config.get_config("stage=3")
  with pytest.raises(ValueError, match="unknown"):
    goae_config.get_config("stage=1,res=3")
  # Without runlocal, missing files are clear errors naming the field.
  with pytest.raises(FileNotFoundError, match="generator.path"):
    task_goae.build(goae_config.get_config("stage=1"))


# ---------------------------------------------------------------------- heavy: the loop runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("goae_train")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(HERE / "_goae_train_run.py"), str(tmp),
                         str(STEPS1), str(STEPS2)], capture_output=True, text=True,
                        timeout=1800, env=env, cwd=str(HERE.parent))
  assert proc.returncode == 0, proc.stderr[-6000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _series(metrics, name):
  return np.array([m[name] for m in metrics if name in m])


def _check_falls(metrics, name, factor):
  # Batch 1 from a bank of generated images: single steps are noisy, so the late median is
  # compared with the first two steps.
  v = _series(metrics, name)
  assert np.all(np.isfinite(v)), name
  first, late = v[:2].mean(), np.median(v[-10:])
  assert late < factor * first, f"{name}: first steps {v[:2]}, last steps {v[-10:]}"


@pytest.mark.slow
def test_stage1_trains_and_resumes_bit_exactly(runs):
  s = runs["stage1"]
  assert s["groups"] == ["encoder", "latent_d"]
  m = s["metrics"]
  assert [r["step"] for r in m] == list(range(1, STEPS1 + 1))
  for r in m:
    assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
  _check_falls(m, "l2", 0.75)
  # Every term is wired: present, and the latent D sees both sides.
  for k in ("l2", "bg_depth", "adv_e", "w_delta", "d_loss", "d_real", "d_fake", "loss"):
    assert k in m[-1], k
  # The lazy R1 phase logs on its steps only (runlocal: every 4 steps).
  assert [r["step"] for r in m if "d_r1" in r] == [t + 1 for t in range(STEPS1) if t % 4 == 0]
  # Progressive stages (runlocal: 4 / 8 / 12): the level is logged for the step that ran.
  assert [m[i]["progressive_level"] for i in (0, 4, 8, 12, STEPS1 - 1)] == [0, 1, 2, 3, 3]
  # Resume from the mid checkpoint: bit-identical parameters and metrics.
  assert s["steps"] == [STEPS1, STEPS1]
  assert s["final_digest"] != s["init_digest"]
  assert s["resumed_digest"] == s["final_digest"]
  half = STEPS1 // 2
  assert [r for r in s["resumed_metrics"] if r["step"] > half] == [r for r in m if r["step"] > half]


@pytest.mark.slow
def test_loss_networks_are_jit_arguments(tmp_path):
  """The frozen LPIPS / ArcFace the task loads travel through the jitted step as arrays (a
  module object there made every GOAE run with an ID weight fail before its first step)."""
  from conftest import encoder_fixture
  from jaxinv.convert import irse
  from jaxinv.convert.common import save_native
  from jaxinv.convert.lpips import convert_lpips_module
  _, sd, _ = encoder_fixture("ir_se50")
  save_native(tmp_path / "arc.npz", "arcface", {"num_layers": 50}, irse.load_arcface(sd)[1])
  _, lp, _ = encoder_fixture("lpips_alex")
  save_native(tmp_path / "lp.npz", "lpips", {"net": "alex"}, convert_lpips_module(lp, "alex"))
  c = goae_config.get_config("stage=1")
  c.losses.arcface_path, c.losses.lpips_path = str(tmp_path / "arc.npz"), str(tmp_path / "lp.npz")
  nets = task_goae._load_loss_nets(c)
  assert set(nets) == {"lpips", "arcface"}
  leaves = jax.tree_util.tree_leaves(nets)
  assert leaves and all(hasattr(x, "dtype") for x in leaves)
  jax.jit(lambda n: jax.tree_util.tree_map(jnp.sum, n))(nets)


def test_stage2_trains_afa_only_and_resumes_bit_exactly(runs):
  s = runs["stage2"]
  assert s["groups"] == ["afa"]            # the encoder is never a trainable group
  m = s["metrics"]
  assert [r["step"] for r in m] == list(range(1, STEPS2 + 1))
  for r in m:
    assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
  # The AFA moves (its params differ between the mid and the final checkpoint), and on the one
  # bank image the objective it minimises falls. Stage 1 is chaotic over 30 steps (its l2 swings
  # 0.07..9), so the encoder stage 2 starts from differs between jax builds and machines, and
  # with it where l2 starts: measured 0.46 (2026-12-02), 0.097 (CI, 2026-12-02) and 0.095 (here,
  # 2026-12-03, jax 0.10.2). The loss is what the AFA is trained on: here 3.70, 1.85 at steps 1-2
  # and 0.89, 0.96, 0.92 at 14-16 (0.33x; the floor leaves room for another start); an AFA with
  # no gradient sees one fixed image and stays at 1x. l2 alone need not fall (L_BG dominates the
  # loss) but must not blow up.
  assert s["final_digest"] != s["init_digest"]
  loss, l2 = _series(m, "loss"), _series(m, "l2")
  assert loss[-3:].mean() < 0.85 * loss[:2].mean(), loss
  assert l2[-3:].mean() < 1.5 * l2[:2].mean(), l2
  for k in ("l2", "bg_depth", "delta_f", "loss"):
    assert k in m[-1], k
  assert "d_loss" not in m[-1] and "adv_e" not in m[-1]   # paper: no latent D in stage 2
  assert s["resumed_digest"] == s["final_digest"]
  half = STEPS2 // 2
  assert [r for r in s["resumed_metrics"] if r["step"] > half] == [r for r in m if r["step"] > half]


@pytest.mark.slow
def test_stage2_leaves_the_stage1_encoder_bit_identical(runs):
  assert runs["stage2_encoder_is_stage1"]
  assert runs["stage1_files_unchanged"]


def test_background_mask_modes_cannot_all_be_escaped():
  """L_BG's mask: 'own' follows the render's opacity (a render opaque everywhere escapes it);
  'average' / 'union' keep the average canonical sample's background (from
  ``average_background_depth(return_opacity=True)``)."""
  import ml_collections
  from jaxinv.train.tasks import goae as goae_task
  G = _FakeG(jnp.float32(1.0))
  d, opacity = gi.average_background_depth(G, jax.random.PRNGKey(0), num_samples=4, batch_size=2,
                                           return_opacity=True)
  assert opacity.shape == (2, 2, 1)
  np.testing.assert_allclose(opacity[..., 0], [[0.9, 0.1], [0.2, 0.8]], rtol=1e-6)
  np.testing.assert_allclose(d, gi.average_background_depth(G, jax.random.PRNGKey(0), 4, 2))
  avg_mask = L.background_mask(opacity)
  front_depth = jnp.full((1, 2, 2, 1), 5.0)
  escaped = dict(image_depth=front_depth, weights_sum=jnp.ones((1, 2, 2, 1)))   # all opaque
  honest = dict(image_depth=front_depth, weights_sum=jnp.zeros((1, 2, 2, 1)))   # all empty
  frozen = dict(bg_depth_avg=jnp.float32(3.0), bg_mask_avg=avg_mask)
  got = {}
  for mode in goae_task.BG_MASKS:
    cfg = ml_collections.ConfigDict(dict(bg_depth=dict(mask_threshold=0.5, squared=False,
                                                       mask=mode)))
    got[mode] = [tuple(float(v) for v in goae_task._bg_terms(cfg, frozen, f))
                 for f in (escaped, honest)]
  assert got["own"][0] == (0.0, 0.0) and got["own"][1][1] == 1.0
  assert got["average"][0] == got["average"][1] and got["average"][0][1] == 0.5
  assert got["union"][0][1] == 0.5 and got["union"][1][1] == 1.0
  assert got["union"][0][0] > 0 and got["average"][0][0] > 0
  with pytest.raises(ValueError, match="bg_depth.mask"):
    goae_task._bg_mode(ml_collections.ConfigDict(dict(bg_depth=dict(mask="parser"))))
