"""Turn a folder of photos into an EG3D-format dataset: aligned crops + dataset.json.

  jaxinv preprocess IN_DIR OUT_DIR [--size 512] [--mirror]

Every image under IN_DIR (jpg, png, ...) gets MTCNN face detection (largest face above
--min-confidence), EG3D's in-the-wild crop, and a camera label estimated from its landmarks.
OUT_DIR receives <name>.png crops (sub-folders kept), dataset.json ({"labels": [[file, c[25]]]}),
and preprocess_report.json listing every skipped file with its reason, the photos with several
faces, and each face's yaw/pitch/roll. --mirror also writes <name>_mirror.png with the mirrored
label, as EG3D's dataset tool does.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

HELP = "detect, align and estimate camera poses for a folder of photos (EG3D dataset.json)"


def add_arguments(p):
  p.add_argument("in_dir", help="folder of photos (searched recursively)")
  p.add_argument("out_dir", help="output folder (created)")
  p.add_argument("--size", type=int, default=512, help="crop side in pixels (default 512)")
  p.add_argument("--mirror", action="store_true", help="also write mirrored crops and labels")
  p.add_argument("--min-confidence", type=float, default=0.9, help="detector confidence (0.9)")
  p.add_argument("--no-roll", action="store_true", help="labels without head roll")
  p.add_argument("--weights", default=None, help="folder with MTCNN pnet/rnet/onet.lz4")


def run(args) -> int:
  from PIL import Image
  from tqdm import tqdm

  from jaxinv.preprocess import pipeline, pose

  in_dir, out_dir = pathlib.Path(args.in_dir), pathlib.Path(args.out_dir)
  paths = pipeline.list_images(in_dir)
  if not paths:
    print(f"no images ({', '.join(pipeline.IMAGE_SUFFIXES)}) under {in_dir}")
    return 1
  out_dir.mkdir(parents=True, exist_ok=True)
  labels, skipped, several, faces = [], [], [], {}
  results = pipeline.preprocess_folder(in_dir, output_size=args.size,
                                       min_confidence=args.min_confidence,
                                       include_roll=not args.no_roll, weights_path=args.weights)
  for r in tqdm(results, total=len(paths), desc="preprocess", unit="img"):
    rel = r.path.relative_to(in_dir)
    if r.error is not None:
      skipped.append({"file": rel.as_posix(), "reason": r.error})
      continue
    name = rel.with_suffix(".png")
    (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(r.crop).save(out_dir / name)
    labels.append([name.as_posix(), [float(x) for x in r.c]])
    info = r.info
    faces[name.as_posix()] = {
        "confidence": round(info.confidence, 4),
        "yaw_deg": round(float(np.degrees(info.pose.yaw)), 2),
        "pitch_deg": round(float(np.degrees(info.pose.pitch)), 2),
        "roll_deg": round(float(np.degrees(info.pose.roll)), 2),
        "n_faces": info.n_faces,
    }
    if info.n_faces > 1:
      several.append({"file": rel.as_posix(), "n_faces": info.n_faces,
                      "used_box": [round(float(v), 1) for v in info.box]})
    if args.mirror:
      mname = name.with_name(name.stem + "_mirror.png")
      Image.fromarray(r.crop[:, ::-1]).save(out_dir / mname)
      labels.append([mname.as_posix(), [float(x) for x in pose.mirror_label(r.c)]])
  (out_dir / "dataset.json").write_text(json.dumps({"labels": labels}))
  report = {"input": str(in_dir), "processed": len(paths) - len(skipped), "skipped": skipped,
            "several_faces_largest_used": several, "faces": faces}
  (out_dir / "preprocess_report.json").write_text(json.dumps(report, indent=1))
  print(f"{len(paths) - len(skipped)} of {len(paths)} photos -> {out_dir}/dataset.json "
        f"({len(labels)} labels)")
  for s in skipped:
    print(f"  skipped {s['file']}: {s['reason']}")
  for s in several:
    print(f"  {s['file']}: {s['n_faces']} faces, the largest was used")
  return 0 if labels else 1
