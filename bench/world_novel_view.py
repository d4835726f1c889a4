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
    python bench/world_novel_view.py --scenes 64 --methods zignerf      # only ZIGNeRF's table

``zignerf`` (issue 14) has its own table: its generator is GIRAFFE-style, a turn of the object in
front of a fixed camera, so its novel views are turns ``-offset`` of the object and the truth is
the world turned by exactly that (``giraffe.rotate_label``); the offsets add +-pi/2 and pi, which
the EG3D generators cannot render. Rows: the inverter with its pose head, with ``search=8``, and
with the true pose given; references: G at the true codes and pose (its ceiling) and G at the
prior's mean codes (0) at the true pose. Depth is scored at G's feature resolution.

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
Z_OFFSETS = (-np.pi, -np.pi / 2, -0.6, -0.3, 0.0, 0.3, 0.6, np.pi / 2)


def _zignerf(zs, batch: int) -> dict:
  """ZIGNeRF's rows (see the module docstring): {row: dict(metrics, seconds_per_image)}."""
  from jaxinv.eval import metrics
  from jaxinv.inversion import zignerf as zi
  from jaxinv.models import giraffe as gm
  from jaxinv.train.tasks.zignerf import world_codes
  G, _ = zi.load_toy()
  r, fr = G.config.img_resolution, G.config.feature_resolution

  def score(render, z, theta_in, pitch_in):
    out = {}
    for off in Z_OFFSETS:
      pred = render(off)
      cw = gm.rotate_label(zi.canonical_label(pitch_in), theta_in - off)
      truth = world.render(z, cw, resolution=r)
      raw = world.render(z, cw, resolution=fr)
      out[f"{off:+.2f}"] = dict(
          psnr=float(np.mean(metrics.psnr(pred["image"], truth["image"]))),
          ssim=float(np.mean(metrics.ssim(pred["image"], truth["image"]))),
          depth_l1=float(np.mean(metrics.depth_error(pred["depth"], raw["depth"], raw["mask"]))))
    return out

  rows = {k: ([], []) for k in ("ceiling", "prior_mean", "zignerf", "zignerf_search8",
                                "zignerf_true_pose")}
  weights = []
  for i in range(0, len(zs), batch):
    z = zs[i:i + batch]
    b = len(z)
    theta_in, pitch_in = np.zeros(b, np.float32), np.zeros(b, np.float32)
    c_in = gm.rotate_label(zi.canonical_label(pitch_in), theta_in)
    image = world.render(z, c_in, resolution=r)["image"]
    weights.append(b)
    codes = world_codes(jnp.asarray(z))
    truth = zi.ZIGNeRFInversion(G, codes, jnp.asarray(theta_in)[:, None], jnp.asarray(pitch_in),
                                jnp.zeros((b, 1, 3)))
    zero = truth.replace(codes={k: jnp.zeros_like(v) for k, v in codes.items()})
    for name, inv in (("ceiling", truth), ("prior_mean", zero)):
      rows[name][0].append(score(lambda off, inv=inv: inv.render(yaw=off), z, theta_in, pitch_in))
      rows[name][1].append(0.0)
    for name, opts in (("zignerf", dict()), ("zignerf_search8", dict(search=8)),
                       ("zignerf_true_pose", dict(pose=c_in))):
      pose = opts.pop("pose", None)
      t0 = time.time()
      inv = jaxinv.invert(image, pose, method="zignerf", **opts)
      jax.block_until_ready(inv.rotation)
      rows[name][1].append((time.time() - t0) / b)
      rows[name][0].append(score(lambda off, inv=inv: inv.render(yaw=off), z, theta_in, pitch_in))
  return {name: dict(metrics=_mean(rs, weights), seconds_per_image=float(np.median(ts)))
          for name, (rs, ts) in rows.items()}


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

  zs = np.asarray(world.sample_z(jax.random.PRNGKey(SEED), a.scenes))
  methods = [m for m in a.methods.split(",") if m]
  results, z_results = {}, None
  if "zignerf" in methods:
    methods.remove("zignerf")
    z_results = _zignerf(zs, a.batch)
  if not methods:
    return _write(a, argv, results, z_results)
  G = jaxinv.load_generator("toy")

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

  for method in methods:
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
  return _write(a, argv, results, z_results)


def _origin(m: dict, key: str) -> dict:
  """The meta of the run that measured a kept table: follow ``key`` (``eg3d_meta`` /
  ``zignerf_meta``) to its end; without it, ``m``'s own run measured it."""
  while m.get(key):
    m = m[key]
  return {k: v for k, v in m.items() if k not in ("eg3d_meta", "zignerf_meta")}


