"""Evaluate an inversion method as the papers do: one command from a test set to a table.

  jaxinv eval --method goae --data ffhq_test/ --outdir out/goae \\
      --weights generator=ffhq512-128.pkl --weights encoder=encoder_FFHQ.pt \\
      --weights afa=afa_FFHQ.pt --weights lpips=lpips_alex.npz --weights arcface=model_ir_se50.npz
  jaxinv eval --method pti --data world --num 64 --outdir out/pti --option steps=100
  jaxinv eval --method w,wplus,pti --data world --num 16 --outdir out/table   # one table, rows = methods
  jaxinv eval --compare out/goae out/pti --outdir out/table                    # runs made separately

--data: an EG3D-format dataset (a folder or .zip with dataset.json camera labels) or ``world``,
the procedural world's held-out scenes, where every novel view also has its true image and depth.
Per item: MSE, PSNR, SSIM, MS-SSIM, LPIPS and ID similarity at the input view; ID at the novel
yaws of --yaws (TriPlaneNet's +-0.3/+-0.6/+-0.8 rad); on the world also PSNR / SSIM / foreground
depth error against the true views; seconds per image.

--weights KEY=FILE (repeatable) or a JSON file {KEY: FILE}: generator (default: the built-in toy
generator), encoder, afa (GOAE), lpips (native LPIPS .npz from `jaxinv convert lpips`: the LPIPS
metric, and the loss of the optimisation baselines), arcface (native ArcFace .npz from `jaxinv
convert arcface`: the ID metric), inception (pytorch-fid's pt_inception-2015-12-05-6726825d.pth
or its `jaxinv convert inception` .npz: FID and KID of the reconstructions and of each yaw's
renders against the inputs). A metric whose weights are not given is left out and the table says
so.

Several methods (--method a,b,c) are evaluated one after the other into OUT/<method>/ with the
same weights and data, then compared: OUT/results.md has one row per method (input view) and one
table per novel-view metric, OUT/per_yaw.png a line per method, OUT/grid.png each method's row per
item. --compare DIR [DIR ...] builds the same from finished evaluations (e.g. methods that need
different --weights).

Batches (--batch) are split over every available device (GPUs, TPU cores) when --batch is a
multiple of the device count.

OUT/ gets results.json, results.md (the table with its protocol: crop, ID network, resolution,
skipped items), per_yaw.png, grid.png (per item: input | reconstruction | novel views; the
world's true views below), previews/, items.jsonl (one line per finished item) and, with
Inception weights, features/ (each item's Inception features, for FID/KID over the whole set). Running the
same command again resumes: finished items are skipped.
"""
from __future__ import annotations

import json
import os

HELP = "evaluate a method on an EG3D dataset or the procedural world: metrics table, plots, JSON"
KEYS = ("generator", "encoder", "afa", "lpips", "arcface", "inception")


def add_arguments(p) -> None:
  p.add_argument("--method", help="a jaxinv.invert method (goae, pti, w, ...) or several, comma-separated")
  p.add_argument("--data", help="an EG3D dataset folder / .zip, or 'world'")
  p.add_argument("--compare", nargs="+", metavar="DIR",
                 help="finished evaluation folders to put in one table (no --method/--data)")
  p.add_argument("--outdir", required=True, help="output folder (resumed when it holds a run)")
  p.add_argument("--weights", action="append", default=[], metavar="KEY=FILE|JSON",
                 help=f"network files, keys {', '.join(KEYS)} (repeatable), or a JSON file")
  p.add_argument("--num", type=int, default=None,
                 help="items: the first N of the dataset; world: N held-out scenes (default 16)")
  p.add_argument("--batch", type=int, default=4, help="images per invert call (default 4)")
  p.add_argument("--yaws", default="-0.8,-0.6,-0.3,0.3,0.6,0.8",
                 help="novel-view yaws in radians (default -0.8,-0.6,-0.3,0.3,0.6,0.8)")
  p.add_argument("--input-yaw", type=float, default=0.0, help="world: the input camera's yaw")
  p.add_argument("--id-crop", default="psp", help="ID crop: psp (pSp IDLoss box) or none")
  p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                 help="a method option, e.g. steps=100 (repeatable)")
  p.add_argument("--seed", type=int, default=0, help="the PRNG seed of every invert call")
  p.add_argument("--grid", type=int, default=4, help="items shown in grid.png (default 4)")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_weights(items) -> dict:
  """['generator=G.pkl', 'w.json'] -> {'generator': 'G.pkl', ...} (paths checked)."""
  out = {}
  for item in items:
    if "=" in item and item.split("=", 1)[0] in KEYS:
      k, v = item.split("=", 1)
      out[k] = v
      continue
    if "=" in item:
      raise ValueError(f"--weights: unknown key {item.split('=', 1)[0]!r}; keys: {', '.join(KEYS)}")
    if not os.path.isfile(item):
      raise FileNotFoundError(f"--weights: expected KEY=FILE or a JSON file, no such file: {item}")
    with open(item) as f:
      try:
        d = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"--weights: {item} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or set(d) - set(KEYS):
      raise ValueError(f"--weights: {item} must hold an object with keys among {', '.join(KEYS)}")
    base = os.path.dirname(os.path.abspath(item))
    out.update({k: v if os.path.isabs(v) else os.path.join(base, v) for k, v in d.items()})
  for k, v in out.items():
    if not os.path.isfile(v):
      raise FileNotFoundError(f"--weights {k}: no such file: {v}")
  return out


