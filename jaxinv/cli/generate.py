"""Render seeds of an EG3D generator: PNG view grids, depth maps and a yaw-sweep video.

Examples:
  jaxinv generate ffhq512-128.pkl --seeds 0-3                  # official pickle (no torch needed)
  jaxinv generate ffhq.npz --seeds 7 --yaws=-0.6,0,0.6 --truncation-psi 0.5
  jaxinv generate --preset tiny-random --seeds 0,1 --outdir /tmp/smoke   # random weights, smoke test

For each seed z = N(0, 1) (numpy RandomState(seed), as the official gen_samples.py), the latent is
mapped once with the frontal camera (the pose conditioning), then rendered from every yaw/pitch on
the generator's default orbit (avg_camera_radius around avg_camera_pivot). Angles are radians:
positive yaw turns the camera to the subject's left, positive pitch looks from below.

Writes into --outdir:
  seedNNNN.png          the views side by side (superresolved images)
  seedNNNN_depth.png    the depth maps (near = bright), same layout
  seedNNNN_sweep.mp4    a yaw sweep (.gif when imageio/ffmpeg is missing or --video-format gif)
  grid.png              every seed (rows) x every view (columns)
Existing files are never replaced unless --overwrite is given; every path is checked before the
generator is built.
"""
from __future__ import annotations

import math
import os

import numpy as np

HELP = "render seeds of an EG3D generator to PNG grids, depth maps and a yaw-sweep video"
PRESETS = ("tiny-random",)


def _int_list(text: str, flag: str = "--seeds") -> list[int]:
  """'0-3,7' -> [0, 1, 2, 3, 7] (non-negative); errors name ``flag``."""
  out = []
  hint = "expected e.g. '0-3' or '1,5,9'"
  for part in text.split(","):
    part = part.strip()
    if not part:
      continue
    ends = part.split("-")
    if len(ends) > 2 or not all(e.strip().isdigit() for e in ends):
      raise ValueError(f"{flag}: {part!r} is not a non-negative integer or A-B range "
                       f"in {text!r} ({hint})")
    lo, hi = int(ends[0]), int(ends[-1])
    if hi < lo:
      raise ValueError(f"{flag}: empty range {part!r} in {text!r} ({hint})")
    out.extend(range(lo, hi + 1))
  if not out:
    raise ValueError(f"{flag}: no seeds in {text!r} ({hint})")
  if max(out) >= 2**32:
    raise ValueError(f"{flag}: seeds must be below 2**32 (numpy RandomState), got {text!r}")
  return out


