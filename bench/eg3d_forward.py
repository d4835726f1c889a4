"""EG3D forward ``G(z, c)``: jaxinv vs the official PyTorch code, in the same run, on this machine.

    python bench/eg3d_forward.py --eg3d-src /tmp/eg3d_src/eg3d [--configs tiny ffhq512_slim]

``--eg3d-src`` is a checkout of github.com/NVlabs/eg3d (the folder holding ``training/``); it is only
imported by the benchmark, never vendored. torch is needed here only (``pip install torch``).
Every (implementation, config) pair runs in its own subprocess, so the peak resident memory
(``ru_maxrss``) belongs to it alone; the two implementations alternate so that background load hits
both alike. Weights and inputs are the golden fixtures' (``../shared/fixtures/eg3d/<config>``). Both
sides run the renderer with every random draw = 0.5 (as the fixtures), so their outputs are also
compared. Writes ``bench/results/eg3d_forward_cpu.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = pathlib.Path(os.environ.get("JAXINV_SHARED", REPO.parent / "shared")) / "fixtures" / "eg3d"


def _load_fixture(name):
  d = FIXTURES / name
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "state_dict.npz") as z:
    sd = {k: z[k] for k in z.files}
  with np.load(d / "stages.npz") as z:
    st = {k: z[k] for k in z.files if k.startswith("G_forward.")}
  return cfg, sd, st


def _worker_torch(name, repeats, eg3d_src, out_npz):
  import torch
  sys.path.insert(0, eg3d_src)
  from training.triplane import TriPlaneGenerator  # noqa: E402  (official code, bench only)
  cfg, sd, st = _load_fixture(name)
  G = TriPlaneGenerator(**cfg["constructor_kwargs"]).eval().requires_grad_(False)
  G.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  # The fixtures' convention: both random calls of the renderer return 0.5.
  torch.rand_like = lambda x, **kw: torch.full_like(x, 0.5)
  _rand = torch.rand
  torch.rand = lambda *a, **kw: torch.full(a if not isinstance(a[0], (tuple, list)) else a[0], 0.5)
  z = torch.from_numpy(st["G_forward.z"])
  c = torch.from_numpy(st["G_forward.c"])
  r = int(st["G_forward.neural_rendering_resolution"])

  def run():
    with torch.no_grad():
      return G(z, c, truncation_psi=float(st["G_forward.truncation_psi"]),
               truncation_cutoff=int(st["G_forward.truncation_cutoff"]),
               neural_rendering_resolution=r, noise_mode="const")

  t0 = time.perf_counter()
  out = run()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = run()
    times.append(time.perf_counter() - t0)
  torch.rand = _rand
  np.savez(out_npz, image=out["image"].numpy().transpose(0, 2, 3, 1),
           image_depth=out["image_depth"].numpy().transpose(0, 2, 3, 1))
  return dict(first_call_s=first, times_s=times, threads=torch.get_num_threads(),
              version=torch.__version__)


def _worker_jax(name, repeats, out_npz):
  import jax
  sys.path.insert(0, str(REPO))
  from jaxinv.convert import eg3d as eg3d_convert
  cfg, sd, st = _load_fixture(name)
  G = eg3d_convert.from_state_dict(sd, cfg["constructor_kwargs"])
  r = int(st["G_forward.neural_rendering_resolution"])
  b = st["G_forward.z"].shape[0]
  o = G.config.render_options
  draws = dict(u_stratified=np.full((b, r * r, o.depth_resolution), 0.5, np.float32),
               u_importance=np.full((b, r * r, o.depth_resolution_importance), 0.5, np.float32))

  def run():
    out = G(st["G_forward.z"], st["G_forward.c"], truncation_psi=float(st["G_forward.truncation_psi"]),
            truncation_cutoff=int(st["G_forward.truncation_cutoff"]), neural_rendering_resolution=r,
            draws=draws)
    return jax.block_until_ready(out)

  t0 = time.perf_counter()
  out = run()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = run()
    times.append(time.perf_counter() - t0)
  np.savez(out_npz, image=np.asarray(out["image"]), image_depth=np.asarray(out["image_depth"]))
  return dict(first_call_s=first, times_s=times, version=jax.__version__,
              backend=jax.default_backend())


def _spawn(impl, name, repeats, eg3d_src, tmp):
  out_npz = os.path.join(tmp, f"{impl}_{name}.npz")
  cmd = [sys.executable, __file__, "--worker", impl, "--configs", name, "--repeats", str(repeats),
         "--eg3d-src", eg3d_src or "", "--out-npz", out_npz]
  r = subprocess.run(cmd, capture_output=True, text=True)
  if r.returncode != 0:
    raise RuntimeError(f"{impl} worker for {name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
  res = json.loads(r.stdout.strip().splitlines()[-1])
  with np.load(out_npz) as z:
    res["outputs"] = {k: z[k] for k in z.files}
  return res


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--eg3d-src", required=True, help="path of the official EG3D code (the folder with training/)")
  p.add_argument("--configs", nargs="+", default=["tiny", "ffhq512_slim"])
  p.add_argument("--repeats", type=int, default=3, help="timed calls after the first (warm-up) call")
  p.add_argument("--rounds", type=int, default=2, help="alternating torch/jax worker rounds per config")
  p.add_argument("--out", default=str(REPO / "bench" / "results"))
  p.add_argument("--worker", choices=["torch", "jax"], help=argparse.SUPPRESS)
  p.add_argument("--out-npz", help=argparse.SUPPRESS)
  a = p.parse_args()

  if a.worker:
    name = a.configs[0]
    if a.worker == "torch":
      res = _worker_torch(name, a.repeats, a.eg3d_src, a.out_npz)
    else:
      res = _worker_jax(name, a.repeats, a.out_npz)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))
    return

  if not (pathlib.Path(a.eg3d_src) / "training" / "triplane.py").exists():
    sys.exit(f"--eg3d-src {a.eg3d_src}: training/triplane.py not found (pass the folder of the "
             "official EG3D code that holds training/)")
  results = dict(machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                              loadavg_start=os.getloadavg()),
                 note="CPU only (no GPU was lent). Wall times of one G(z, c) forward, batch 2, "
                      "float32; torch under no_grad, jaxinv jit-compiled (first call includes "
                      "compilation). Both implementations alternate in separate processes.",
                 configs={})
  with tempfile.TemporaryDirectory() as tmp:
    for name in a.configs:
      runs = {"torch": [], "jax": []}
      for _ in range(a.rounds):
        for impl in ("torch", "jax"):
          res = _spawn(impl, name, a.repeats, a.eg3d_src, tmp)
          print(f"{name} {impl}: first {res['first_call_s']:.2f}s, times "
                f"{[round(t, 2) for t in res['times_s']]}, peak {res['peak_rss_mb']:.0f} MB",
                flush=True)
          runs[impl].append(res)
      entry = {}
      for impl, rs in runs.items():
        times = [t for r in rs for t in r["times_s"]]
        entry[impl] = dict(median_s=statistics.median(times), min_s=min(times), times_s=times,
                           first_call_s=[r["first_call_s"] for r in rs],
                           peak_rss_mb=max(r["peak_rss_mb"] for r in rs),
                           version=rs[0]["version"])
      entry["ratio_median_jax_over_torch"] = entry["jax"]["median_s"] / entry["torch"]["median_s"]
      entry["ratio_min_jax_over_torch"] = entry["jax"]["min_s"] / entry["torch"]["min_s"]
      ot, oj = runs["torch"][-1]["outputs"], runs["jax"][-1]["outputs"]
      entry["max_abs_diff"] = {k: float(np.abs(ot[k] - oj[k]).max()) for k in ot}
      results["configs"][name] = entry
  results["machine"]["loadavg_end"] = os.getloadavg()

  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "eg3d_forward_cpu.json").write_text(json.dumps(results, indent=1))
  lines = ["# EG3D forward G(z, c), CPU", "", results["note"], "",
           f"Machine: {results['machine']['platform']}, {results['machine']['cpus']} CPUs, load "
           f"average {results['machine']['loadavg_start'][0]:.1f} -> "
           f"{results['machine']['loadavg_end'][0]:.1f} (shared machine).", "",
           "| config | official torch median (min) | jaxinv median (min) | ratio jaxinv/torch median (min) "
           "| peak RSS torch / jaxinv | jaxinv first call | max abs diff image / depth |",
           "|---|---|---|---|---|---|---|"]
  for name, e in results["configs"].items():
    lines.append(
        f"| {name} | {e['torch']['median_s']:.2f} s ({e['torch']['min_s']:.2f}) | "
        f"{e['jax']['median_s']:.2f} s ({e['jax']['min_s']:.2f}) | "
        f"{e['ratio_median_jax_over_torch']:.2f} ({e['ratio_min_jax_over_torch']:.2f}) | "
        f"{e['torch']['peak_rss_mb']:.0f} / {e['jax']['peak_rss_mb']:.0f} MB | "
        f"{max(e['jax']['first_call_s']):.1f} s | "
        f"{e['max_abs_diff']['image']:.2g} / {e['max_abs_diff']['image_depth']:.2g} |")
  lines += ["", "Target: jaxinv G(z, c) at ffhq512_slim <= 0.5x the official wall time.", ""]
  (out / "eg3d_forward_cpu.md").write_text("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
