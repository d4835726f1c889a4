"""Invert photos into an EG3D generator: from a picture to novel views, depth, a mesh and a video.

The flow, from a photo to a mesh:
  1. Get weights (once): an EG3D generator (the official ``ffhqrebalanced512-128.pkl`` is read
     directly, no torch needed) and, for the encoder methods, the method's released encoder
     (``jaxinv convert`` turns .pt files into .npz; both are accepted).
  2. Invert. With ``--pose detect`` (default) every photo is face-detected, cropped as EG3D's
     in-the-wild preprocessing does and given its camera (``jaxinv[faces]``); crops that are
     already aligned take ``--pose front`` or a dataset.json of labels:
       jaxinv invert me.jpg --method goae --generator ffhq512-128.pkl \\
           --encoder encoder_FFHQ.pt --afa afa_FFHQ.pt --outdir out/me
       jaxinv invert photos/ --method pti --generator ffhq512-128.pkl --lpips lpips_vgg.npz \\
           --option steps=350 --outdir out/pti
       jaxinv invert crops/ --method w --pose dataset.json --outdir out/w   # toy generator
  3. Look at OUT/<name>/: crop.png (what was inverted), reconstruction.png (rendered from the
     photo's camera), views.png (the yaws of --views), depth.png (near = bright), mesh.ply
     (marching cubes on the inverted tri-planes' density, vertex colours; opens in MeshLab /
     Blender), video.mp4 (a yaw sweep; .gif without the jaxinv[video] extra), latents.npz (the
     inversion: ``jaxinv.Inversion.load``; PTI also writes its tuned generator beside it), and
     OUT/summary.json (per image: status, timings in seconds, outputs; failures with their error).
  4. Edit: ``jaxinv edit OUT/<name>/latents.npz --direction smile.npz --alpha 1.5 --outdir E``.

Methods: encoders psp, e4e, preim3d, triplanenet, goae, nerf3de (need --encoder; goae also
--afa; psp without --generator or --encoder uses the built-in toy-world encoder); optimisation
baselines w, wplus, pti, triplane_opt (optional --lpips; without it they optimise L2 only).
Without --generator the built-in toy-world generator is used.

ZIGNeRF (``--method zignerf``) inverts into a GIRAFFE-style compositional generator, not EG3D:
``--generator`` / ``--encoder`` name its generator and inverter ``.npz`` (default: the built-in
world models); ``--pose detect`` (default) means the inverter's pose head (no face detection),
``front`` the unturned object, a labels file (turn, pitch) cameras. It writes reconstruction.png,
depth.png, views.png (turns of the object by the --views yaws), the video (a full turn) and
latents.npz (``jaxinv.inversion.zignerf.ZIGNeRFInversion.load``); no mesh. ``--option search=8``
refines the turn by rendering (see ``jaxinv.inversion.zignerf``). ``--demo --method zignerf``
scores it on a world scene, turns up to +-pi included.

The demo, no downloads: ``jaxinv invert --demo --outdir out/demo`` draws a scene of the
procedural world (``--seed``), inverts its image with the built-in toy generator (default method
``w`` at 40 steps; any method and ``--option`` work) and writes OUT/: input.png, reconstruction.png,
views.png (the inversion at yaw offsets of --views from the input camera, the world's exact views
below), depth.png (inverted | true), mesh.ply, the video, latents.npz and metrics.json (PSNR /
SSIM per view and the foreground depth error against the world's ground truth, timings).

A folder is inverted in batches of --batch images with a progress bar; an image that cannot be
read, has no face or fails to invert is reported in summary.json and on stderr, the others finish,
and the exit code is 1.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

HELP = "invert photos (a file or a folder) into an EG3D generator: views, depth, mesh, video, latents"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEMO_METHOD = "w"            # until toy-world encoders ship (jaxinv/assets)
DEMO_OPTIONS = {"w": {"steps": 40}, "wplus": {"steps": 40},
                "pti": {"pivot_steps": 40, "steps": 40}, "triplane_opt": {"steps": 10}}
DEMO_INPUT_YAW, DEMO_INPUT_PITCH = 0.3, 0.05
METHODS = ("psp", "e4e", "preim3d", "triplanenet", "goae", "nerf3de", "w", "wplus", "pti",
           "triplane_opt", "zignerf")


def add_arguments(p) -> None:
  p.add_argument("input", nargs="?", help="an image file or a folder of images")
  p.add_argument("--demo", action="store_true",
                 help="invert a procedural-world scene with the built-in toy models and score it "
                      "against the true novel views (no input, no downloads)")
  p.add_argument("--method", default=None, choices=METHODS,
                 help=f"inversion method (default goae; with --demo {DEMO_METHOD})")
  p.add_argument("--generator", help="EG3D .pkl / native .npz (default: the built-in toy generator)")
  p.add_argument("--encoder", help="the method's encoder checkpoint (.pt or converted .npz)")
  p.add_argument("--afa", help="GOAE's AFA checkpoint (afa_FFHQ.pt or .npz)")
  p.add_argument("--lpips", help="native LPIPS .npz (`jaxinv convert lpips`) for the baselines")
  p.add_argument("--weights", help="a JSON file {generator, encoder, afa, lpips: path} (the flags "
                                   "above override its entries)")
  p.add_argument("--pose", default="detect",
                 help="'detect' (face photos: crop + camera, default), 'front' (aligned crops seen "
                      "frontally), an EG3D dataset.json ({'labels': [[file, c25], ...]}) or a "
                      ".npy of [25] / [N, 25] labels in file order")
  p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                 help="a method option, e.g. steps=100, lr=0.01, pivot=wplus (repeatable)")
  p.add_argument("--outdir", required=True, help="output folder (one sub-folder per image)")
  p.add_argument("--batch", type=int, default=4, help="images per invert call (default 4)")
  p.add_argument("--views", default="-0.6,-0.3,0,0.3,0.6",
                 help="yaws (radians) of the novel-view grid (default -0.6,-0.3,0,0.3,0.6)")
  p.add_argument("--mesh-resolution", type=int, default=128,
                 help="marching-cubes grid per side; 0 = no mesh (default 128)")
  p.add_argument("--video-frames", type=int, default=48, help="frames of the yaw sweep; 0 = none")
  p.add_argument("--video-format", choices=("mp4", "gif"), default="mp4")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed of the optimisation baselines")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def parse_options(items) -> dict:
  """['steps=100', 'pivot=wplus'] -> {'steps': 100, 'pivot': 'wplus'} (JSON values where valid)."""
  out = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--option: expected KEY=VALUE, got {item!r}")
    k, v = item.split("=", 1)
    k = k.strip().replace("-", "_")
    if not k.isidentifier():
      raise ValueError(f"--option: {k!r} is not an option name")
    try:
      out[k] = json.loads(v)
    except json.JSONDecodeError:
      out[k] = v
  return out


def parse_yaws(text: str, flag: str = "--views") -> list[float]:
  try:
    yaws = [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ValueError(f"{flag}: expected comma-separated radians, got {text!r}") from None
  if not yaws:
    raise ValueError(f"{flag}: no yaws in {text!r}")
  return yaws


def list_images(path: str) -> list[str]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"input: no such file or folder: {path}")
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."))
    if not files:
      raise ValueError(f"input: no images ({', '.join(IMAGE_EXTS)}) in folder {path}")
    return files
  return [path]


def weights_from_args(args) -> dict | None:
  w = {}
  if args.weights:
    if not os.path.isfile(args.weights):
      raise FileNotFoundError(f"--weights: no such file: {args.weights}")
    with open(args.weights) as f:
      try:
        w = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"--weights: {args.weights} is not valid JSON: {e}") from None
    if not isinstance(w, dict):
      raise ValueError(f"--weights: {args.weights} must hold a JSON object of paths")
    base = os.path.dirname(os.path.abspath(args.weights))
    w = {k: v if os.path.isabs(v) else os.path.join(base, v) for k, v in w.items()}
  for k in ("generator", "encoder", "afa", "lpips"):
    v = getattr(args, k)
    if v is not None:
      if not os.path.exists(v):
        raise FileNotFoundError(f"--{k}: no such file: {v}")
      w[k] = v
  return w or None


def _poses(args, files):
  """A function file -> c [25] (or None for 'detect')."""
  pose = args.pose
  if pose == "detect":
    return lambda f: None
  if pose == "front":
    return lambda f: "front"
  if not os.path.isfile(pose):
    raise FileNotFoundError(f"--pose: expected 'detect', 'front' or a labels file, no such file: {pose}")
  if pose.endswith(".npy"):
    a = np.load(pose, allow_pickle=False).astype(np.float32)
    a = a.reshape(-1, 25) if a.size % 25 == 0 else None
    if a is None or a.shape[0] not in (1, len(files)):
      raise ValueError(f"--pose: {pose} must hold [25] or [{len(files)}, 25] labels")
    return lambda f: a[0] if a.shape[0] == 1 else a[files.index(f)]
  try:
    with open(pose, encoding="utf-8") as fh:
      labels = json.load(fh).get("labels")
  except (ValueError, AttributeError):  # not JSON / not text / not an object
    labels = None
  if not isinstance(labels, list):
    raise ValueError(f"--pose: {pose} is not an EG3D dataset.json ({{'labels': [[file, c25], ...]}})")
  table = {os.path.basename(str(name)): np.asarray(c, np.float32) for name, c in labels}

  def get(f):
    name = os.path.basename(f)
    if name not in table:
      raise ValueError(f"--pose: {pose} has no label for {name}")
    return table[name]
  return get


def _save_png(path, a):
  from PIL import Image
  Image.fromarray(np.asarray(a)).save(path)


def _outputs(inv, outdir, args, yaws, timings) -> list[str]:
  """Everything written for one inverted image (``inv`` has batch 1)."""
  from jaxinv.inversion.result import depth_to_uint8, to_uint8
  os.makedirs(outdir, exist_ok=True)
  written = []
  t = time.perf_counter()
  if inv.target is not None:
    _save_png(os.path.join(outdir, "crop.png"), to_uint8(inv.target[0]))
    written.append("crop.png")
  rec = inv.render()
  _save_png(os.path.join(outdir, "reconstruction.png"), to_uint8(rec["image"][0]))
  _save_png(os.path.join(outdir, "depth.png"), depth_to_uint8(rec["image_depth"][0]))
  views = [to_uint8(inv.render(yaw=y)["image"][0]) for y in yaws]
  _save_png(os.path.join(outdir, "views.png"), np.concatenate(views, axis=1))
  written += ["reconstruction.png", "depth.png", "views.png"]
  timings["render"] = time.perf_counter() - t
  if args.mesh_resolution:
    t = time.perf_counter()
    inv.save_mesh(os.path.join(outdir, "mesh.ply"), args.mesh_resolution)
    written.append("mesh.ply")
    timings["mesh"] = time.perf_counter() - t
  if args.video_frames:
    t = time.perf_counter()
    yaw_sweep = max(abs(y) for y in yaws) or 0.6
    sweep = yaw_sweep * np.sin(np.linspace(0, 2 * np.pi, args.video_frames, endpoint=False))
    p = inv.video(os.path.join(outdir, f"video.{args.video_format}"), sweep)
    written.append(os.path.basename(p))
    timings["video"] = time.perf_counter() - t
  src = args.generator or ("" if not args.weights else f"weights:{args.weights}") or "toy"
  inv.save(os.path.join(outdir, "latents.npz"), generator_source=src)
  written.append("latents.npz")
  if inv.method == "pti":
    written.append("latents_generator.npz")
  return written


def _unique_names(files) -> list[str]:
  names, seen = [], {}
  for f in files:
    stem = os.path.splitext(os.path.basename(f))[0]
    n = seen.get(stem, 0)
    seen[stem] = n + 1
    names.append(stem if n == 0 else f"{stem}_{n}")
  return names


def _demo(args, options, yaws) -> int:
  """``--demo``: one world scene, inverted and scored against the world's exact views."""
  import jax

  import jaxinv
  from jaxinv.cli import CommandError, output_dir, refuse_existing
  from jaxinv.data import world
  from jaxinv.eval import world_views
  from jaxinv.inversion.result import depth_to_uint8, to_uint8
  if args.generator or args.weights:
    raise CommandError("--demo uses the built-in toy generator (the world's); --generator and "
                       "--weights are for photos")
  method = args.method or DEMO_METHOD
  options = {**DEMO_OPTIONS.get(method, {}), **options}
  out = output_dir(args.outdir, what="--outdir")
  refuse_existing(*(out / f for f in ("metrics.json", "latents.npz", "mesh.ply")),
                  overwrite=args.overwrite)
  weights = {k: getattr(args, k) for k in ("encoder", "afa", "lpips") if getattr(args, k)}
  for k, v in weights.items():
    if not os.path.exists(v):
      raise FileNotFoundError(f"--{k}: no such file: {v}")
  t_all = time.perf_counter()
  from jaxinv import api
  from jaxinv.inversion.invert import Weights
  t = time.perf_counter()
  loaded = api._load_weights(Weights.coerce(weights or None), method)
  G = loaded.generator
  timings = {"load": time.perf_counter() - t}
  z = world.sample_z(jax.random.PRNGKey(args.seed), 1)
  c = world.orbit_label(DEMO_INPUT_YAW, DEMO_INPUT_PITCH)
  image = world.render(z, c, G.config.img_resolution)["image"]
  t = time.perf_counter()
  inv = jaxinv.invert(image, c, method=method, weights=loaded, key=jax.random.PRNGKey(args.seed),
                      **options)
  jax.block_until_ready(inv.ws)
  timings["invert"] = time.perf_counter() - t
  t = time.perf_counter()
  os.makedirs(out, exist_ok=True)
  _save_png(out / "input.png", to_uint8(image[0]))
  offsets = sorted(set([0.0] + list(yaws)))
  views, truths, scores = [], [], {}
  for off in offsets:
    cv = world.orbit_label(DEMO_INPUT_YAW + off, DEMO_INPUT_PITCH)
    pred = inv.render(cv)
    s, truth = world_views.score_view(pred, z, cv, G, return_truth=True)
    scores[f"{off:+.2f}"] = {k: float(v[0]) for k, v in s.items()}
    views.append(to_uint8(pred["image"][0]))
    truths.append(to_uint8(truth[0]))
    if off == 0.0:
      _save_png(out / "reconstruction.png", views[-1])
      exact = world.render(z, cv, G.neural_rendering_resolution)["depth"][0]
      ours = np.asarray(pred["image_depth"][0])
      exact = np.where(np.isfinite(exact), exact, ours.max())
      _save_png(out / "depth.png", depth_to_uint8(np.concatenate([ours, exact], axis=1)))
  _save_png(out / "views.png", np.concatenate([np.concatenate(views, 1), np.concatenate(truths, 1)], 0))
  timings["views"] = time.perf_counter() - t
  written = ["input.png", "reconstruction.png", "views.png", "depth.png"]
  if args.mesh_resolution:
    t = time.perf_counter()
    inv.save_mesh(out / "mesh.ply", args.mesh_resolution)
    written.append("mesh.ply")
    timings["mesh"] = time.perf_counter() - t
  if args.video_frames:
    t = time.perf_counter()
    sweep = (max(abs(y) for y in yaws) or 0.6) * np.sin(
        np.linspace(0, 2 * np.pi, args.video_frames, endpoint=False))
    written.append(os.path.basename(inv.video(out / f"video.{args.video_format}", sweep)))
    timings["video"] = time.perf_counter() - t
  inv.save(out / "latents.npz", generator_source="toy")
  written.append("latents.npz")
  timings["total"] = time.perf_counter() - t_all
  metrics = {"method": method, "options": options, "seed": args.seed,
             "scene_z": np.asarray(z[0]).round(6).tolist(),
             "input_camera": {"yaw": DEMO_INPUT_YAW, "pitch": DEMO_INPUT_PITCH},
             "views": scores, "seconds": timings, "outputs": written + ["metrics.json"],
             "generator": "built-in toy generator (jaxinv/assets/toy_eg3d.npz)",
             "note": "views: yaw offsets (radians) from the input camera; psnr/ssim of the image, "
                     "depth_l1: mean |depth error| on the world's foreground (world units; the "
                     "camera orbit has radius 2.7)"}
  with open(out / "metrics.json", "w") as f:
    json.dump(metrics, f, indent=1)
  row = " ".join(f"{k}:{v['psnr']:.1f}dB" for k, v in scores.items())
  print(f"demo ({method}): PSNR by yaw offset {row}; depth error at the input view "
        f"{scores['+0.00']['depth_l1']:.4f}; {timings['total']:.1f} s; wrote {out}")
  return 0


