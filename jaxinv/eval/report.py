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


_COLORS = ((200, 40, 40), (40, 90, 200), (30, 150, 60), (200, 130, 0), (130, 50, 170),
           (0, 150, 160), (120, 120, 120), (220, 60, 160))


def curve_png(path, per_yaw, size=(640, 300)) -> bool:
  """One panel per metric (ID, PSNR, ...): its value against yaw. False when nothing to draw."""
  return curves_png(path, {"": per_yaw}, size)


def curves_png(path, series: dict, size=(640, 300)) -> bool:
  """``series``: ``{method: per_yaw}``, one coloured line each (a legend when named)."""
  from PIL import Image, ImageDraw
  ms = [m for m in ("id", "psnr", "ssim", "depth_l1", "fid", "kid")
        if any(v.get(m) is not None for py in series.values() for v in py.values())]
  if not ms:
    return False
  w, h = size
  img = Image.new("RGB", (w, h * len(ms)), "white")
  d = ImageDraw.Draw(img)
  yaws = sorted({float(y) for py in series.values() for y in py})
  x0, x1 = min(yaws), max(yaws)
  for k, m in enumerate(ms):
    lines = {name: sorted((float(y), v[m]) for y, v in py.items() if v.get(m) is not None)
             for name, py in series.items()}
    pts = [p for v in lines.values() for p in v]
    if not pts:
      continue
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
    for j, (name, line) in enumerate(lines.items()):
      color = _COLORS[j % len(_COLORS)]
      xy = [(fx(x), fy(y)) for x, y in line]
      if len(xy) > 1:
        d.line(xy, fill=color, width=2)
      for px, py in xy:
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
      if name:
        d.text((left + pw - 110, top + 6 + 12 * j), name, fill=color)
  img.save(path)
  return True


def grid_png(outdir, item_ids, path) -> bool:
  from PIL import Image
  rows = []
  for i in item_ids:
    p = os.path.join(outdir, PREVIEWS, f"{_safe(i)}.png")
    if os.path.exists(p):
      rows.append(np.asarray(Image.open(p).convert("RGB")))
  return _stack_png(rows, path, gap=4)


def _stack_png(rows, path, gap: int = 0) -> bool:
  """Stacks uint8 ``[h, w, 3]`` rows top to bottom (white-padded to the widest, ``gap`` white
  pixels under each) and saves them; False when there is nothing to draw."""
  from PIL import Image
  if not rows:
    return False
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  return True


