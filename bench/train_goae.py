"""GOAE training-step throughput (images/s) of stage 1 and stage 2 on the one train loop (CPU/GPU).

    python bench/train_goae.py [--generator tiny|ffhq512_slim] [--size release|tiny] [--batch 2]
        [--steps 4] [--stages 1,2] [--out bench/results/train_goae_cpu]

GOAE's authors released their training code only as an archive that is not part of the public
repository, so there is no official step to run beside this one: the figure is jaxinv's alone.
Writes ``<out>.json`` and ``<out>.md``.

Setup (each stage in its own child process, so memory peaks do not add):

* generator: the golden EG3D fixture ``fixtures/eg3d/<generator>`` (official weights via
  ``jaxinv.convert.eg3d``; ``tiny``: 128 px, R = 32, 12+12 samples; ``ffhq512_slim``: 512 px,
  R = 128, 48+48).
* networks: ``--size release`` is GOAE's Swin-V2 encoder (256 px input) and AFA at the
  generator's feature width (``configs/goae.py`` ``model.encoder/afa``), random weights; LPIPS-alex
  and the IR-SE-50 ArcFace are the fixture weights, at ``losses.loss_resolution`` 256; the paper's
  loss weights.
* data: ``configs/goae.py:stage=S,runlocal`` for everything else (no dataset: a fixed bank of 8
  images generated on device at start, which the step indexes; stage 2's frozen encoder is
  random), with the full config's optimisers (Ranger lr 1e-4; latent D Adam lr 2e-5).
  Progressive stages all on (``progressive.stage_list = (0, 0, 0)``), so every step trains every
  w+ row. Stage 1's latent-D R1 runs every 16 steps under ``lax.cond`` (step 0 included): its
  cost falls in the first call, not in the timed steps.
* timing: the loop's jitted, donated step (``jaxinv.train.step.make_step_fn``); the first call
  (compile + one step) apart; ``--steps`` timed steps after it; images/s = batch / median step.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "configs"))


def _child(a) -> dict:
  import jax
  import train_step as ts  # bench/train_step.py: fixture conversion, load, RSS helpers
  import goae as goae_config
  from jaxinv.train import state as state_lib
  from jaxinv.train import step as step_lib
  from jaxinv.train.tasks import build_task

  t0 = time.perf_counter()
  files = ts._jaxinv_files(a.generator)
  c = goae_config.get_config(f"stage={a.stage},runlocal")
  c.batch_size = a.batch
  c.generator.path = files["G"]
  c.generator.neural_rendering_resolution = 0       # the fixture's own
  c.model.encoder = c.model.afa = a.size
  c.losses.update(dict(lpips_path=files["lpips"], arcface_path=files["arcface"],
                       loss_resolution=256))
  c.data.synthetic.bank = 8
  c.progressive.stage_list = (0, 0, 0)
  c.latent_d.r1_every = 16
  full = goae_config.get_config(f"stage={a.stage}")
  c.optim = full.optim                 # the paper's optimisers (runlocal's Adam 1e-3 is for tiny nets)
  task = build_task(c)
  params, ms, frozen = task.init(jax.random.PRNGKey(0))
  state = state_lib.create(params, ms, task.optimizers, 0)
  step = jax.jit(step_lib.make_step_fn(task), donate_argnums=0)
  build_s = time.perf_counter() - t0
  n_params = {g: sum(x.size for x in jax.tree_util.tree_leaves(p)) for g, p in params.items()}

  def one(state):
    t = time.perf_counter()
    state, m = step(state, frozen, {})
    jax.block_until_ready((state, m))
    return state, time.perf_counter() - t, float(m["loss"])

  load = lambda: " ".join(f"{x:.2f}" for x in ts._load())
  load0 = load()
  state, first, _ = one(state)            # step 0: compile + run (R1 included in stage 1)
  times, losses = [], []
  for _ in range(a.steps):
    state, t, loss = one(state)
    times.append(t)
    losses.append(loss)
  med = statistics.median(times)
  return dict(stage=a.stage, generator=a.generator, size=a.size, batch=a.batch, steps=a.steps,
              step_s=times, median_step_s=med, images_per_s=a.batch / med, compile_s=first,
              build_s=build_s, loss=losses, params=n_params, peak_rss_mb=ts._rss_mb(),
              load_start=load0, load_end=load(), jax=jax.__version__,
              backend=jax.default_backend(), jaxinv_commit=_commit())


def _commit() -> str:
  try:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _markdown(meta, rows) -> str:
  lines = [f"# GOAE training step, jaxinv ({meta['backend']})", "",
           f"{meta['cpus']} CPU(s); started {meta['started']}. Command: `{meta['command']}`", "",
           "| stage | generator | networks | batch | s / step (median) | images / s | "
           "first call (compile + step) s | trainable params | peak RSS MB | load start -> end |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['stage']} | | error: {r['error'][:120]} | | | | | | | |")
      continue
    p = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in r["params"].items())
    lines.append(f"| {r['stage']} | {r['generator']} | {r['size']} | {r['batch']} | "
                 f"{r['median_step_s']:.2f} | {r['images_per_s']:.2f} | {r['compile_s']:.0f} | "
                 f"{p} | {r['peak_rss_mb']:.0f} | {r['load_start']} -> {r['load_end']} |")
  lines += ["", "Per-step times (s): " + "; ".join(
      f"stage {r['stage']}: " + ", ".join(f"{t:.2f}" for t in r["step_s"])
      for r in rows if "error" not in r), "",
      "No official figure: GOAE's training code is not in its public repository. Stage 1's "
      "latent-D R1 (every 16 steps) ran in the first call only.", ""]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--generator", default="tiny", choices=("tiny", "ffhq512_slim"))
  p.add_argument("--size", default="release", choices=("release", "tiny"))
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--stages", default="1,2")
  p.add_argument("--out", default=None)
  p.add_argument("--stage", type=int, help=argparse.SUPPRESS)     # child
  p.add_argument("--child-out", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.batch < 1 or a.steps < 1:
    p.error("--batch and --steps must be >= 1")
  if a.stage:
    pathlib.Path(a.child_out).write_text(json.dumps(_child(a)))
    return
  stages = [int(s) for s in a.stages.split(",") if s]
  if not stages or any(s not in (1, 2) for s in stages):
    p.error(f"--stages: a comma list of 1 and 2, got {a.stages!r}")
  import jax
  backend = jax.default_backend()
  stem = pathlib.Path(a.out or ROOT / "bench" / "results" / f"train_goae_{backend}")
  meta = dict(backend=backend, cpus=os.cpu_count(),
              command="python bench/train_goae.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
  rows = []
  for s in stages:
    out = stem.parent / f".{stem.name}_stage{s}.json"
    stem.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--stage", str(s), "--child-out", str(out),
           "--generator", a.generator, "--size", a.size, "--batch", str(a.batch),
           "--steps", str(a.steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
      rows.append(dict(stage=s, error=(proc.stderr.strip().splitlines() or ["failed"])[-1]))
    else:
      rows.append(json.loads(out.read_text()))
      out.unlink()
    print(json.dumps(rows[-1])[:600], flush=True)
  meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, results=rows), indent=1))
  stem.with_suffix(".md").write_text(_markdown(meta, rows))


if __name__ == "__main__":
  main()