def _write(a, argv, results, z_results):
  meta = dict(scenes=a.scenes, seed=SEED, input_yaw=a.yaw, offsets=list(OFFSETS), batch=a.batch,
              command="python bench/world_novel_view.py " + " ".join(argv if argv is not None
                                                                     else sys.argv[1:]),
              machine=platform.platform(), cpu_count=os.cpu_count(),
              load_average=list(os.getloadavg()), jax=jax.__version__,
              backend=jax.default_backend())
  os.makedirs(os.path.dirname(a.out), exist_ok=True)
  # A run of only some methods keeps the other table of an earlier run, with the meta of the run
  # that measured it.
  old = {}
  if os.path.exists(a.out + ".json"):
    with open(a.out + ".json") as f:
      old = json.load(f)
  old_meta = old.get("meta") or {}
  if not results and old.get("results"):
    results, meta["eg3d_meta"] = old["results"], _origin(old_meta, "eg3d_meta")
  elif results and old.get("results"):
    # Rows of methods not re-run now are kept when they scored the same scenes from the same
    # input camera; each kept row carries the command and load it was measured with.
    om = _origin(old_meta, "eg3d_meta")
    if all(om.get(k) == meta[k] for k in ("scenes", "seed", "input_yaw", "offsets")):
      for name, r in old["results"].items():
        if name not in results:
          results[name] = dict(r, measured=r.get("measured") or dict(
              command=om.get("command"), load_average=om.get("load_average")))
  if z_results is None and old.get("zignerf"):
    z_results, meta["zignerf_meta"] = old["zignerf"], _origin(old_meta, "zignerf_meta")
  with open(a.out + ".json", "w") as f:
    json.dump(dict(meta=meta, results=results, zignerf=z_results), f, indent=1)
  em = meta.get("eg3d_meta") or meta
  lines = ["# World novel-view benchmark (ground truth from jaxinv.data.world)", "",
           f"{em['scenes']} held-out scenes, input yaw {em['input_yaw']:+.1f}; PSNR dB / SSIM / "
           "foreground depth L1 (world units) at each yaw offset; machine load "
           f"{em['load_average'][0]:.1f}.", "",
           "| method | options | s/image | " + " | ".join(f"{o:+.1f}" for o in OFFSETS) + " |",
           "|---|---|---|" + "---|" * len(OFFSETS)]
  for name, r in results.items():
    cells = [f"{v['psnr']:.2f} / {v['ssim']:.3f} / {v['depth_l1']:.3f}"
             for v in r["metrics"].values()]
    opts = json.dumps(r.get("options", {})) if name not in ("ceiling", "mean_latent") else (
        "true z" if name == "ceiling" else "mean of 1000 w")
    lines.append(f"| {name} | {opts} | {r['seconds_per_image']:.2f} | " + " | ".join(cells) + " |")
  lines += ["", f"Command: `{(meta.get('eg3d_meta') or meta)['command']}`; s/image: the median "
            "over batches of the invert call's time / batch (the first batch includes compilation)."]
  for name, r in results.items():
    if r.get("measured"):
      lines.append(f"Row `{name}` is from an earlier run, `{r['measured']['command']}` (load "
                   f"{(r['measured'].get('load_average') or [float('nan')])[0]:.1f}).")
  if z_results:
    zm = meta.get("zignerf_meta") or meta
    lines += ["", "## ZIGNeRF (compositional GIRAFFE generator, built-in world models)", "",
              f"{zm['scenes']} held-out scenes, input turn 0 and pitch 0; the novel view at offset o "
              "is the object turned by -o (the world turned exactly so is the truth); +-1.57 and "
              "-3.14 are side and back views. PSNR dB / SSIM / foreground depth L1 at G's feature "
              f"resolution; machine load {zm['load_average'][0]:.1f}.", "",
              "| row | s/image | " + " | ".join(f"{o:+.2f}" for o in Z_OFFSETS) + " |",
              "|---|---|" + "---|" * len(Z_OFFSETS)]
    for name, r in z_results.items():
      cells = [f"{v['psnr']:.2f} / {v['ssim']:.3f} / {v['depth_l1']:.3f}"
               for v in r["metrics"].values()]
      lines.append(f"| {name} | {r['seconds_per_image']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{zm['command']}`. ceiling: G at the true codes and pose; prior_mean: "
              "G at codes 0; zignerf: the inverter with its pose head; _search8: the turn refined "
              "over 8 turns; _true_pose: the input camera given as pose."]
  with open(a.out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
