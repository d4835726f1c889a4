"""Convert published checkpoints to jaxinv's native format (one .npz, no pickle, loads fast).

Examples:
  jaxinv convert eg3d ffhq512-128.pkl ffhq512-128.jaxinv.npz
  jaxinv convert eg3d state_dict.pt out.npz --init-kwargs kwargs.json

The EG3D reader needs neither torch nor the EG3D source and executes nothing inside the file;
a pickle that asks to call anything outside an allow-list (e.g. os.system) is refused.
An existing OUTPUT is never replaced unless --overwrite is given.
"""
from __future__ import annotations

import json

HELP = "convert published checkpoints to jaxinv's native format"


def _convert_eg3d(args) -> int:
  from jaxinv.convert import eg3d
  kwargs = None
  if args.init_kwargs:
    with open(args.init_kwargs) as f:
      kwargs = json.load(f)
  G = eg3d.convert_file(args.input, args.output, kwargs)
  n = sum(int(v.size) for v in __import__("jax").tree_util.tree_leaves(G.params))
  print(f"wrote {args.output}: EG3D {G.config.superresolution_module.rsplit('.', 1)[-1]}, "
        f"{G.config.img_resolution}px, R={G.config.neural_rendering_resolution}, {n:,} parameters")
  return 0


def _convert_psp_family(encoder_type):
  def convert(args) -> int:
    from jaxinv.convert import psp
    ck = psp.convert_file(args.input, args.output, encoder_type)
    la = "with" if ck.latent_avg is not None else "without"
    print(f"wrote {args.output}: {ck.encoder_type}, {ck.model.n_styles} styles, {la} latent_avg")
    return 0
  return convert


def _convert_triplanenet(args) -> int:
  from jaxinv.convert import triplanenet
  ck = triplanenet.convert_file(args.input, args.output, args.eg3d)
  note = "with latent_avg" if args.eg3d else "without latent_avg (pass --eg3d eg3d_ffhq.pt)"
  print(f"wrote {args.output}: TriPlaneNet v1 encoders ({ck.psp_model.n_styles} styles), {note}")
  return 0


def _convert_arcface(args) -> int:
  from jaxinv.convert import irse
  irse.convert_file(args.input, args.output)
  print(f"wrote {args.output}: ArcFace IR-SE-50 (identity loss / ID metric)")
  return 0


def _convert_lpips(net):
  def convert(args) -> int:
    from jaxinv.convert import lpips
    lpips.convert_file(args.input, args.output, net, args.heads)
    print(f"wrote {args.output}: LPIPS v0.1 {net} (trunk + linear heads)")
    return 0
  return convert


def _convert_goae(kind):
  def convert(args) -> int:
    from jaxinv.convert import goae
    goae.convert_file(args.input, args.output, kind)
    what = "Swin-V2 latent encoder" if kind == goae.ENCODER_KIND else "AFA refinement module"
    print(f"wrote {args.output}: GOAE {what}")
    return 0
  return convert


def _convert_inception(args) -> int:
  from jaxinv.convert import inception
  params = inception.convert_file(args.input, args.output)
  n = sum(int(v.size) for d in params.values() for v in d.values())
  print(f"wrote {args.output}: FID Inception-v3 ({len(params)} conv layers, {n:,} parameters; "
        "FID/KID in jaxinv eval --weights inception=FILE)")
  return 0


# kind -> (converter, one-line help). Other kinds register here with the same signature.
CONVERTERS = {
    "eg3d": (_convert_eg3d, "EG3D generator: network .pkl, .pt/.npz state dict (+ --init-kwargs)"),
    "psp": (_convert_psp_family(None), "pSp encoder .pt (encoder_type from the file's opts)"),
    "e4e": (_convert_psp_family("Encoder4Editing"), "e4e encoder .pt"),
    "preim3d": (_convert_psp_family(None), "PREIM3D encoder .pt (W+ or e4e, from its opts)"),
    "triplanenet": (_convert_triplanenet, "TriPlaneNet v1 .pt (+ --eg3d for latent_avg)"),
    "arcface": (_convert_arcface, "ArcFace IR-SE-50 model_ir_se50.pth (identity loss)"),
    "lpips-alex": (_convert_lpips("alex"), "torchvision alexnet-owt-*.pth (+ --heads alex.pth)"),
    "lpips-vgg": (_convert_lpips("vgg"), "torchvision vgg16-*.pth (+ --heads vgg.pth)"),
    "goae-encoder": (_convert_goae("goae_encoder"), "GOAE encoder_FFHQ.pt (Swin-V2 latent encoder)"),
    "goae-afa": (_convert_goae("goae_afa"), "GOAE afa_FFHQ.pt (AFA feature refinement)"),
    "inception": (_convert_inception, "pytorch-fid pt_inception-2015-12-05-6726825d.pth (FID/KID)"),
}


def add_arguments(p) -> None:
  p.add_argument("kind", choices=sorted(CONVERTERS),
                 help="what the checkpoint holds: " + "; ".join(f"{k}: {h}" for k, (_, h) in sorted(CONVERTERS.items())))
  p.add_argument("input", help="source checkpoint (.pkl, .pt, .npz)")
  p.add_argument("output", help="destination (jaxinv native .npz)")
  p.add_argument("--init-kwargs", default=None,
                 help="JSON file with the constructor kwargs (needed for bare state dicts)")
  p.add_argument("--eg3d", default=None,
                 help="triplanenet: TriPlaneNet's EG3D checkpoint (G_ema, init_kwargs, latent_avg)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace OUTPUT if it exists (default: refuse)")
  p.add_argument("--heads", default=None,
                 help="lpips-*: the lpips package's weights/v0.1/{alex,vgg}.pth (default: from an "
                      "installed lpips package)")


def run(args) -> int:
  import os

  from jaxinv.cli import CommandError, refuse_existing
  inputs = [("input", args.input)] + [(f"--{n.replace('_', '-')}", getattr(args, n))
                                      for n in ("init_kwargs", "eg3d", "heads")
                                      if getattr(args, n, None)]
  for what, path in inputs:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{what}: no such file: {path}")
    if os.path.exists(args.output) and os.path.samefile(path, args.output):
      raise CommandError(f"output {args.output} is the same file as {what}")
  refuse_existing(args.output, overwrite=args.overwrite)
  return CONVERTERS[args.kind][0](args)
