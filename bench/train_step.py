"""Times jaxinv's pSp / PREIM3D train steps (encoder forward + backward through G, L2 + LPIPS + ID).

  python bench/train_step.py [--tasks psp,preim3d] [--steps 10] [--arg runlocal] [--out bench/results]

Writes ``train_step_<backend>.{json,md}`` with the machine's load average next to every entry.
The step is the one the loop runs (``jaxinv.train.step.make_step_fn``), jitted with the state
donated; compile time is reported apart from the steady-state time per step.

Not done yet: the official pSp / PREIM3D coach step (PyTorch) in the same run, which the issue
asks for as the reference (target <= 1.0x on CPU).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))


def time_task(name: str, arg: str, steps: int) -> dict:
  from jaxinv.train import state as state_lib
  from jaxinv.train import step as step_lib
  from jaxinv.train.tasks import build_task
  config = importlib.import_module(name).get_config(arg)
  task = build_task(config)
  params, ms, frozen = task.init(jax.random.PRNGKey(0))
  state = state_lib.create(params, ms, task.optimizers, 0)
  step = jax.jit(step_lib.make_step_fn(task), donate_argnums=0)
  t = time.perf_counter()
  state, m = step(state, frozen, None)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, frozen, None)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  times.sort()
  return dict(task=name, arg=arg, batch_size=int(config.batch_size), steps=steps,
              first_step_s=compile_s, median_step_s=times[len(times) // 2],
              images_per_s=int(config.batch_size) / times[len(times) // 2],
              load_average=os.getloadavg(), backend=jax.default_backend())


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--tasks", default="psp,preim3d")
  ap.add_argument("--arg", default="runlocal")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  rows = []
  stem = os.path.join(a.out, f"train_step_{jax.default_backend()}")
  for name in a.tasks.split(","):
    rows.append(time_task(name, a.arg, a.steps))
    with open(stem + ".json", "w") as f:
      json.dump(rows, f, indent=1)
    with open(stem + ".md", "w") as f:
      f.write("| task | config | batch | first step (s, incl. compile) | median step (s) | "
              "images/s | load avg (1/5/15 min) |\n|---|---|---|---|---|---|---|\n")
      for r in rows:
        f.write(f"| {r['task']} | {r['arg']} | {r['batch_size']} | {r['first_step_s']:.1f} | "
                f"{r['median_step_s']:.3f} | {r['images_per_s']:.2f} | "
                f"{'/'.join(f'{x:.1f}' for x in r['load_average'])} |\n")
    print(rows[-1], flush=True)


if __name__ == "__main__":
  main()