def _finish(args, method, options, weights, load_s, files, results, summary_path) -> int:
  """Writes OUT/summary.json, reports each failed image on stderr; exit code 1 if any failed."""
  import sys
  failed = [results[i] for i in sorted(results) if results[i]["status"] != "ok"]
  summary = {"method": method, "options": options, "pose": args.pose, "weights": weights or "toy",
             "load_seconds": load_s, "images": len(files), "failed": len(failed),
             "results": [results[i] for i in sorted(results)]}
  os.makedirs(args.outdir, exist_ok=True)
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=1, default=str)
  print(f"inverted {len(files) - len(failed)} of {len(files)} image(s) with {method}; "
        f"summary: {summary_path}")
  for r in failed:
    print(f"jaxinv invert: failed: {r['source']}: {r['error']}", file=sys.stderr)
  return 1 if failed else 0


# ------------------------------------------------------------------ ZIGNeRF

ZIGNERF_DEMO_TURN, ZIGNERF_DEMO_PITCH = -0.3, 0.05
ZIGNERF_DEMO_OFFSETS = (-np.pi, -np.pi / 2, -0.6, -0.3, 0.0, 0.3, 0.6, np.pi / 2)


def _zignerf_weights(args, weights):
  """The (G, inverter) jaxinv.invert(method='zignerf') gets: None = the built-in world models."""
  from jaxinv.cli import CommandError
  extra = [f"--{k}" for k in ("afa", "lpips") if getattr(args, k)]
  extra += [f"--weights entry {k!r}" for k in (weights or {}) if k not in ("generator", "encoder")]
  if extra:
    raise CommandError(f"--method zignerf reads only --generator and --encoder (its inverter); "
                       f"got {', '.join(extra)}")
  if not weights:
    return None
  if set(weights) != {"generator", "encoder"}:
    raise CommandError("--method zignerf: give both --generator (the ZIGNeRF generator .npz) and "
                       "--encoder (its inverter .npz), or neither for the built-in world models")
  return dict(weights)


