"""Ground-truth novel-view benchmark on the procedural world (issue 12, item 6).

For held-out scenes ``z`` of ``jaxinv.data.world`` seen from an input camera, every method inverts
the input view (``jaxinv.invert(image, pose=c, method=...)`` with the built-in toy generator) and
its result is rendered at yaw offsets from the input camera; each render is compared with the
world's exact render at that camera: PSNR and SSIM of the image, mean |depth error| on the world's
foreground, time per image. Two references frame the table:

* ``mean_latent``: the generator at its mean latent (``ws`` averaged over 1000 z), no inversion;
* ``ceiling``: the generator at the true ``z`` (``G(z, c)``), its own fit of the world (not an
  upper bound for inversion: an optimised w can fit a view better than the true z does).

    python bench/world_novel_view.py --scenes 64 --methods w,pti        # writes bench/results/
    python bench/world_novel_view.py --scenes 2 --methods w --steps 20  # a smoke run

Scenes are inverted ``--batch`` at a time (one ``invert`` call each); ``--steps`` sets ``steps``
of every optimisation baseline (and PTI's ``pivot_steps``).

Writes ``bench/results/world_novel_view.{json,md}`` (or ``--out``). Never part of the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv
from jaxinv.data import world
from jaxinv.eval import world_views

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = world_views.SEED   # held-out: the toy G's training never draws from this key
OFFSETS = (-0.6, -0.3, 0.0, 0.3, 0.6)


def _score(render_fn, z, yaw0, G):
  """Per offset: PSNR, SSIM at G's image size, foreground depth error at its neural resolution
  (``jaxinv.eval.world_views.score_view``: the same code path as ``jaxinv eval --data world``)."""
  out = {}
  for off in OFFSETS:
    c = world.orbit_label(np.full(len(z), yaw0 + off))
    s = world_views.score_view(render_fn(c), z, c, G)
    out[f"{off:+.1f}"] = {k: float(np.mean(v)) for k, v in s.items()}
  return out


def _mean(rows, weights):
  """Scene-weighted mean of per-batch means."""
  keys = rows[0].keys()
  return {k: {m: float(np.average([r[k][m] for r in rows], weights=weights)) for m in rows[0][k]}
          for k in keys}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--scenes", type=int, default=64)
  p.add_argument("--methods", default="w,pti", help="comma-separated jaxinv.invert methods")
  p.add_argument("--steps", type=int, default=None, help="optimisation steps (w/wplus/pti)")
  p.add_argument("--yaw", type=float, default=0.0, help="input-view yaw (radians)")
  p.add_argument("--batch", type=int, default=8, help="scenes per invert call")
  p.add_argument("--out", default=os.path.join(HERE, "results", "world_novel_view"))
  a = p.parse_args(argv)

  G = jaxinv.load_generator("toy")
  zs = np.asarray(world.sample_z(jax.random.PRNGKey(SEED), a.scenes))
  results = {}

  # References: the generator's own fit (true z) and its mean latent.
  batches = [zs[i:i + a.batch] for i in range(0, len(zs), a.batch)]
  rows, weights = [], []
  for z in batches:
    rows.append(_score(lambda c, z=z: G(z, c), z, a.yaw, G))
    weights.append(len(z))
  results["ceiling"] = dict(metrics=_mean(rows, weights), seconds_per_image=0.0)
  zbig = world.sample_z(jax.random.PRNGKey(SEED + 1), 1000)
  c0 = world.orbit_label(np.zeros(1000))
  ws_avg = jnp.mean(G.mapping(zbig, c0), axis=0, keepdims=True)
  rows = [_score(lambda c, z=z: G.synthesis(jnp.repeat(ws_avg, len(z), 0), c), z, a.yaw, G)
          for z in batches]
  results["mean_latent"] = dict(metrics=_mean(rows, weights), seconds_per_image=0.0)

  for method in filter(None, a.methods.split(",")):
    rows, secs = [], []
    opts = {} if a.steps is None else dict(steps=a.steps)
    if method == "pti" and a.steps is not None:
      opts["pivot_steps"] = a.steps
    for z in batches:
      c_in = world.orbit_label(np.full(len(z), a.yaw))
      image = world.render(z, c_in, resolution=G.config.img_resolution)["image"]
      t0 = time.time()
      inv = jaxinv.invert(image, pose=c_in, method=method, key=jax.random.PRNGKey(0), **opts)
      jax.block_until_ready(inv.ws)
      secs.append((time.time() - t0) / len(z))
      rows.append(_score(lambda c, inv=inv: inv.render(c), z, a.yaw, G))
    # The first batch includes compilation; report the median over batches.
    results[method] = dict(metrics=_mean(rows, weights), seconds_per_image=float(np.median(secs)),
                           options=opts)

  meta = dict(scenes=a.scenes, seed=SEED, input_yaw=a.yaw, offsets=list(OFFSETS), batch=a.batch,
              command="python bench/world_novel_view.py " + " ".join(argv if argv is not None
                                                                     else sys.argv[1:]),
              machine=platform.platform(), cpu_count=os.cpu_count(),
              load_average=list(os.getloadavg()), jax=jax.__version__,
              backend=jax.default_backend())
  os.makedirs(os.path.dirname(a.out), exist_ok=True)
  with open(a.out + ".json", "w") as f:
    json.dump(dict(meta=meta, results=results), f, indent=1)
  lines = ["# World novel-view benchmark (ground truth from jaxinv.data.world)", "",
           f"{a.scenes} held-out scenes, input yaw {a.yaw:+.1f}; PSNR dB / SSIM / foreground depth "
           "L1 (world units) at each yaw offset; machine load " f"{meta['load_average'][0]:.1f}.", "",
           "| method | options | s/image | " + " | ".join(f"{o:+.1f}" for o in OFFSETS) + " |",
           "|---|---|---|" + "---|" * len(OFFSETS)]
  for name, r in results.items():
    cells = [f"{v['psnr']:.2f} / {v['ssim']:.3f} / {v['depth_l1']:.3f}"
             for v in r["metrics"].values()]
    opts = json.dumps(r.get("options", {})) if name not in ("ceiling", "mean_latent") else (
        "true z" if name == "ceiling" else "mean of 1000 w")
    lines.append(f"| {name} | {opts} | {r['seconds_per_image']:.2f} | " + " | ".join(cells) + " |")
  lines += ["", f"Command: `{meta['command']}`; s/image: the median over batches of {a.batch} of "
            "the invert call's time / batch (the first batch includes compilation)."]
  with open(a.out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
