"""Runs both ZIGNeRF stages' ``runlocal`` configs through the train loop; JSON on the last line.

Used by tests/test_zignerf_train.py in a subprocess. For each stage, run A trains STEPS steps
(a checkpoint every 5, all kept) and run B resumes a copy of A's checkpoint at RESUME_AT to STEPS;
the inverter stage reads the generator stage's run A as its frozen G and D. Both runs share XLA's
persistent compilation cache, so run B compiles nothing new.
Usage: ``python tests/_zignerf_train_run.py TMPDIR STEPS RESUME_AT``.
"""
import json
import os
import pathlib
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))
sys.path.insert(0, str(ROOT / "tests"))

from _b1_train_run import _digest, _metrics, _resume_copy  # noqa: E402


def main():
  tmp, steps, resume_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  every = 5
  jax.config.update("jax_compilation_cache_dir",
                    os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(tmp, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  import zignerf as cfg_mod
  from jaxinv.train import load_checkpoint, train_and_evaluate

  def config(stage, **over):
    c = cfg_mod.get_config(f"stage={stage},runlocal")
    c.total_steps = steps
    c.checkpoint_every = every
    c.keep_checkpoints = 100
    c.tensorboard = False
    c.checkpoint_async = False
    for k, v in over.items():
      c[k] = v
    return c

  out = {}
  for stage in ("generator", "inverter"):
    c = config(stage)
    if stage == "inverter":
      c.generator.path = os.path.join(tmp, "generator", "a")
    wa, wb = os.path.join(tmp, stage, "a"), os.path.join(tmp, stage, "b")
    t0 = time.time()
    train_and_evaluate(c, wa)
    t1 = time.time()
    _resume_copy(wa, wb, resume_at)
    train_and_evaluate(c, wb)
    t2 = time.time()
    a, b = load_checkpoint(wa), load_checkpoint(wb)
    out[stage] = dict(
        metrics=_metrics(wa), resumed_metrics=_metrics(wb),
        digest=_digest(a["params"]), resumed_digest=_digest(b["params"]),
        state_digest=_digest(a["model_state"]), resumed_state_digest=_digest(b["model_state"]),
        mid_digest=_digest(load_checkpoint(wa, step=resume_at)["params"]),
        seconds=[round(t1 - t0, 1), round(t2 - t1, 1)])
  # Both runs exported as the shipped files are (python -m jaxinv.train.export) and read back.
  import numpy as np
  from jaxinv.inversion import zignerf as zi
  from jaxinv.models import giraffe as gm
  from jaxinv.train.tasks import zignerf as ztask
  gpath, ipath = os.path.join(tmp, "G.npz"), os.path.join(tmp, "I.npz")
  ztask.export(os.path.join(tmp, "generator", "a"), gpath, evaluate=False)
  manifest = ztask.export(os.path.join(tmp, "inverter", "a"), ipath, evaluate=False)
  G, inverter = gm.load(gpath), zi.load_inverter(ipath)
  trained = load_checkpoint(os.path.join(tmp, "inverter", "a"))["params"]["I"]
  leaves = lambda t: [np.asarray(x) for x in jax.tree_util.tree_leaves(t)]  # noqa: E731
  g_trained = load_checkpoint(os.path.join(tmp, "generator", "a"))["params"]["G"]
  out["export"] = dict(
      same_config=inverter[1] == G.config, steps=manifest["steps"],
      inverter_equal=all(np.array_equal(x, y) for x, y in
                         zip(leaves(trained), leaves(inverter[0].params))),
      generator_equal=all(np.array_equal(x, y) for x, y in
                          zip(leaves(g_trained), leaves(G.variables["params"]))))
  # The inverter on a fixed batch of G's scenes at its initial, mid and final parameters (at the
  # source pose, as its image loss sees them): the per-step log draws new scenes every step.
  import jax.numpy as jnp
  from jaxinv.models.encoders import zignerf as zenc
  from jaxinv.train.tasks import build_task
  from jaxinv.train.step import INIT_KEY_FOLD
  c = config("inverter")
  c.generator.path = os.path.join(tmp, "generator", "a")
  module = zenc.for_generator(G.config, tuple(c.inverter.channels), int(c.inverter.hidden))
  key = jax.random.PRNGKey(5)
  codes = gm.sample_codes(key, 16, G.config)
  theta = jax.random.uniform(jax.random.fold_in(key, 1), (16,), minval=0, maxval=2 * np.pi)
  cam = gm.rotate_label(zi.canonical_label(jnp.zeros(16)), theta)
  image = G(codes, zi.canonical_label(jnp.zeros(16)), theta[:, None])["image"]
  init = build_task(c).init(jax.random.fold_in(jax.random.PRNGKey(c.seed), INIT_KEY_FOLD))

  def score(params):
    res = zi.invert(G, zi.Inverter(module, params), image, cam)
    return dict(
        latent_l1=float(np.mean([np.abs(np.asarray(res.codes[k]) - np.asarray(codes[k])).mean()
                                 for k in zi.CODE_PARTS])),
        image_l1=float(jnp.mean(jnp.abs(res.render()["image"] - image))))
  wa = os.path.join(tmp, "inverter", "a")
  out["inverter_fixed_batch"] = dict(
      init=score(init.params["I"]), mid=score(load_checkpoint(wa, step=resume_at)["params"]["I"]),
      final=score(trained))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
  # Skip interpreter teardown (XLA / checkpointer threads): a crash there once turned a finished
  # run into a SIGSEGV exit code under a loaded machine.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)
