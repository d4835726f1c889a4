"""Seconds per image of every ``jaxinv.invert`` method on this machine (CPU unless a GPU is there).

    python bench/invert.py --preset tiny [--methods psp goae w pti ...] [--steps 20] [--batch 1]
    python bench/invert.py --preset ffhq512_slim --methods goae w pti --steps 20

Presets (random weights; timing only, the images mean nothing):
  tiny          the tiny EG3D (128 px output, 32^2 neural rendering) with tiny stand-in encoders
                (the released encoders' call signatures, a few layers each).
  ffhq512_slim  EG3D's FFHQ-512 topology (512 px, 8X superresolution, 48+48 samples per ray,
                128^2 neural rendering) with slim channel widths (the shared fixture's kwargs),
                the full-size GOAE encoder (Swin-V2, 256 px) and the AFA at the generator's
                feature width. pSp-family and TriPlaneNet entries use the full IR-SE-50 networks.

Each entry: ``compile_s`` (first call: tracing + compilation + one run), ``seconds_per_image``
(median of ``--runs`` further calls / batch). Optimisation baselines run ``--steps`` steps (and
PTI ``--steps`` pivot + ``--steps`` tuning steps); their per-step cost is reported too, so the
papers' budgets (W+ 1000 steps, PTI 450 + 350) can be extrapolated. Results go to
bench/results/invert_<device>.{json,md} with the load average at the start and end of each entry.

Not here yet: the official GOAE inference and the official PTI loop in the same run (they need
torch and the upstream sources).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("JAXINV_SHARED", REPO.parent / "shared"))
ALL = ("psp", "e4e", "preim3d", "triplanenet", "goae", "nerf3de", "w", "wplus", "pti",
       "triplane_opt")


def _load() -> str:
  try:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
  except OSError:
    return "n/a"


def _generator(preset):
  from jaxinv.models.eg3d import EG3DConfig, EG3DGenerator, init_params, tiny_eg3d
  import jax
  if preset == "tiny":
    return tiny_eg3d(0)
  cfg = json.loads((SHARED / "fixtures" / "eg3d" / preset / "config.json").read_text())
  kw = dict(cfg["constructor_kwargs"])
  kw["neural_rendering_resolution"] = cfg.get("neural_rendering_resolution", 128)
  config = EG3DConfig.from_init_kwargs(kw)
  return EG3DGenerator(config, init_params(config, jax.random.PRNGKey(0)))


def _stand_ins():
  import flax.linen as nn
  from jaxinv.models.encoders.triplanenet import offsets_to_planes
  from jaxinv.ops.pooling import adaptive_avg_pool2d

  class Codes(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.relu(nn.Conv(16, (3, 3), strides=(4, 4))(x))
      h = adaptive_avg_pool2d(h, 4).reshape(x.shape[0], -1)
      return nn.Dense(14 * 512)(h).reshape(-1, 14, 512) * 0.05

  class Offsets(nn.Module):
    @nn.compact
    def __call__(self, x):
      return offsets_to_planes(nn.Conv(96, (3, 3))(x) * 0.01)
  return Codes(), Offsets()


def _weights(preset, method, G):
  import jax
  import jax.numpy as jnp
  from jaxinv.convert.psp import EncoderCheckpoint, build_encoder
  from jaxinv.convert.triplanenet import TriPlaneNetCheckpoint
  from jaxinv.inversion import goae as gi
  key = jax.random.PRNGKey(1)
  w = {"generator": G}
  x3, x6 = jnp.zeros((1, 256, 256, 3)), jnp.zeros((1, 256, 256, 6))
  if preset == "tiny":
    codes, offsets = _stand_ins()
    if method in ("psp", "e4e", "preim3d", "triplanenet"):
      ck = EncoderCheckpoint("GradualStyleEncoder", codes, jax.jit(codes.init)(key, x3), None, {})
      w["encoder"] = ck
      if method == "triplanenet":
        w["encoder"] = TriPlaneNetCheckpoint(codes, ck.variables, offsets,
                                             jax.jit(offsets.init)(key, x6), {}, {})
  elif method in ("psp", "e4e", "preim3d", "triplanenet"):
    from jaxinv.models.encoders.triplanenet import TriPlaneEncoder
    kind = {"psp": "GradualStyleEncoder", "e4e": "Encoder4Editing",
            "preim3d": "BackboneEncoderUsingLastLayerIntoWPlus", "triplanenet": "GradualStyleEncoder"}
    m = build_encoder(kind[method], 14)
    ck = EncoderCheckpoint(kind[method], m, jax.jit(m.init)(key, x3), None, {})
    w["encoder"] = ck
    if method == "triplanenet":
      t = TriPlaneEncoder()
      w["encoder"] = TriPlaneNetCheckpoint(m, ck.variables, t, jax.jit(t.init)(key, x6), {}, {})
  if method == "goae":
    from jaxinv.models.encoders.goae import AFAConfig, GOAEncoderConfig
    feat = gi._feature_channels(G)
    if preset == "tiny":
      sys.path.insert(0, str(REPO / "tests"))
      from _goae_helpers import tiny_afa_config, tiny_encoder_config
      ecfg, acfg = tiny_encoder_config(w_dim=512, ws_split=(1, 3, 3, 7)), tiny_afa_config(feat)
    else:
      ecfg, acfg = GOAEncoderConfig(), AFAConfig(feat_dim=feat)
    w["encoder"] = gi.init_goae(key, ecfg, acfg, image_size=G.config.img_resolution)
  if method == "nerf3de":
    from jaxinv.inversion import nerf3de as n3
    from jaxinv.models.encoders.nerf3de import NeRF3DEConfig
    cfg = NeRF3DEConfig(backbone="small", input_size=64) if preset == "tiny" else NeRF3DEConfig()
    model = n3.NeRF3DE.build(cfg)
    w["encoder"] = (model, jax.jit(model.init)(key))
  return w


def _options(method, steps):
  small = {"num_w_samples": 1000}
  if method in ("w", "wplus"):
    return dict(small, steps=steps)
  if method == "pti":
    return dict(small, pivot_steps=steps, steps=steps)
  if method == "triplane_opt":
    return dict(small, start="w", start_steps=steps, steps=max(1, steps // 20),
                max_linesearch_steps=20)
  return {}


def bench(preset, method, G, batch, runs, steps) -> dict:
  import jax
  import jax.numpy as jnp
  import jaxinv
  from jaxinv.render.camera import Camera
  w = _weights(preset, method, G)
  c = jnp.broadcast_to(Camera.look_at(0.2, 0.0).label, (batch, 25))
  ws = G.mapping(jax.random.normal(jax.random.PRNGKey(2), (batch, G.z_dim)), c)
  image = jnp.clip(G.synthesis(ws, c)["image"], -1, 1)
  opts = _options(method, steps)
  load0 = _load()

  def once():
    inv = jaxinv.invert(image, c, method=method, weights=w, key=jax.random.PRNGKey(3), **opts)
    jax.block_until_ready(jax.tree_util.tree_leaves(inv.replace(G=None)))
    return inv

  t = time.perf_counter()
  once()
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    once()
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  out = {"method": method, "batch": batch, "compile_s": compile_s, "median_s": med,
         "seconds_per_image": med / batch, "runs": runs, "options": opts,
         "load_start": load0, "load_end": _load()}
  if method in ("w", "wplus", "pti"):
    n = steps * (2 if method == "pti" else 1)
    out["seconds_per_step_per_image"] = med / batch / n
  return out


def _markdown(meta, rows) -> str:
  lines = [f"# jaxinv.invert seconds per image ({meta['device']}, preset {meta['preset']})", "",
           f"jax {meta['jax']}, {meta['cpus']} CPU(s) shared with other jobs; load average "
           "(1/5/15 min) at the start and end of each entry. Random weights (timing only).", "",
           "| method | batch | s / image | first call (compile) s | s / step / image | load start -> end |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['method']} | | error: {r['error'][:80]} | | | |")
      continue
    sps = r.get("seconds_per_step_per_image")
    lines.append(f"| {r['method']} | {r['batch']} | {r['seconds_per_image']:.3f} | "
                 f"{r['compile_s']:.1f} | {'' if sps is None else f'{sps:.3f}'} | "
                 f"{r['load_start']} -> {r['load_end']} |")
  lines += ["", "Optimisation baselines ran `--steps` steps (PTI: that many pivot + tuning steps; "
            "tri-plane L-BFGS steps/20 steps after a W start); scale by the papers' budgets with "
            "the per-step column. The comparison with the official GOAE / PTI code in the same run "
            "is not done yet.", ""]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="tiny", choices=("tiny", "ffhq512_slim"))
  p.add_argument("--methods", nargs="+", default=list(ALL), choices=ALL)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--out", default=None, help="results path stem (default bench/results/invert_<device>)")
  args = p.parse_args(argv)
  import jax
  device = jax.devices()[0].platform
  meta = {"preset": args.preset, "device": device, "jax": jax.__version__,
          "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
  G = _generator(args.preset)
  stem = pathlib.Path(args.out or REPO / "bench" / "results" / f"invert_{device}")
  rows = []
  for m in args.methods:
    try:
      rows.append(bench(args.preset, m, G, args.batch, args.runs, args.steps))
    except Exception as e:  # one method's failure must not lose the others' numbers
      rows.append({"method": m, "error": f"{type(e).__name__}: {e}"})
    print(json.dumps(rows[-1]), flush=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    stem.with_suffix(".md").write_text(_markdown(meta, rows))


if __name__ == "__main__":
  main()