def write(outdir, results, grid_ids) -> None:
  with open(os.path.join(outdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write(markdown(results))
  curve_png(os.path.join(outdir, "per_yaw.png"), results["per_yaw"])
  grid_png(outdir, grid_ids, os.path.join(outdir, "grid.png"))


# ------------------------------------------------------------------------------------ comparison

def _run_name(results, path, taken):
  name = str(results["settings"]["method"])
  if name in taken:
    name = f"{name} ({os.path.basename(os.path.normpath(path))})"
  return name


def compare(run_dirs, outdir) -> dict:
  """One table for several evaluations (rows: methods), as the papers print them.

  Args:
    run_dirs: folders written by ``jaxinv.eval.run.evaluate`` (each with ``results.json``).
    outdir: gets ``results.md`` (input-view table, one novel-view table per metric, each run's
      protocol), ``results.json`` (``{"runs": {name: results}}``), ``per_yaw.png`` (a line per
      method) and ``grid.png`` (per item: each method's row, the world's truth below).
  """
  runs = {}
  for d in run_dirs:
    p = os.path.join(d, "results.json")
    if not os.path.isfile(p):
      raise FileNotFoundError(f"{d}: no results.json (not a jaxinv eval output folder)")
    with open(p) as f:
      r = json.load(f)
    runs[_run_name(r, d, runs)] = (d, r)
  if not runs:
    raise ValueError("compare: no evaluations given")
  datas = {str(r["settings"]["data"]) for _, r in runs.values()}
  if len(datas) > 1:
    raise ValueError(f"compare: the evaluations are of different data ({', '.join(sorted(datas))})")
  order = ("mse", "psnr", "ssim", "ms_ssim", "lpips", "id", "fid", "kid", "depth_l1")
  keys = [k for k in order if any(k in r["input_view"] for _, r in runs.values())]
  data = datas.pop()
  lines = [f"# Comparison on {'the procedural world' if data == 'world' else os.path.basename(data)}",
           "", "## Input view", "",
           "| method | items | " + " | ".join(_NAMES.get(k, k) for k in keys) + " | s/image |",
           "|---|---|" + "---|" * len(keys) + "---|"]
  for name, (_, r) in runs.items():
    lines.append(f"| {name} | {r['items']} | " + " | ".join(_fmt(r["input_view"].get(k), k)
                                                             for k in keys)
                 + f" | {_fmt(r['seconds_per_image'], 's')} |")
  yaws = sorted({y for _, r in runs.values() for y in r["per_yaw"]}, key=float)
  metrics_v = [k for k in order if any(k in v for _, r in runs.values()
                                       for v in r["per_yaw"].values())]
  if yaws and metrics_v:
    lines += ["", "## Novel views (yaw, radians)"]
    for m in metrics_v:
      lines += ["", f"### {_NAMES.get(m, m)}", "", "| method | " + " | ".join(yaws) + " |",
                "|---|" + "---|" * len(yaws)]
      for name, (_, r) in runs.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r["per_yaw"].get(y, {}).get(m), m)
                                                 for y in yaws) + " |")
  lines += ["", "## Protocol", ""]
  for name, (d, r) in runs.items():
    p, s = r["protocol"], r["settings"]
    lines.append(f"- **{name}** ({d}): generator {p['generator']}; {p['resolution']} px; ID "
                 f"network {p['id_network'] or 'none'} (crop {p['id_crop']}); LPIPS "
                 f"{p['lpips_network'] or 'none'}; options {json.dumps(s['options'])}; key "
                 f"PRNGKey({s['seed']}); skipped {len(r['skipped'])}")
  notes = sorted({n for _, r in runs.values() for n in r["notes"]})
  lines += [f"- {n}" for n in notes]
  lines.append("- grid.png: per item one row per method (input | reconstruction | views)"
               + (", the world's exact views in the last row" if data == "world" else ""))
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  out = {"runs": {name: r for name, (_, r) in runs.items()}}
  with open(os.path.join(outdir, "results.json"), "w") as f:
    json.dump(out, f, indent=1)
  curves_png(os.path.join(outdir, "per_yaw.png"), {n: r["per_yaw"] for n, (_, r) in runs.items()})
  _compare_grid(runs, os.path.join(outdir, "grid.png"))
  return out


def _compare_grid(runs, path, max_items: int = 4) -> bool:
  from PIL import Image, ImageDraw
  first = next(iter(runs.values()))[0]
  names = sorted(os.listdir(os.path.join(first, PREVIEWS))) if os.path.isdir(
      os.path.join(first, PREVIEWS)) else []
  names = [n for n in names if all(os.path.exists(os.path.join(d, PREVIEWS, n))
                                   for d, _ in runs.values())][:max_items]
  blocks = []
  for n in names:
    rows, truth = [], None
    for name, (d, r) in runs.items():
      a = np.asarray(Image.open(os.path.join(d, PREVIEWS, n)).convert("RGB"))
      tile = a.shape[1] // (2 + len(r["per_yaw"]))   # input | reconstruction | each view
      rows.append((name, a[:tile]))
      if a.shape[0] >= 2 * tile and truth is None:   # the world's exact views, once
        truth = ("world", a[tile:2 * tile])
    if truth is not None:
      rows.append(truth)
    for label, r in rows:
      strip = Image.new("RGB", (90, r.shape[0]), "white")
      ImageDraw.Draw(strip).text((4, 4), label[:14], fill="black")
      blocks.append(np.concatenate([np.asarray(strip), r], axis=1))
    blocks.append(np.full((6, blocks[-1].shape[1], 3), 255, np.uint8))
  return _stack_png(blocks, path)
