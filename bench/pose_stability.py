"""Pose stability of `jaxinv.preprocess` across file encodings (issue 16 item 5).

For every crop in ../shared/fixtures/faces: estimate (yaw, pitch) from the PNG, JPEG q95, JPEG q75
and a 0.9x resize of each of those (6 variants); report per face the spread (max - min over the
variants, degrees) and the error of the PNG estimate against the official label.

  python bench/pose_stability.py            # writes bench/results/pose_stability.{json,md}

Both with the landmark refinement (the default) and without it (``stabilize=False``).
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
FACES = pathlib.Path(os.environ.get("JAXINV_SHARED", REPO.parent / "shared")) / "fixtures" / "faces"


def variants(img: Image.Image) -> dict:
  out = {}
  for enc, kw in (("png", {}), ("jpeg95", {"quality": 95}), ("jpeg75", {"quality": 75})):
    buf = io.BytesIO()
    img.save(buf, "PNG" if enc == "png" else "JPEG", **kw)
    dec = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out[enc] = np.asarray(dec)
    w, h = dec.size
    out[enc + "_0.9x"] = np.asarray(dec.resize((round(0.9 * w), round(0.9 * h)), Image.BICUBIC))
  return out


def measure(labels, stabilize: bool) -> tuple[list, dict]:
  """Per-face rows and the summary for one setting of ``jaxinv.preprocess(stabilize=...)``."""
  import jaxinv
  from jaxinv.preprocess import pose
  rows, wall, cpu = [], [], []
  jaxinv.preprocess(np.asarray(Image.open(FACES / sorted(labels)[0]).convert("RGB")),
                    stabilize=stabilize)  # compile outside the timings
  for name in sorted(labels):
    ref = np.degrees(pose.angles_from_label(np.asarray(labels[name], np.float64))[:2])
    est = {}
    for k, a in variants(Image.open(FACES / name).convert("RGB")).items():
      t, c = time.perf_counter(), time.process_time()
      _, _, info = jaxinv.preprocess(a, return_info=True, stabilize=stabilize)
      wall.append(time.perf_counter() - t)
      cpu.append(time.process_time() - c)
      est[k] = np.degrees([info.pose.yaw, info.pose.pitch])
    e = np.stack(list(est.values()))
    spread = e.max(0) - e.min(0)
    rows.append({"file": name, "ref_yaw": round(float(ref[0]), 2), "ref_pitch": round(float(ref[1]), 2),
                 "png_yaw": round(float(est["png"][0]), 2), "png_pitch": round(float(est["png"][1]), 2),
                 "spread_yaw": round(float(spread[0]), 2), "spread_pitch": round(float(spread[1]), 2),
                 "err_yaw_png": round(float(abs(est["png"][0] - ref[0])), 2),
                 "err_pitch_png": round(float(abs(est["png"][1] - ref[1])), 2),
                 "variants": {k: [round(float(x), 2) for x in v] for k, v in est.items()}})
    print(stabilize, rows[-1]["file"], rows[-1]["spread_yaw"], rows[-1]["spread_pitch"], flush=True)
  worst = max(rows, key=lambda r: max(r["spread_yaw"], r["spread_pitch"]))
  summary = {
      "stabilize": stabilize,
      "worst_spread_deg": max(worst["spread_yaw"], worst["spread_pitch"]), "worst_file": worst["file"],
      "median_spread_deg": float(np.median([max(r["spread_yaw"], r["spread_pitch"]) for r in rows])),
      "mean_err_yaw_png": round(float(np.mean([r["err_yaw_png"] for r in rows])), 2),
      "mean_err_pitch_png": round(float(np.mean([r["err_pitch_png"] for r in rows])), 2),
      "max_err_yaw_png": round(float(np.max([r["err_yaw_png"] for r in rows])), 2),
      "max_err_pitch_png": round(float(np.max([r["err_pitch_png"] for r in rows])), 2),
      "seconds_per_photo_wall_median": round(float(np.median(wall)), 3),
      "seconds_per_photo_cpu_median": round(float(np.median(cpu)), 3)}
  return rows, summary


def main():
  labels = dict(json.loads((FACES / "dataset.json").read_text())["labels"])
  t0 = time.time()
  rows, summary = measure(labels, stabilize=True)
  rows_raw, summary_raw = measure(labels, stabilize=False)
  env = {"seconds": round(time.time() - t0, 1), "load_avg": os.getloadavg(),
         "cpus": os.cpu_count(), "machine": platform.platform(), "python": sys.version.split()[0]}
  out = REPO / "bench" / "results"
  out.mkdir(parents=True, exist_ok=True)
  (out / "pose_stability.json").write_text(json.dumps(
      {"summary": summary, "summary_unstabilized": summary_raw, "env": env, "faces": rows,
       "faces_unstabilized": rows_raw}, indent=1))
  by_name = {r["file"]: r for r in rows_raw}

  def line(s):
    return (f"worst spread {s['worst_spread_deg']} deg ({s['worst_file']}), median "
            f"{s['median_spread_deg']:.2f} deg; error of the PNG estimate vs the official labels "
            f"yaw {s['mean_err_yaw_png']} / pitch {s['mean_err_pitch_png']} deg mean (max "
            f"{s['max_err_yaw_png']} / {s['max_err_pitch_png']}); "
            f"{s['seconds_per_photo_wall_median']} s per photo "
            f"({s['seconds_per_photo_cpu_median']} s CPU), median")

  md = ["# Pose stability across encodings (PNG, JPEG q95/q75, each also at 0.9x)", "",
        "Spread = max - min over the 6 variants of each crop in fixtures/faces, degrees. "
        "`python bench/pose_stability.py`.", "",
        f"- `jaxinv.preprocess` (default, `stabilize=True`): {line(summary)}.",
        f"- `stabilize=False` (the detector's landmarks, as before issue 16 item 5): "
        f"{line(summary_raw)}.", "",
        f"{env['cpus']} CPUs shared with other jobs (load average {env['load_avg'][0]:.1f} at the "
        "end): timings are noisy. Seconds per photo: one warm `jaxinv.preprocess` call on a 512 "
        "or 461 px crop (detection, refinement, alignment, pose).", "",
        "| file | ref yaw | ref pitch | png yaw | png pitch | spread yaw | spread pitch | "
        "spread yaw, unstabilized | spread pitch, unstabilized |",
        "|---|---|---|---|---|---|---|---|---|"]
  md += [f"| {r['file']} | {r['ref_yaw']} | {r['ref_pitch']} | {r['png_yaw']} | {r['png_pitch']} | "
         f"{r['spread_yaw']} | {r['spread_pitch']} | {by_name[r['file']]['spread_yaw']} | "
         f"{by_name[r['file']]['spread_pitch']} |" for r in rows]
  (out / "pose_stability.md").write_text("\n".join(md) + "\n")
  print(json.dumps({"stabilized": summary, "unstabilized": summary_raw, "env": env}))


if __name__ == "__main__":
  main()
