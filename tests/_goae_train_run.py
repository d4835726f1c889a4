"""Runs GOAE stage 1 and stage 2 (runlocal) through the train loop; JSON results on stdout's last line.

Used by tests/test_train_goae.py in a subprocess (own XLA compile cache, no state shared with
the test process). Usage: ``python tests/_goae_train_run.py TMPDIR STEPS1 STEPS2``.

For each stage: run A trains STEPS steps (checkpoints every STEPS/2, all kept); run B gets a copy
of A's checkpoint at STEPS/2 only and resumes from it through the loop to STEPS. Stage 2 reads
the stage-1 encoder from run A's workdir and trains on a one-image bank.
"""
import hashlib
import json
import os
import pathlib
import sys
import time

import jax

# One XLA cache for all runs of this process: the resumed runs reuse the compiled steps.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(sys.argv[1], "xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))
sys.path.insert(0, str(ROOT / "tests"))

import goae as goae_config  # noqa: E402  (configs/goae.py)
from _b1_train_run import _digest as _tree_digest, _metrics, _resume_copy  # noqa: E402
from jaxinv.convert import eg3d as eg3d_convert  # noqa: E402
from jaxinv.models.eg3d import tiny_eg3d  # noqa: E402
from jaxinv.train import load_checkpoint, train_and_evaluate  # noqa: E402
from jaxinv.train.tasks import build_task  # noqa: E402


def _config(stage, g_path, steps, **extra):
  c = goae_config.get_config(f"stage={stage},runlocal")
  c.generator.path = g_path
  c.total_steps = steps
  c.log_every = 1
  c.checkpoint_every = steps // 2
  c.keep_checkpoints = 10
  c.progress = False
  c.tensorboard = False
  c.checkpoint_async = False
  c.bg_depth.num_samples = 4
  for k, v in extra.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def _files_digest(root):
  h = hashlib.sha256()
  for p in sorted(pathlib.Path(root).rglob("*")):
    if p.is_file():
      h.update(str(p.relative_to(root)).encode())
      h.update(p.read_bytes())
  return h.hexdigest()


def _stage(stage, tmp, g_path, steps, **extra):
  t0 = time.time()
  wa, wb = os.path.join(tmp, f"s{stage}a"), os.path.join(tmp, f"s{stage}b")
  train_and_evaluate(_config(stage, g_path, steps, **extra), wa)
  t1 = time.time()
  _resume_copy(wa, wb, steps // 2)
  train_and_evaluate(_config(stage, g_path, steps, **extra), wb)
  t2 = time.time()
  a, b = load_checkpoint(wa), load_checkpoint(wb)
  ma, mb = _metrics(wa), _metrics(wb)
  return dict(
      workdir=wa, metrics=ma, resumed_metrics=mb, groups=sorted(a["params"]),
      final_digest=_tree_digest(a["params"]), resumed_digest=_tree_digest(b["params"]),
      init_digest=_tree_digest(load_checkpoint(wa, step=steps // 2)["params"]),
      steps=[a["step"], b["step"]], seconds=[round(t1 - t0, 1), round(t2 - t1, 1)])


def main():
  tmp, steps1, steps2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  t = time.time()
  g_path = os.path.join(tmp, "tiny_eg3d.npz")
  eg3d_convert.save(tiny_eg3d(0, neural_rendering_resolution=16), g_path)
  out = dict(build_seconds=round(time.time() - t, 1))
  out["stage1"] = s1 = _stage(1, tmp, g_path, steps1)
  stage1_files = _files_digest(os.path.join(s1["workdir"], "checkpoints"))
  s1_encoder = load_checkpoint(s1["workdir"])["params"]["encoder"]
  # Stage 2 on ONE bank image (batch 1): its l2 is then comparable from step to step, so the
  # test can ask it to fall (over a 32-image bank each step sees another image).
  out["stage2"] = _stage(2, tmp, g_path, steps2, **{"encoder.checkpoint": s1["workdir"],
                                                    "data.synthetic.bank": 1})
  # The stage-1 run is untouched, and stage 2's frozen encoder is exactly its final encoder.
  out["stage1_files_unchanged"] = stage1_files == _files_digest(
      os.path.join(s1["workdir"], "checkpoints"))
  cfg2 = _config(2, g_path, steps2, **{"encoder.checkpoint": s1["workdir"]})
  frozen = build_task(cfg2).init(jax.random.PRNGKey(0)).frozen
  out["stage2_encoder_is_stage1"] = _tree_digest(frozen["encoder"]) == _tree_digest(s1_encoder)
  out["total_seconds"] = round(time.time() - t, 1)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
  # Skip interpreter teardown (XLA / checkpointer threads): a crash there once turned a finished
  # run into a SIGSEGV exit code under a loaded machine.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)