def _float_list(text: str, flag: str = "--yaws") -> list[float]:
  try:
    return [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ValueError(f"{flag}: expected comma-separated numbers (radians), got {text!r}") from None


def add_arguments(p) -> None:
  p.add_argument("checkpoint", nargs="?",
                 help="generator file: native .npz from `jaxinv convert`, or an official EG3D .pkl")
  p.add_argument("--preset", choices=PRESETS,
                 help="use a RANDOM-INIT generator instead of a checkpoint (smoke tests only; the "
                      "images are noise-like blobs, not faces)")
  p.add_argument("--seeds", default="0-3", help="seeds, e.g. '0-3' or '1,5,9' (default: 0-3)")
  p.add_argument("--yaws", default="-0.4,0,0.4", type=str,
                 help="view yaws in radians, comma-separated (default: -0.4,0,0.4); use --yaws=-0.4,...")
  p.add_argument("--pitch", default=0.0, type=float, help="view pitch in radians (default 0)")
  p.add_argument("--truncation-psi", default=0.7, type=float, help="truncation psi (default 0.7)")
  p.add_argument("--truncation-cutoff", default=14, type=int,
                 help="truncate the first N ws (default 14 = all for EG3D)")
  p.add_argument("--resolution", type=int, default=None,
                 help="neural rendering resolution (default: the checkpoint's, 128 for FFHQ)")
  p.add_argument("--outdir", default="out/generate", help="output folder (default out/generate)")
  p.add_argument("--video-frames", type=int, default=48,
                 help="frames of the yaw sweep per seed; 0 disables the video (default 48)")
  p.add_argument("--video-yaw", type=float, default=0.6,
                 help="the sweep goes from -yaw to +yaw and back (radians, default 0.6)")
  p.add_argument("--video-format", choices=("mp4", "gif"), default="mp4",
                 help="mp4 needs imageio + imageio-ffmpeg (pip install jaxinv[video]); else gif")
  p.add_argument("--batch", type=int, default=4, help="views rendered per call (default 4)")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.add_argument("--overwrite", action="store_true",
                 help="replace output files that already exist in --outdir (default: refuse)")


def _check_source(args) -> None:
  """Refuses a bad checkpoint/preset choice before any slow work."""
  if args.preset and args.checkpoint:
    raise SystemExit("jaxinv generate: error: give a checkpoint or --preset, not both")
  if args.preset:
    return
  if not args.checkpoint:
    raise SystemExit("jaxinv generate: error: give a generator checkpoint (see --help), "
                     "or --preset tiny-random")
  if not os.path.exists(args.checkpoint):
    raise FileNotFoundError(f"no such checkpoint: {args.checkpoint}")
  if os.path.isdir(args.checkpoint):
    raise IsADirectoryError(f"checkpoint {args.checkpoint} is a folder, expected a .pkl/.npz/.pt file")
  with open(args.checkpoint, "rb"):  # unreadable (permissions) fails here, not after imports
    pass


def _load(args):
  if args.preset == "tiny-random":
    from jaxinv.models.eg3d import tiny_eg3d
    print("NOTE: --preset tiny-random is a randomly initialised generator (no trained weights).")
    return tiny_eg3d(0)
  from jaxinv.api import load_generator
  return load_generator(args.checkpoint)


def _planned_outputs(args, seeds) -> list[str]:
  """Every file this run writes; both video suffixes, since mp4 may fall back to gif."""
  out = []
  for seed in seeds:
    base = os.path.join(args.outdir, f"seed{seed:04d}")
    out += [base + ".png", base + "_depth.png"]
    if args.video_frames > 0:
      out += [base + "_sweep.mp4", base + "_sweep.gif"]
  return out + [os.path.join(args.outdir, "grid.png")]


def _to_uint8(img):
  return np.clip(np.rint((np.asarray(img) + 1) * 127.5), 0, 255).astype(np.uint8)


def _depth_to_uint8(depth):
  d = np.asarray(depth)[..., 0]
  lo, hi = float(d.min()), float(d.max())
  near = (hi - d) / max(hi - lo, 1e-8)  # near = bright
  return np.repeat(np.rint(near * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _hstack(images):
  return np.concatenate(list(images), axis=1)


def _write_video(frames, path_base, fmt):
  """Writes ``frames`` (uint8 [H, W, 3]); returns the path written."""
  if fmt == "mp4":
    path = path_base + ".mp4"
    try:
      import imageio.v2 as imageio
      import imageio_ffmpeg  # noqa: F401  (without it imageio picks a non-video writer)
      with imageio.get_writer(path, fps=24, codec="libx264", quality=8,
                              macro_block_size=1) as w:
        for f in frames:
          w.append_data(f)
      return path
    except Exception as e:  # imageio or its ffmpeg plugin missing: fall back, say so once
      if os.path.exists(path):
        os.remove(path)
      if not getattr(_write_video, "_warned", False):
        print(f"note: mp4 needs imageio and imageio-ffmpeg (pip install 'jaxinv[video]'): {e!s:.120}"
              " -- writing GIF instead")
        _write_video._warned = True
  from PIL import Image
  path = path_base + ".gif"
  ims = [Image.fromarray(f) for f in frames]
  ims[0].save(path, save_all=True, append_images=ims[1:], duration=42, loop=0)
  return path


def run(args) -> int:
  from jaxinv.cli import CommandError, output_dir, refuse_existing
  try:
    seeds = _int_list(args.seeds, "--seeds")
    yaws = _float_list(args.yaws, "--yaws")
  except ValueError as e:
    raise SystemExit(f"jaxinv generate: error: {e}")
  if not yaws:
    raise SystemExit("jaxinv generate: error: --yaws is empty")
  for flag, value, low in (("--batch", args.batch, 1), ("--video-frames", args.video_frames, 0),
                           ("--resolution", 1 if args.resolution is None else args.resolution, 1)):
    if value < low:
      raise SystemExit(f"jaxinv generate: error: {flag} must be >= {low}, got {value}")
  # Every path is checked before the (slow) generator build.
  _check_source(args)
  output_dir(args.outdir, what="--outdir")
  planned = _planned_outputs(args, seeds)
  if len(set(planned)) != len(planned):
    raise CommandError("--seeds lists a seed twice")
  refuse_existing(*planned, overwrite=args.overwrite)
  from tqdm import tqdm
  import jax

  from jaxinv.render.camera import Camera

  G = _load(args)
  opts = G.config.render_options
  radius, pivot = opts.avg_camera_radius, opts.avg_camera_pivot
  res = args.resolution or G.config.neural_rendering_resolution
  os.makedirs(args.outdir, exist_ok=True)

  n_frames = max(0, args.video_frames)
  sweep = [args.video_yaw * math.sin(2 * math.pi * (i + 0.5) / n_frames) for i in range(n_frames)]
  total = len(seeds) * (len(yaws) + len(sweep))
  bar = tqdm(total=total, unit="view", disable=args.no_progress, desc="rendering")
  cond = Camera.look_at(0.0, 0.0, radius=radius, lookat=pivot).label
  grid_rows = []
  batch = max(1, min(args.batch, max(len(yaws), len(sweep))))
  for seed in seeds:
    z = np.random.RandomState(seed).randn(1, G.config.z_dim).astype(np.float32)
    ws = G.mapping(z, cond, truncation_psi=args.truncation_psi,
                   truncation_cutoff=args.truncation_cutoff)

    def render(yaw_list):
      images, depths = [], []
      for i in range(0, len(yaw_list), args.batch):
        part = list(yaw_list[i:i + args.batch])
        n = len(part)
        part += part[-1:] * (batch - n)  # pad: one compiled batch size for every call
        c = Camera.look_at(np.asarray(part), args.pitch, radius=radius, lookat=pivot).label
        out = G.synthesis(np.repeat(np.asarray(ws), batch, axis=0), c,
                          neural_rendering_resolution=res)
        out = jax.device_get(out)
        images.extend(_to_uint8(out["image"][:n]))
        depths.extend(_depth_to_uint8(d) for d in out["image_depth"][:n])
        bar.update(n)
      return images, depths

    images, depths = render(yaws)
    from PIL import Image
    row = _hstack(images)
    Image.fromarray(row).save(os.path.join(args.outdir, f"seed{seed:04d}.png"))
    Image.fromarray(_hstack(depths)).save(os.path.join(args.outdir, f"seed{seed:04d}_depth.png"))
    grid_rows.append(row)
    if sweep:
      frames, _ = render(sweep)
      _write_video(frames, os.path.join(args.outdir, f"seed{seed:04d}_sweep"), args.video_format)
  bar.close()
  from PIL import Image
  Image.fromarray(np.concatenate(grid_rows, axis=0)).save(os.path.join(args.outdir, "grid.png"))
  print(f"wrote {len(seeds)} seed(s) x {len(yaws)} view(s) to {args.outdir}")
  return 0