def _zignerf_video(inv, path, frames):
  return inv.video(path, np.linspace(0.0, 2 * np.pi, frames, endpoint=False))


def _zignerf_outputs(inv, outdir, args, yaws, timings, source) -> list[str]:
  from jaxinv.inversion.result import depth_to_uint8, to_uint8
  os.makedirs(outdir, exist_ok=True)
  t = time.perf_counter()
  _save_png(os.path.join(outdir, "crop.png"), to_uint8(inv.target[0]))
  rec = inv.render()
  _save_png(os.path.join(outdir, "reconstruction.png"), to_uint8(rec["image"][0]))
  _save_png(os.path.join(outdir, "depth.png"), depth_to_uint8(rec["depth"][0]))
  views = [to_uint8(inv.render(yaw=y)["image"][0]) for y in yaws]
  _save_png(os.path.join(outdir, "views.png"), np.concatenate(views, axis=1))
  written = ["crop.png", "reconstruction.png", "depth.png", "views.png"]
  timings["render"] = time.perf_counter() - t
  if args.video_frames:
    t = time.perf_counter()
    p = _zignerf_video(inv, os.path.join(outdir, f"video.{args.video_format}"), args.video_frames)
    written.append(os.path.basename(p))
    timings["video"] = time.perf_counter() - t
  inv.save(os.path.join(outdir, "latents.npz"), generator_source=source)
  return written + ["latents.npz"]


