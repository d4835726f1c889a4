"""Edit an inversion along a latent direction and render the result.

  jaxinv edit out/me/latents.npz --direction smile.npz --alpha 1.5 --outdir out/me_smile
  jaxinv edit out/me/latents.npz --direction age.npy --alpha=-2,-1,0,1,2 --outdir out/me_age

LATENTS is the latents.npz that `jaxinv invert` writes (``jaxinv.Inversion.save``). Each method
edits by its own rule: latent codes move along the direction; TriPlaneNet / tri-plane
optimisation keep their offsets; GOAE shifts its refined features (F* + F(w_edit) - F(w)) and
re-mixes; PTI renders with its tuned generator (stored beside the latents). The direction is a
.npz from ``jaxinv.inversion.directions`` (InterfaceGAN, PREIM3D, GANSpace) or a bare .npy
vector ([512] or [num_ws, 512]). --generator must be the generator the inversion was made with
(default: the one recorded in LATENTS, or the built-in toy generator).

Writes into --outdir, per alpha A: edit_A.png (input camera), edit_A_views.png (--views),
edit_A.npz (the edited inversion), and with --mesh-resolution > 0 edit_A.ply; plus strip.png
(every alpha side by side at the input camera).
"""
from __future__ import annotations

import os

import numpy as np

HELP = "edit an inversion (latents.npz from `jaxinv invert`) along a direction file and render it"


def add_arguments(p) -> None:
  p.add_argument("latents", help="latents.npz written by `jaxinv invert`")
  p.add_argument("--direction", required=True, help="direction .npz (jaxinv) or .npy vector")
  p.add_argument("--alpha", default="1.0", help="strength(s), comma-separated (default 1.0); "
                                                "use --alpha=-1,0,1 for negative values")
  p.add_argument("--generator", help="the generator the inversion was made with (EG3D .pkl/.npz)")
  p.add_argument("--outdir", required=True)
  p.add_argument("--views", default="-0.4,0,0.4", help="yaws (radians) of the view grid")
  p.add_argument("--mesh-resolution", type=int, default=0, help="also write a mesh per alpha")
  p.add_argument("--overwrite", action="store_true")


def _alphas(text):
  try:
    out = [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ValueError(f"--alpha: expected comma-separated numbers, got {text!r}") from None
  if not out:
    raise ValueError("--alpha: no values")
  return out


def _tag(a: float) -> str:
  return f"{a:+g}".replace("+", "p").replace("-", "m").replace(".", "_")


def run(args) -> int:
  from jaxinv.cli import output_dir, refuse_existing
  from jaxinv.cli.invert import parse_yaws
  from jaxinv.inversion import directions
  from jaxinv.inversion.result import Inversion, to_uint8

  alphas = _alphas(args.alpha)
  yaws = parse_yaws(args.views)
  if not os.path.isfile(args.latents):
    raise FileNotFoundError(f"latents: no such file: {args.latents}")
  if not os.path.isfile(args.direction):
    raise FileNotFoundError(f"--direction: no such file: {args.direction}")
  if args.generator and not os.path.isfile(args.generator):
    raise FileNotFoundError(f"--generator: no such file: {args.generator}")
  out = output_dir(args.outdir, what="--outdir")
  planned = [os.path.join(out, f"edit_{_tag(a)}{s}") for a in alphas
             for s in (".png", "_views.png", ".npz")] + [os.path.join(out, "strip.png")]
  refuse_existing(*planned, overwrite=args.overwrite)
  direction = directions.load(args.direction)

  from jaxinv import api
  G = None
  source = args.generator or Inversion.generator_source(args.latents)
  with np.load(args.latents, allow_pickle=False) as f:
    is_pti = '"method": "pti"' in str(f["meta"]) if "meta" in f.files else False
  if not is_pti:
    if source and source != "toy" and not source.startswith("weights:"):
      G = api.load_generator(source)
    elif source.startswith("weights:"):
      import json
      with open(source[len("weights:"):]) as fh:
        gen = json.load(fh).get("generator")
      G = api.load_generator(gen) if gen else api.load_generator("toy")
    else:
      G = api.load_generator("toy")
  inv = Inversion.load(args.latents, G)
  os.makedirs(out, exist_ok=True)
  from PIL import Image
  strip = []
  for a in alphas:
    e = inv.edit(direction, a)
    img = to_uint8(e.render()["image"][0])
    strip.append(img)
    tag = _tag(a)
    Image.fromarray(img).save(os.path.join(out, f"edit_{tag}.png"))
    views = [to_uint8(e.render(yaw=y)["image"][0]) for y in yaws]
    Image.fromarray(np.concatenate(views, axis=1)).save(os.path.join(out, f"edit_{tag}_views.png"))
    e.save(os.path.join(out, f"edit_{tag}.npz"), generator_source=source or "")
    if args.mesh_resolution:
      e.save_mesh(os.path.join(out, f"edit_{tag}.ply"), args.mesh_resolution)
  Image.fromarray(np.concatenate(strip, axis=1)).save(os.path.join(out, "strip.png"))
  print(f"wrote {len(alphas)} edit(s) to {out}")
  return 0
