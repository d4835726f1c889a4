"""Subprocess worker for tests/test_train_loop.py (run with fake CPU devices set in XLA_FLAGS).

``python tests/_train_worker.py devices OUT_DIR [DATA_PATH]``: the debug task for 3 steps on 1, 4 and 8
devices (and a data=2 x fsdp=4 mesh), reading x from the dataset DATA_PATH if given, saving each run's params to OUT_DIR/<name>.npz, plus
checks written to OUT_DIR/checks.json (per-device batch rows, transfer guard).
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def debug_config(**kw):
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
  import debug
  c = debug.get_config()
  c.progress = False
  c.tensorboard = False
  c.checkpoint_async = False
  for k, v in kw.items():
    if k.startswith("mesh_"):
      c.mesh[k[5:]] = v
    elif k == "data_path":
      c.data.path = v
    else:
      c[k] = v
  return c


def flat(params):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in
          jax.tree_util.tree_flatten_with_path(params)[0]}


def write_dataset(path, n=24, size=8):
  """A tiny EG3D-format dataset (random 8x8 images, frontal cameras)."""
  from jaxinv.data.eg3d_dataset import write_eg3d_dataset
  from jaxinv.data.synthetic import C_FRONT
  rng = np.random.RandomState(0)
  images = rng.randint(0, 255, (n, size, size, 3)).astype(np.uint8)
  return write_eg3d_dataset(path, images, np.tile(C_FRONT, (n, 1)))


def devices(out, data_path=""):
  import jaxinv.train as T
  from jaxinv.parallel import sharding as shd
  from jaxinv.train import state as state_lib, step as step_lib
  from jaxinv.train.tasks import build_task
  assert len(jax.devices()) == 8, jax.devices()
  runs = {"d1": dict(mesh_num_devices=1), "d4": dict(mesh_num_devices=4),
          "d8": dict(mesh_num_devices=8),
          "fsdp": dict(mesh_num_devices=8, mesh_data=2, mesh_fsdp=4, fsdp_min_size=1)}
  for name, kw in runs.items():
    wd = os.path.join(out, name)
    T.train_and_evaluate(debug_config(total_steps=3, log_every=1, checkpoint_every=3,
                                      data_path=data_path, **kw), wd)
    np.savez(os.path.join(out, name + ".npz"), **flat(T.load_checkpoint(wd)["params"]))

  checks = {}
  config = debug_config()
  task = build_task(config)
  mesh = shd.make_train_mesh(8, 1)
  params, ms, frozen = task.init(jax.random.PRNGKey(0))
  state = jax.device_put(state_lib.create(params, ms, task.optimizers, 0),
                         step_lib.state_shardings(state_lib.create(params, ms, task.optimizers, 0),
                                                  mesh))
  frozen = shd.replicate(frozen, mesh)
  make = jax.jit(lambda f, k, s: step_lib._constrain_batch(task.make_batch(f, k, s, None), mesh,
                                                           config.batch_size))
  batch = make(frozen, jax.random.PRNGKey(1), jnp.int32(0))
  checks["shard_rows"] = sorted({s.data.shape[0] for s in batch["x"].addressable_shards})
  checks["n_shards"] = len(batch["x"].addressable_shards)
  step, _ = step_lib.jit_step(task, mesh, state, frozen, None, config.batch_size)
  state, m = step(state, frozen, None)  # compile (and the first run) outside the guard
  jax.block_until_ready(state)
  with jax.transfer_guard("disallow"):
    state, m = step(state, frozen, None)
    jax.block_until_ready((state, m))
  checks["transfer_guard_ok"] = True
  with open(os.path.join(out, "checks.json"), "w") as f:
    json.dump(checks, f)


if __name__ == "__main__":
  {"devices": devices}[sys.argv[1]](*sys.argv[2:])
