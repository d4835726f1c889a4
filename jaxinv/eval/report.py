"""Writing an evaluation: ``results.json``, the Markdown table with its protocol, and PNG plots
(per-yaw curves, an image grid), drawn with Pillow only."""
from __future__ import annotations

import json
import os

import numpy as np

PREVIEWS = "previews"
_NAMES = dict(mse="MSE", psnr="PSNR", ssim="SSIM", ms_ssim="MS-SSIM", lpips="LPIPS", id="ID",
              depth_l1="depth L1", fid="FID", kid="KID")


def _u8(x):
  return np.asarray(np.clip(np.rint((np.asarray(x, np.float32) + 1) * 127.5), 0, 255), np.uint8)


def save_preview(outdir, item_id, images) -> str:
  """One row per item (input | reconstruction | each view), the world's truth as a second row."""
  from PIL import Image
  views = images["views"]
  top = [images["input"], images["reconstruction"]] + [p for p, _ in views.values()]
  rows = [np.concatenate([_u8(t) for t in top], axis=1)]
  if any(t is not None for _, t in views.values()):
    blank = np.zeros_like(_u8(images["input"]))
    bottom = [blank, blank] + [blank if t is None else _u8(t) for _, t in views.values()]
    rows.append(np.concatenate(bottom, axis=1))
  d = os.path.join(outdir, PREVIEWS)
  os.makedirs(d, exist_ok=True)
  path = os.path.join(d, f"{_safe(item_id)}.png")
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  return path


def _safe(name):
  return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def _fmt(v, k):
  if v is None:
    return "–"
  return (f"{v:.4f}" if k in ("mse", "lpips", "ssim", "ms_ssim", "id", "depth_l1", "kid")
          else f"{v:.2f}")


def markdown(results) -> str:
  s = results["settings"]
  inp = results["input_view"]
  lines = [f"# Evaluation: {s['method']} on {'the procedural world' if s['data'] == 'world' else os.path.basename(str(s['data']))}",
           "", "## Input view", "",
           "| method | items | " + " | ".join(_NAMES.get(k, k) for k in inp) + " | s/image |",
           "|---|---|" + "---|" * len(inp) + "---|",
           f"| {s['method']} | {results['items']} | " + " | ".join(_fmt(v, k) for k, v in inp.items())
           + f" | {_fmt(results['seconds_per_image'], 's')} |", ""]
  per_yaw = results["per_yaw"]
  ms = sorted({m for v in per_yaw.values() for m in v})
  if per_yaw and ms:
    lines += ["## Novel views (yaw, radians)", "",
              "| metric | " + " | ".join(per_yaw) + " |", "|---|" + "---|" * len(per_yaw)]
    for m in ms:
      lines.append(f"| {_NAMES.get(m, m)} | " + " | ".join(_fmt(v.get(m), m) for v in per_yaw.values())
                   + " |")
    lines.append("")
  p = results["protocol"]
  lines += ["## Protocol", "",
            f"- data: {s['data']}" + (f" (held-out scenes, input yaw {s['input_yaw']:+.2f})"
                                      if s["data"] == "world" else ""),
            f"- generator: {p['generator']}; images at {p['resolution']} px (the input resized to "
            f"it), depth at the neural rendering resolution {p['neural_rendering_resolution']}",
            f"- ID network: {p['id_network'] or 'none'}; crop: {p['id_crop']}"
            + (" (pSp IDLoss box rows 35:223, cols 32:220 of the image resized to 256, pooled to "
               "112)" if p["id_crop"] == "psp" else " (whole image pooled to 112)"),
            f"- LPIPS network: {p['lpips_network'] or 'none'}",
            f"- novel views: {p['views']}; world metrics against the world's exact renders",
            f"- method options: {json.dumps(s['options'])}; key PRNGKey({s['seed']})",
            "- s/image: the median over batches of the invert call's wall time / batch size (the "
            "first batch includes compilation)",
            f"- backend: {results['backend']}, jax {results['jax']}",
            "- grid.png: per item input | reconstruction | " + " | ".join(per_yaw)
            + (" (the world's exact views in the row below)" if s["data"] == "world" else "")
            + "; per_yaw.png: each novel-view metric against yaw"]
  for n in results["notes"]:
    lines.append(f"- {n}")
  sk = results["skipped"]
  lines.append(f"- skipped items ({len(sk)}): " + ("none" if not sk else
                                                  "; ".join(f"{r['id']} ({r['error']})" for r in sk)))
  return "\n".join(lines) + "\n"


def curve_png(path, per_yaw, size=(640, 300)) -> bool:
  """One panel per metric (ID, PSNR, ...): its value against yaw. False when nothing to draw."""
  from PIL import Image, ImageDraw
  ms = [m for m in ("id", "psnr", "ssim", "depth_l1")
        if any(v.get(m) is not None for v in per_yaw.values())]
  if not ms:
    return False
  w, h = size
  img = Image.new("RGB", (w, h * len(ms)), "white")
  d = ImageDraw.Draw(img)
  yaws = [float(y) for y in per_yaw]
  x0, x1 = min(yaws), max(yaws)
  for k, m in enumerate(ms):
    pts = [(float(y), v[m]) for y, v in per_yaw.items() if v.get(m) is not None]
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    if hi - lo < 1e-9:
      lo, hi = lo - 0.5, hi + 0.5
    top, left, pw, ph = k * h + 30, 60, w - 90, h - 70
    fx = lambda x: left + (x - x0) / max(x1 - x0, 1e-9) * pw
    fy = lambda y: top + ph - (y - lo) / (hi - lo) * ph
    d.rectangle([left, top, left + pw, top + ph], outline="black")
    d.text((left, top - 22), f"{_NAMES.get(m, m)} vs yaw (rad)", fill="black")
    d.text((4, top), f"{hi:.3g}", fill="black")
    d.text((4, top + ph - 10), f"{lo:.3g}", fill="black")
    for y in yaws:
      d.text((fx(y) - 12, top + ph + 6), f"{y:+.1f}", fill="black")
    xy = [(fx(x), fy(y)) for x, y in sorted(pts)]
    if len(xy) > 1:
      d.line(xy, fill=(200, 40, 40), width=2)
    for px, py in xy:
      d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(200, 40, 40))
  img.save(path)
  return True


def grid_png(outdir, item_ids, path) -> bool:
  from PIL import Image
  rows = []
  for i in item_ids:
    p = os.path.join(outdir, PREVIEWS, f"{_safe(i)}.png")
    if os.path.exists(p):
      rows.append(np.asarray(Image.open(p).convert("RGB")))
  if not rows:
    return False
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  return True


def write(outdir, results, grid_ids) -> None:
  with open(os.path.join(outdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write(markdown(results))
  curve_png(os.path.join(outdir, "per_yaw.png"), results["per_yaw"])
  grid_png(outdir, grid_ids, os.path.join(outdir, "grid.png"))
