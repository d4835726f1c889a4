"""Pose stability of `jaxinv.preprocess` across file encodings (issue 16 item 5).

For every crop in ../shared/fixtures/faces: estimate (yaw, pitch) from the PNG, JPEG q95, JPEG q75
and a 0.9x resize of each of those (6 variants); report per face the spread (max - min over the
variants, degrees) and the error of the PNG estimate against the official label.

  python bench/pose_stability.py            # writes bench/results/pose_stability.{json,md}
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


def main():
  import jaxinv
  from jaxinv.preprocess import pose
  labels = dict(json.loads((FACES / "dataset.json").read_text())["labels"])
  rows, t0 = [], time.time()
  for name in sorted(labels):
    ref = np.degrees(pose.angles_from_label(np.asarray(labels[name], np.float64))[:2])
    est = {}
    for k, a in variants(Image.open(FACES / name).convert("RGB")).items():
      _, _, info = jaxinv.preprocess(a, return_info=True)
      est[k] = np.degrees([info.pose.yaw, info.pose.pitch])
    e = np.stack(list(est.values()))
    spread = e.max(0) - e.min(0)
    rows.append({"file": name, "ref_yaw": round(float(ref[0]), 2), "ref_pitch": round(float(ref[1]), 2),
                 "png_yaw": round(float(est["png"][0]), 2), "png_pitch": round(float(est["png"][1]), 2),
                 "spread_yaw": round(float(spread[0]), 2), "spread_pitch": round(float(spread[1]), 2),
                 "err_yaw_png": round(float(abs(est["png"][0] - ref[0])), 2),
                 "err_pitch_png": round(float(abs(est["png"][1] - ref[1])), 2),
                 "variants": {k: [round(float(x), 2) for x in v] for k, v in est.items()}})
    print(rows[-1]["file"], rows[-1]["spread_yaw"], rows[-1]["spread_pitch"], flush=True)
  worst = max(rows, key=lambda r: max(r["spread_yaw"], r["spread_pitch"]))
  summary = {
      "worst_spread_deg": max(worst["spread_yaw"], worst["spread_pitch"]), "worst_file": worst["file"],
      "median_spread_deg": float(np.median([max(r["spread_yaw"], r["spread_pitch"]) for r in rows])),
      "mean_err_yaw_png": round(float(np.mean([r["err_yaw_png"] for r in rows])), 2),
      "mean_err_pitch_png": round(float(np.mean([r["err_pitch_png"] for r in rows])), 2),
      "seconds": round(time.time() - t0, 1), "load_avg": os.getloadavg(),
      "machine": platform.platform(), "python": sys.version.split()[0]}
  out = REPO / "bench" / "results"
  out.mkdir(parents=True, exist_ok=True)
  (out / "pose_stability.json").write_text(json.dumps({"summary": summary, "faces": rows}, indent=1))
  md = ["# Pose stability across encodings (PNG, JPEG q95/q75, each also at 0.9x)", "",
        f"Spread = max - min over the 6 variants, degrees. Worst {summary['worst_spread_deg']} deg "
        f"({summary['worst_file']}), median {summary['median_spread_deg']:.2f} deg. Error of the PNG "
        f"estimate vs the official labels: yaw {summary['mean_err_yaw_png']}, pitch "
        f"{summary['mean_err_pitch_png']} deg (mean). `python bench/pose_stability.py`.", "",
        "| file | ref yaw | ref pitch | png yaw | png pitch | spread yaw | spread pitch |",
        "|---|---|---|---|---|---|---|"]
  md += [f"| {r['file']} | {r['ref_yaw']} | {r['ref_pitch']} | {r['png_yaw']} | {r['png_pitch']} | "
         f"{r['spread_yaw']} | {r['spread_pitch']} |" for r in rows]
  (out / "pose_stability.md").write_text("\n".join(md) + "\n")
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