def load_weights(paths: dict, method: str):
  """File paths -> ``jaxinv.eval.run.EvalWeights`` (generator default: the built-in toy one)."""
  from jaxinv.api import _load_weights
  from jaxinv.eval.run import EvalWeights
  from jaxinv.inversion.invert import Weights
  lp = arc = None
  if "lpips" in paths:
    from jaxinv.convert.lpips import load_native_lpips
    lp = load_native_lpips(paths["lpips"])
  if "arcface" in paths:
    from jaxinv.convert.irse import load_native_arcface
    arc = load_native_arcface(paths["arcface"])
  inc = None
  if "inception" in paths:
    from jaxinv.convert.inception import load as load_inception
    inc = load_inception(paths["inception"])
  inv = Weights(**{k: v for k, v in paths.items() if k not in ("arcface", "inception")})
  inv = _load_weights(inv, method)
  names = {k: os.path.basename(v) for k, v in paths.items()}
  names.setdefault("generator", "built-in toy generator (jaxinv/assets/toy_eg3d.npz)")
  if lp is not None:
    names["lpips"] = f"LPIPS-{lp[0]} ({names['lpips']})"
  if arc is not None:
    names["arcface"] = f"ArcFace IR-SE-50 ({names['arcface']})"
  if inc is not None:
    names["inception"] = f"FID Inception-v3 ({names['inception']})"
  return EvalWeights(invert=inv, lpips=lp, arcface=arc, inception=inc, names=names)


def run(args) -> int:
  from jaxinv.cli import output_dir
  from jaxinv.cli.invert import parse_options, parse_yaws
  from jaxinv.eval import run as eval_run
  from jaxinv.inversion.invert import INVERT_METHODS
  from jaxinv.eval import report
  if args.compare:
    if args.method or args.data:
      raise ValueError("--compare takes finished evaluation folders; no --method or --data")
    for d in args.compare:
      if not os.path.isfile(os.path.join(d, "results.json")):
        raise FileNotFoundError(f"--compare: {d} has no results.json (not a jaxinv eval output)")
    out = output_dir(args.outdir)
    report.compare(args.compare, str(out))
    print(open(os.path.join(out, "results.md")).read())
    return 0
  if not args.method or not args.data:
    raise ValueError("give --method and --data (or --compare DIR ... to combine finished runs)")
  methods = [m.strip() for m in args.method.split(",") if m.strip()]
  for m in methods:
    if m not in INVERT_METHODS:
      raise ValueError(f"--method: unknown {m!r}; one of {', '.join(INVERT_METHODS)}")
  if len(set(methods)) != len(methods):
    raise ValueError(f"--method: {args.method!r} names a method twice")
  if args.num is not None and args.num < 1:
    raise ValueError(f"--num must be >= 1, got {args.num}")
  if args.batch < 1:
    raise ValueError(f"--batch must be >= 1, got {args.batch}")
  if args.id_crop not in ("psp", "none"):
    raise ValueError(f"--id-crop: expected psp or none, got {args.id_crop!r}")
  if args.data != "world" and not os.path.exists(args.data):
    raise FileNotFoundError(f"--data: expected 'world' or an EG3D dataset folder / .zip, no such "
                            f"file or folder: {args.data}")
  yaws = parse_yaws(args.yaws, "--yaws")
  options = parse_options(args.option)
  out = output_dir(args.outdir)
  paths = parse_weights(args.weights)
  num = args.num if args.num is not None or args.data != "world" else 16
  skipped = 0
  for m in methods:
    run_out = out if len(methods) == 1 else out / m
    res = eval_run.evaluate(m, args.data, str(run_out), load_weights(paths, m), num=num,
                            batch=args.batch, yaws=yaws, input_yaw=args.input_yaw, seed=args.seed,
                            options=options, id_crop=args.id_crop, grid_items=args.grid,
                            progress=not args.no_progress)
    skipped += len(res["skipped"])
  if len(methods) > 1:
    report.compare([str(out / m) for m in methods], str(out))
  print(open(os.path.join(out, "results.md")).read())
  return 1 if skipped else 0
