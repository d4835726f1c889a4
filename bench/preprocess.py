"""Photo preprocessing speed on CPU: detection + EG3D alignment + pose, jaxinv vs the reference.

Photos of 512, 768 and 1024 px (the astronaut and fixture faces, placed on larger canvases) go
through ``jaxinv.preprocess`` (MTCNN in JAX, compiled; crop; landmark pose). Compilation is timed
separately (first call per photo size); throughput is the median over ``--runs`` passes of the
warm pipeline. Stage times (detection / alignment / pose) are reported too.

The reference detector EG3D uses (the ``mtcnn`` 1.x package on TensorFlow) is timed in the same
run when a Python with it is given (a throwaway venv: ``pip install tensorflow-cpu mtcnn``); its
boxes are compared with ours. EG3D's pose step (Deep3DFaceRecon + nvdiffrast) cannot run here,
so the reference column is detection only::

  python bench/preprocess.py [--reference-python /tmp/tfvenv/bin/python] [--runs 3]

Writes ``bench/results/preprocess_cpu.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_REFERENCE_SCRIPT = r"""
import json, sys, time
import numpy as np
from mtcnn import MTCNN
det = MTCNN()
z = np.load(sys.argv[1])
runs = int(sys.argv[2])
out = {}
for name in z.files:
  img = z[name]
  t = time.perf_counter(); r = det.detect_faces(img, output_type="numpy", box_format="xyxy")
  first = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter(); r = det.detect_faces(img, output_type="numpy", box_format="xyxy")
    times.append(time.perf_counter() - t)
  r = np.asarray(r).reshape(-1, 16)
  out[name] = {"first_s": first, "times_s": times, "boxes": r[:, 1:5].tolist(),
               "landmarks_x": r[:, 6:11].tolist()}
