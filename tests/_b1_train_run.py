"""Runs a ``runlocal`` config (triplanenet or nerf3de) through the train loop; JSON on the last line.

Used by tests/test_train_triplanenet.py and tests/test_nerf3de_train.py in a subprocess
(``launch``). Usage:
``python tests/_b1_train_run.py METHOD TMPDIR STEPS RESUME_AT [CKPT_EVERY] [FIELD=VALUE ...]``
(integer config overrides such as ``schedule.stop_psp=2``; ``$B1_TINY_G`` names an already saved
tiny generator to reuse).

Run A trains STEPS steps (a checkpoint every 10, all kept); run B gets a copy of A's checkpoint
at RESUME_AT only and resumes from it through the loop to STEPS. The tiny generator is built once
and saved, and both runs share XLA's persistent compilation cache, so run B compiles nothing new.
"""
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))


def _digest(tree):
  import numpy as np
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def launch(method, tmp, steps, resume_at, timeout=2400):
  """Runs this script for ``method`` in a subprocess (one CPU device); its JSON result."""
  import subprocess
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run([sys.executable, os.path.abspath(__file__), method, str(tmp), str(steps),
                      str(resume_at)], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=timeout)
  assert p.returncode == 0, p.stderr[-4000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


def series(rows, name, lo, hi):
  """The logged values of ``name`` over steps ``lo..hi``."""
  return [r[name] for r in rows if lo <= r["step"] <= hi and name in r]


def _resume_copy(src, dst, step):
  ck_src, ck_dst = os.path.join(src, "checkpoints"), os.path.join(dst, "checkpoints")
  os.makedirs(ck_dst)
  for name in os.listdir(ck_src):
    if name.isdigit() and int(name) != step:
      continue
    s, d = os.path.join(ck_src, name), os.path.join(ck_dst, name)
    (shutil.copytree if os.path.isdir(s) else shutil.copy)(s, d)


def main():
  method, tmp, steps, resume_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
  every = int(sys.argv[5]) if len(sys.argv) > 5 else 10
  overrides = dict(a.split("=", 1) for a in sys.argv[6:])
  jax.config.update("jax_compilation_cache_dir",
                    os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(tmp, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  from jaxinv.convert import eg3d as eg3d_convert
  from jaxinv.models.eg3d import tiny_eg3d
  from jaxinv.train import load_checkpoint, train_and_evaluate
  cfg_mod = __import__(method)
  t = time.time()
  g_path = os.environ.get("B1_TINY_G") or os.path.join(tmp, "tiny_eg3d.npz")
  if not os.path.exists(g_path):
    eg3d_convert.save(tiny_eg3d(0, neural_rendering_resolution=16), g_path)
  out = {"build_seconds": round(time.time() - t, 1)}

  def config():
    c = cfg_mod.get_config("runlocal")
    c.generator.path = g_path
    c.total_steps = steps
    c.checkpoint_every = every
    for k, v in overrides.items():
      node = c
      *path, last = k.split(".")
      for q in path:
        node = node[q]
      node[last] = int(v)
    c.keep_checkpoints = 100
    c.progress = False
    c.tensorboard = False
    c.checkpoint_async = False
    return c

  wa, wb = os.path.join(tmp, "a"), os.path.join(tmp, "b")
  t0 = time.time()
  train_and_evaluate(config(), wa)
  t1 = time.time()
  _resume_copy(wa, wb, resume_at)
  train_and_evaluate(config(), wb)
  t2 = time.time()
  cks = {s: load_checkpoint(wa, step=s) for s in range(every, steps + 1, every)}
  ck = {s: v["params"] for s, v in cks.items()}
  out.update(
      metrics=_metrics(wa), resumed_metrics=_metrics(wb),
      digests={str(s): {g: _digest(p[g]) for g in p} for s, p in ck.items()},
      # BatchNorm statistics only (TriPlaneNet's ``first_pass`` hand-over changes every step).
      model_state_digests={str(s): _digest({k: x for k, x in v.get("model_state", {}).items()
                                            if k != "first_pass"}) for s, v in cks.items()},
      resumed_digest={g: _digest(p) for g, p in load_checkpoint(wb)["params"].items()},
      seconds=[round(t1 - t0, 1), round(t2 - t1, 1)])
  print(json.dumps(out))


if __name__ == "__main__":
  main()
  # Skip interpreter teardown (XLA / checkpointer threads): a crash there once turned a finished
  # run into a SIGSEGV exit code under a loaded machine.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)