def _run_zignerf(args, options, yaws, files, weights, pose_of, names, summary_path) -> int:
  """``jaxinv invert FILES --method zignerf``: one inverter call per image (sizes and poses may
  differ; the pass is milliseconds), read in --batch chunks; per-image errors are kept."""
  import jax
  from tqdm import tqdm

  import jaxinv
  from jaxinv.inversion import zignerf as zi
  from jaxinv.inversion.invert import _to_batch
  w = _zignerf_weights(args, weights)
  source = "toy" if w is None else w["generator"]
  t0 = time.perf_counter()
  if w is None:
    G, inverter = zi.load_toy()
  else:  # load once (and check the pair) through the API's own path
    from jaxinv.models import giraffe as gm
    G = gm.load(w["generator"])
    inverter, gcfg = zi.load_inverter(w["encoder"])
    if gcfg != G.config:
      raise ValueError("--encoder: this inverter was trained for another generator config than "
                       "--generator's")
  loaded = dict(generator=G, encoder=inverter)
  load_s = time.perf_counter() - t0
  results = {}
  bar = tqdm(total=len(files), disable=args.no_progress, desc="invert (zignerf)", unit="img")
  for start in range(0, len(files), args.batch):
    ready = []   # (index, uint8 image, pose or None, read seconds)
    for i in range(start, min(start + args.batch, len(files))):
      t = time.perf_counter()
      try:
        pose = pose_of(files[i])
        if isinstance(pose, str):   # 'front': the unturned object at pitch 0
          pose = np.asarray(zi.canonical_label(0.0)[0])
        ready.append((i, _to_batch(files[i])[0][0], pose, time.perf_counter() - t))
      except Exception as e:
        results[i] = {"source": files[i], "status": "error", "stage": "read",
                      "error": f"{type(e).__name__}: {e}"}
        bar.update(1)
    for i, image, pose, read_s in ready:   # mixed sizes / poses: one image per call
      t = time.perf_counter()
      timings = {"read": read_s}
      try:
        inv = jaxinv.invert(image, pose, method="zignerf", weights=loaded, **options)
        jax.block_until_ready(inv.rotation)
      except TypeError:
        raise  # a bad option: the same for every image
      except Exception as e:
        results[i] = {"source": files[i], "status": "error", "stage": "invert",
                      "error": f"{type(e).__name__}: {e}"}
        bar.update(1)
        continue
      timings["invert"] = time.perf_counter() - t
      try:
        written = _zignerf_outputs(inv, os.path.join(args.outdir, names[i]), args, yaws, timings,
                                   source)
        results[i] = {"source": files[i], "status": "ok", "outdir": names[i], "outputs": written,
                      "seconds": timings,
                      "turn": float(inv.rotation[0, 0]), "pitch": float(inv.pitch[0])}
      except Exception as e:
        results[i] = {"source": files[i], "status": "error", "stage": "outputs",
                      "error": f"{type(e).__name__}: {e}", "seconds": timings}
      bar.update(1)
  bar.close()
  return _finish(args, "zignerf", options, w, load_s, files, results, summary_path)