print("RESULT" + json.dumps(out))
"""


def photos() -> dict:
  import skimage.data
  from PIL import Image
  faces = REPO.parent / "shared" / "fixtures" / "faces"
  src = [skimage.data.astronaut()]
  for f in ("goae_3.jpg", "goae_11.jpg", "triplanenet_example.png"):
    if (faces / f).is_file():
      src.append(np.asarray(Image.open(faces / f).convert("RGB")))
  out = {}
  rng = np.random.RandomState(0)
  for size in (512, 768, 1024):
    for i, img in enumerate(src):
      canvas = np.full((size, size, 3), 110, np.uint8)
      s = int(size * rng.uniform(0.45, 0.7))  # face photo occupies part of a larger picture
      small = np.asarray(Image.fromarray(img).resize((s, s), Image.BICUBIC))
      y, x = rng.randint(0, size - s + 1, 2)
      canvas[y:y + s, x:x + s] = small
      out[f"{size}px_{i}"] = canvas
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--runs", type=int, default=3)
  ap.add_argument("--reference-python", default=None)
  args = ap.parse_args()

  import jax
  from jaxinv.preprocess import align, mtcnn, pipeline, pose

  imgs = photos()
  params = mtcnn.load_params()
  rows = {}
  for name, img in imgs.items():
    t = time.perf_counter()
    pipeline.preprocess_image(img)
    first = time.perf_counter() - t
    total, det_t, al_t, pose_t = [], [], [], []
    for _ in range(args.runs):
      t0 = time.perf_counter()
      d = mtcnn.detect_faces(img, params)
      t1 = time.perf_counter()
      i = mtcnn.pick_largest(d)
      crop, al = align.align_face(img, d.landmarks[i], 512)
      t2 = time.perf_counter()
      est = pose.estimate_camera(al.to_normalized(d.landmarks[i]))
      t3 = time.perf_counter()
      total.append(t3 - t0), det_t.append(t1 - t0), al_t.append(t2 - t1), pose_t.append(t3 - t2)
    rows[name] = {"first_call_s": first, "total_s": statistics.median(total),
                  "detect_s": statistics.median(det_t), "align_s": statistics.median(al_t),
                  "pose_s": statistics.median(pose_t), "boxes": d.boxes.tolist(),
                  "yaw_pitch_deg": np.degrees(est.pose[:2]).round(2).tolist()}
    print(name, {k: round(v, 4) for k, v in rows[name].items() if k.endswith("_s")})

  ref = None
  if args.reference_python:
    with tempfile.TemporaryDirectory() as tmp:
      npz = os.path.join(tmp, "imgs.npz")
      np.savez(npz, **imgs)
      script = os.path.join(tmp, "ref.py")
      pathlib.Path(script).write_text(_REFERENCE_SCRIPT)
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
      p = subprocess.run([args.reference_python, script, npz, str(args.runs)], env=env,
                         capture_output=True, text=True)
      line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
      if not line:
        print(p.stdout[-2000:], p.stderr[-2000:])
        raise SystemExit("reference run failed")
      ref = json.loads(line[0][len("RESULT"):])
    for name, r in ref.items():
      rows[name]["reference_detect_s"] = statistics.median(r["times_s"])
      rows[name]["reference_first_call_s"] = r["first_s"]
      a, b = np.asarray(rows[name]["boxes"]), np.asarray(r["boxes"])
      rows[name]["max_box_diff_px"] = float(np.abs(a - b).max()) if a.shape == b.shape and a.size else None

  by_size = {}
  for name, r in rows.items():
    by_size.setdefault(name.split("_")[0], []).append(r)
  summary = {}
  for size, rs in by_size.items():
    tot = sum(r["total_s"] for r in rs)
    s = {"images": len(rs), "jaxinv_images_per_s": len(rs) / tot,
         "jaxinv_detect_s": statistics.mean(r["detect_s"] for r in rs),
         "jaxinv_align_s": statistics.mean(r["align_s"] for r in rs),
         "jaxinv_pose_s": statistics.mean(r["pose_s"] for r in rs),
         "jaxinv_first_call_s": statistics.mean(r["first_call_s"] for r in rs)}
    if ref:
      s["reference_detect_images_per_s"] = len(rs) / sum(r["reference_detect_s"] for r in rs)
      diffs = [r["max_box_diff_px"] for r in rs if r.get("max_box_diff_px") is not None]
      s["max_box_diff_px"] = max(diffs) if diffs else None
    summary[size] = s

  meta = {"device": "CPU (no accelerator lent to this task)", "cpu_count": os.cpu_count(),
          "platform": platform.platform(), "python": platform.python_version(),
          "jax": jax.__version__, "runs": args.runs,
          "reference": "mtcnn 1.x on TensorFlow (detection only)" if ref else None}
  res_dir = REPO / "bench" / "results"
  res_dir.mkdir(parents=True, exist_ok=True)
  (res_dir / "preprocess_cpu.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                           "per_image": rows}, indent=1))
  lines = ["# Photo preprocessing on CPU (detect + align + pose)", "",
           f"{meta['device']}; {meta['cpu_count']} cores; jax {meta['jax']}; median of "
           f"{args.runs} warm runs per photo. Reference: {meta['reference'] or 'not run'}.", "",
           "| photo size | photos | jaxinv photos/s | detect s | align s | pose s | first call s |"
           + (" reference detect photos/s | max box diff px |" if ref else ""),
           "|---|---|---|---|---|---|---|" + ("---|---|" if ref else "")]
  for size, s in summary.items():
    line = (f"| {size} | {s['images']} | {s['jaxinv_images_per_s']:.2f} | {s['jaxinv_detect_s']:.3f} "
            f"| {s['jaxinv_align_s']:.3f} | {s['jaxinv_pose_s']:.4f} | {s['jaxinv_first_call_s']:.2f} |")
    if ref:
      d = s["max_box_diff_px"]
      line += f" {s['reference_detect_images_per_s']:.2f} | {'n/a' if d is None else f'{d:.4f}'} |"
    lines.append(line)
  lines += ["", "First call includes compilation for new pyramid-level shapes (shared across photo "
            "sizes through bucketing). The machine is shared with other jobs; timings are noisy."]
  (res_dir / "preprocess_cpu.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
