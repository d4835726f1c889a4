"""Train-mode BatchNorm of the IR-SE blocks and the optimizers (fast unit tests)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinv.nn.irse import BatchNormInference
from jaxinv.train import optimizers as O


def test_batchnorm_train_mode_uses_batch_stats_and_updates_running_ones():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 5, 2)) * 3.0 + 2.0
  bn = BatchNormInference()
  v = bn.init(jax.random.PRNGKey(1), x)
  y, upd = bn.apply(v, x, mutable=["batch_stats"])
  xn = np.asarray(x).reshape(-1, 2)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 2),
                             (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5), atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * xn.mean(0), rtol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
  # Inference (no mutable collection): running statistics, unchanged behaviour.
  y_inf = bn.apply(v, x)
  np.testing.assert_allclose(y_inf, x / np.sqrt(1 + 1e-5), rtol=1e-6)
  # Gradients flow through the batch statistics (train mode), none into the running ones.
  g = jax.grad(lambda p: jnp.sum(bn.apply({**v, "params": p}, x, mutable=["batch_stats"])[0]
                                 ** 2))(v["params"])
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(g))


def _run(opt, steps=30):
  p = {"a": jnp.array([3.0, -2.0]), "frozen_b": jnp.array([1.0])}
  st = opt.init(p)
  f = jax.jit(lambda p, st: opt.update(jax.grad(lambda q: sum(jnp.sum(x ** 2) for x in
                                                              jax.tree_util.tree_leaves(q)))(p),
                                       st, p))
  for _ in range(steps):
    u, st = f(p, st)
    p = optax.apply_updates(p, u)
  return p


@pytest.mark.parametrize("name", ["adam", "ranger", "sgd"])
def test_optimizers_descend_and_freeze_by_mask(name):
  p = _run(O.make_optimizer(dict(name=name, lr=0.05, freeze=["^frozen"], clip_norm=10.0)))
  assert float(jnp.sum(p["a"] ** 2)) < 13.0 * 0.8
  assert float(p["frozen_b"][0]) == 1.0


def test_schedules():
  s = O.make_schedule(dict(lr=1.0, schedule="warmup_cosine", warmup_steps=10, decay_steps=100))
  assert float(s(0)) == 0.0 and abs(float(s(10)) - 1.0) < 1e-6 and float(s(110)) < 1e-6
  s = O.make_schedule(dict(lr=1.0, schedule="step", boundaries=[5], scales=[0.1]))
  assert float(s(4)) == 1.0 and abs(float(s(6)) - 0.1) < 1e-7
  with pytest.raises(ValueError, match="unknown optimizer"):
    O.make_optimizer(dict(name="lamb"))


def test_ranger_matches_the_official_step():
  """Against the pSp family's ``training/ranger.py`` (tests/data/ranger/record.py): 14 steps of
  fixed gradients (SGD-like phase, rectified phase, two Lookahead syncs; gradient centralisation
  of conv / linear weights; a tiny-gradient leaf for the eps placement; weight decay)."""
  import pathlib
  ref = np.load(pathlib.Path(__file__).parent / "data" / "ranger" / "reference.npz")
  # torch -> jaxinv layouts: conv OIHW -> HWIO, linear [out, in] -> [in, out].
  to_j = {"conv": lambda a: np.transpose(a, (2, 3, 1, 0)), "linear": lambda a: a.T,
          "tiny": lambda a: a.T, "bias": lambda a: a}
  for tag, wd in (("plain", 0.0), ("wd", 0.01)):
    opt = O.make_optimizer(dict(name="ranger", lr=1e-2, weight_decay=wd))
    p = {k: jnp.asarray(to_j[k](ref[f"init/{k}"])) for k in to_j}
    st = opt.init(p)
    upd = jax.jit(opt.update)
    for t in range(14):
      g = {k: jnp.asarray(to_j[k](ref[f"grads/{k}"][t])) for k in to_j}
      u, st = upd(g, st, p)
      p = optax.apply_updates(p, u)
      for k in to_j:
        want = to_j[k](ref[f"{tag}/{k}"][t])
        np.testing.assert_allclose(np.asarray(p[k]), want, rtol=2e-6, atol=2e-7 * np.abs(want).max(),
                                   err_msg=f"{tag} {k} step {t + 1}")
  # Without centralisation the conv leaf leaves the official trajectory at the first step.
  opt = O.make_optimizer(dict(name="ranger", lr=1e-2, gradient_centralization=False))
  p = {k: jnp.asarray(to_j[k](ref[f"init/{k}"])) for k in to_j}
  u, _ = opt.update({k: jnp.asarray(to_j[k](ref[f"grads/{k}"][0])) for k in to_j}, opt.init(p), p)
  got = np.asarray(p["conv"] + u["conv"])
  assert np.abs(got - to_j["conv"](ref["plain/conv"][0])).max() > 1e-3