def _demo_zignerf(args, options, yaws) -> int:
  """``--demo --method zignerf``: a world scene seen at a turn, inverted by the built-in inverter
  and scored against the world's exact views at turns of the object up to +-pi."""
  import jax
  import jax.numpy as jnp

  import jaxinv
  from jaxinv.cli import CommandError, output_dir, refuse_existing
  from jaxinv.data import world
  from jaxinv.eval import metrics as M
  from jaxinv.inversion import zignerf as zi
  from jaxinv.inversion.result import depth_to_uint8, to_uint8
  from jaxinv.models import giraffe as gm
  if args.generator or args.weights or args.encoder or args.afa or args.lpips:
    raise CommandError("--demo uses the built-in world models; --generator / --encoder / "
                       "--weights are for your own files")
  out = output_dir(args.outdir, what="--outdir")
  refuse_existing(*(out / f for f in ("metrics.json", "latents.npz")), overwrite=args.overwrite)
  t_all = time.perf_counter()
  G, inverter = zi.load_toy()
  timings = {"load": time.perf_counter() - t_all}
  r, fr = G.config.img_resolution, G.config.feature_resolution
  z = world.sample_z(jax.random.PRNGKey(args.seed), 1)
  theta_in = jnp.full((1,), ZIGNERF_DEMO_TURN)
  pitch_in = jnp.full((1,), ZIGNERF_DEMO_PITCH)
  image = world.render(z, gm.rotate_label(zi.canonical_label(pitch_in), theta_in), r)["image"]
  t = time.perf_counter()
  inv = jaxinv.invert(image, method="zignerf", weights=dict(generator=G, encoder=inverter),
                      **options)
  jax.block_until_ready(inv.rotation)
  timings["invert"] = time.perf_counter() - t
  t = time.perf_counter()
  os.makedirs(out, exist_ok=True)
  _save_png(out / "input.png", to_uint8(image[0]))
  offsets = sorted(set(ZIGNERF_DEMO_OFFSETS) | {float(y) for y in yaws})
  views, truths, scores = [], [], {}
  for off in offsets:
    pred = inv.render(yaw=off)   # the turn inv.rotation - off; the world's at theta_in - off
    cw = gm.rotate_label(zi.canonical_label(pitch_in), theta_in - off)
    truth, raw = world.render(z, cw, r), world.render(z, cw, fr)
    scores[f"{off:+.2f}"] = dict(
        psnr=float(M.psnr(pred["image"], truth["image"])[0]),
        ssim=float(M.ssim(pred["image"], truth["image"])[0]),
        depth_l1=float(M.depth_error(pred["depth"], raw["depth"], raw["mask"])[0]))
    views.append(to_uint8(pred["image"][0]))
    truths.append(to_uint8(truth["image"][0]))
    if off == 0.0:
      _save_png(out / "reconstruction.png", views[-1])
      _save_png(out / "depth.png", depth_to_uint8(pred["depth"][0]))
  _save_png(out / "views.png",
            np.concatenate([np.concatenate(views, 1), np.concatenate(truths, 1)], 0))
  timings["views"] = time.perf_counter() - t
  written = ["input.png", "reconstruction.png", "depth.png", "views.png"]
  if args.video_frames:
    t = time.perf_counter()
    written.append(os.path.basename(_zignerf_video(inv, out / f"video.{args.video_format}",
                                                   args.video_frames)))
    timings["video"] = time.perf_counter() - t
  inv.save(out / "latents.npz", generator_source="toy")
  written.append("latents.npz")
  timings["total"] = time.perf_counter() - t_all
  metrics = {"method": "zignerf", "options": options, "seed": args.seed,
             "scene_z": np.asarray(z[0]).round(6).tolist(),
             "input": {"turn": ZIGNERF_DEMO_TURN, "pitch": ZIGNERF_DEMO_PITCH},
             "predicted": {"turn": float(inv.rotation[0, 0]), "pitch": float(inv.pitch[0])},
             "views": scores, "seconds": timings, "outputs": written + ["metrics.json"],
             "generator": "built-in ZIGNeRF world models (jaxinv/assets/zignerf_*.npz)",
             "note": "views: camera-yaw offsets (radians) from the input view, i.e. turns of the "
                     "object by -offset; psnr/ssim of the image, depth_l1: mean |depth error| on "
                     "the world's foreground at the feature resolution"}
  with open(out / "metrics.json", "w") as f:
    json.dump(metrics, f, indent=1)
  row = " ".join(f"{k}:{v['psnr']:.1f}dB" for k, v in scores.items())
  print(f"demo (zignerf): PSNR by yaw offset {row}; {timings['total']:.1f} s; wrote {out}")
  return 0


def run(args) -> int:
  import jax
  from tqdm import tqdm

  import jaxinv
  from jaxinv.cli import refuse_existing, output_dir
  from jaxinv.inversion.invert import prepare

  options = parse_options(args.option)
  if args.demo:
    if args.input:
      raise ValueError("--demo takes no input image (it draws a procedural-world scene)")
    for flag, value, low in (("--mesh-resolution", args.mesh_resolution, 0),
                             ("--video-frames", args.video_frames, 0)):
      if value < low:
        raise ValueError(f"{flag} must be >= {low}, got {value}")
    if 0 < args.mesh_resolution < 8:
      raise ValueError(f"--mesh-resolution must be 0 or >= 8, got {args.mesh_resolution}")
    if args.method == "zignerf":
      return _demo_zignerf(args, options, parse_yaws(args.views))
    return _demo(args, options, parse_yaws(args.views))
  if not args.input:
    raise ValueError("input: give an image file or folder (or --demo for a procedural-world scene)")
  args.method = args.method or "goae"
  yaws = parse_yaws(args.views)
  for flag, value, low in (("--batch", args.batch, 1), ("--mesh-resolution", args.mesh_resolution, 0),
                           ("--video-frames", args.video_frames, 0)):
    if value < low:
      raise ValueError(f"{flag} must be >= {low}, got {value}")
  if 0 < args.mesh_resolution < 8:
    raise ValueError(f"--mesh-resolution must be 0 or >= 8, got {args.mesh_resolution}")
  files = list_images(args.input)
  weights = weights_from_args(args)
  pose_of = _poses(args, files)
  output_dir(args.outdir, what="--outdir")
  names = _unique_names(files)
  summary_path = os.path.join(args.outdir, "summary.json")
  refuse_existing(summary_path, *(os.path.join(args.outdir, n, "latents.npz") for n in names),
                  overwrite=args.overwrite)

  if args.method == "zignerf":
    return _run_zignerf(args, options, yaws, files, weights, pose_of, names, summary_path)
  # Load the networks once (the first invert call does it; keep the loaded Weights).
  from jaxinv import api
  from jaxinv.inversion.invert import Weights
  t0 = time.perf_counter()
  loaded = api._load_weights(Weights.coerce(weights), args.method)
  G = loaded.generator
  load_s = time.perf_counter() - t0
  size = G.config.img_resolution

  results = {}
  key = jax.random.PRNGKey(args.seed)
  bar = tqdm(total=len(files), disable=args.no_progress, desc=f"invert ({args.method})",
             unit="img")
  for start in range(0, len(files), args.batch):
    chunk = list(range(start, min(start + args.batch, len(files))))
    ready = []  # (index, x [S,S,3] float, c [25])
    for i in chunk:
      t = time.perf_counter()
      try:
        pose = pose_of(files[i])
        if isinstance(pose, str):
          from jaxinv.inversion.result import orbit_label
          pose = orbit_label(G, 0.0, 0.0)[0]
        x, c, _ = prepare(files[i], pose, size)
        ready.append((i, x[0], c[0], time.perf_counter() - t))
      except Exception as e:  # one bad file must not stop the folder
        results[i] = {"source": files[i], "status": "error", "stage": "read",
                      "error": f"{type(e).__name__}: {e}"}
        bar.update(1)
    if not ready:
      continue
    xs = jax.numpy.stack([r[1] for r in ready])
    cs = jax.numpy.stack([r[2] for r in ready])
    key, k = jax.random.split(key)
    t = time.perf_counter()
    groups = [(ready, xs, cs)]
    try:
      invs = [jaxinv.invert(xs, cs, method=args.method, weights=loaded, key=k, **options)]
    except TypeError:
      raise  # a bad option: same for every image
    except Exception:  # isolate the failing image(s)
      invs, groups = [], []
      for j, r in enumerate(ready):
        try:
          invs.append(jaxinv.invert(xs[j:j + 1], cs[j:j + 1], method=args.method,
                                    weights=loaded, key=k, **options))
          groups.append(([r], None, None))
        except Exception as e:
          results[r[0]] = {"source": files[r[0]], "status": "error", "stage": "invert",
                           "error": f"{type(e).__name__}: {e}"}
          bar.update(1)
    invert_s = (time.perf_counter() - t) / max(len(ready), 1)
    for inv, (rows, _, _) in zip(invs, groups):
      for j, r in enumerate(rows):
        i = r[0]
        timings = {"read": r[3], "invert": invert_s}
        try:
          written = _outputs(inv[j], os.path.join(args.outdir, names[i]), args, yaws, timings)
          results[i] = {"source": files[i], "status": "ok", "outdir": names[i],
                        "outputs": written, "seconds": timings}
        except Exception as e:
          results[i] = {"source": files[i], "status": "error", "stage": "outputs",
                        "error": f"{type(e).__name__}: {e}", "seconds": timings}
        bar.update(1)
  bar.close()
  return _finish(args, args.method, options, weights, load_s, files, results, summary_path)
