"""Turn a folder of photos into an EG3D-format dataset: aligned crops + dataset.json.

  jaxinv preprocess IN_DIR OUT_DIR [--size 512] [--mirror]

Every image under IN_DIR (jpg, png, ...) gets MTCNN face detection (largest face above
--min-confidence), EG3D's in-the-wild crop, and a camera label estimated from its landmarks.
OUT_DIR receives <name>.png crops (sub-folders kept; photos sharing a name, like face.png and
face.jpg, become face_png.png and face_jpg.png), dataset.json ({"labels": [[file, c[25]]]}),
and preprocess_report.json listing every skipped file with its reason, the photos with several
faces, and each face's yaw/pitch/roll. --mirror also writes <name>_mirror.png with the mirrored
label, as EG3D's dataset tool does. Files already in OUT_DIR are never replaced unless
--overwrite is given; every output name is checked before any photo is processed.
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
  p.add_argument("--overwrite", action="store_true",
                 help="replace crops / dataset.json already in OUT_DIR (default: refuse)")


REPORT_NAMES = ("dataset.json", "preprocess_report.json")


def output_names(rels, mirror: bool) -> dict:
  """input path (relative) -> (crop name, mirror name or None), all unique.

  A crop is named ``<stem>.png``; when two inputs share a stem (``face.png`` and ``face.jpg``),
  each of them keeps its extension in the name (``face_png.png``, ``face_jpg.png``). Names are
  compared case-insensitively (case-insensitive file systems). If a clash remains (e.g. an input
  literally named ``face_jpg.png``), this raises ``CommandError`` naming the files.
  """
  from jaxinv.cli import CommandError
  by_stem = {}
  for rel in rels:
    by_stem.setdefault(rel.with_suffix("").as_posix().lower(), []).append(rel)
  names = {}
  for group in by_stem.values():
    for rel in group:
      crop = (rel.with_suffix(".png") if len(group) == 1 else
              rel.with_name(f"{rel.stem}_{rel.suffix[1:].lower()}.png"))
      mname = crop.with_name(crop.stem + "_mirror.png") if mirror else None
      names[rel] = (crop, mname)
  owner = {n.lower(): ("output", n) for n in REPORT_NAMES}
  for rel, pair in names.items():
    for n in pair:
      if n is None:
        continue
      key = n.as_posix().lower()
      if key in owner:
        other = owner[key][1]
        raise CommandError(f"output name clash: {rel.as_posix()} and {other} both map to "
                           f"{n.as_posix()}; rename one of them")
      owner[key] = ("input", rel.as_posix())
  return names


def run(args) -> int:
  from jaxinv.cli import CommandError, output_dir, refuse_existing

  if args.size < 16:
    raise CommandError(f"--size must be at least 16 pixels, got {args.size}")
  in_dir, out_dir = pathlib.Path(args.in_dir), pathlib.Path(args.out_dir)
  if not in_dir.exists():
    raise CommandError(f"no such folder: {in_dir}")
  if not in_dir.is_dir():
    raise NotADirectoryError(f"IN_DIR is not a folder: {in_dir}")
  output_dir(out_dir, what="OUT_DIR")

  from PIL import Image
  from tqdm import tqdm

  from jaxinv.preprocess import pipeline, pose
  paths = pipeline.list_images(in_dir)  # NotADirectoryError for a file
  if not paths:
    raise CommandError(f"no images ({', '.join(pipeline.IMAGE_SUFFIXES)}) under {in_dir}")
  try:
    if out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents:
      raise CommandError(f"OUT_DIR {out_dir} is inside IN_DIR {in_dir}; choose a folder outside it")
  except OSError:
    pass
  names = output_names([p.relative_to(in_dir) for p in paths], args.mirror)
  planned = [out_dir / n for pair in names.values() for n in pair if n is not None]
  refuse_existing(*planned, *(out_dir / n for n in REPORT_NAMES), overwrite=args.overwrite)

  labels, skipped, several, faces, written = [], [], [], {}, 0
  results = pipeline.preprocess_folder(in_dir, output_size=args.size,
                                       min_confidence=args.min_confidence,
                                       include_roll=not args.no_roll, weights_path=args.weights)
  out_dir.mkdir(parents=True, exist_ok=True)
  for r in tqdm(results, total=len(paths), desc="preprocess", unit="img"):
    rel = r.path.relative_to(in_dir)
    if r.error is not None:
      skipped.append({"file": rel.as_posix(), "reason": r.error})
      continue
    name, mname = names[rel]
    (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(r.crop).save(out_dir / name)
    written += 1
    labels.append([name.as_posix(), [float(x) for x in r.c]])
    info = r.info
    faces[name.as_posix()] = {
        "source": rel.as_posix(),
        "confidence": round(info.confidence, 4),
        "yaw_deg": round(float(np.degrees(info.pose.yaw)), 2),
        "pitch_deg": round(float(np.degrees(info.pose.pitch)), 2),
        "roll_deg": round(float(np.degrees(info.pose.roll)), 2),
        "n_faces": info.n_faces,
    }
    if info.n_faces > 1:
      several.append({"file": rel.as_posix(), "n_faces": info.n_faces,
                      "used_box": [round(float(v), 1) for v in info.box]})
    if mname is not None:
      Image.fromarray(r.crop[:, ::-1]).save(out_dir / mname)
      labels.append([mname.as_posix(), [float(x) for x in pose.mirror_label(r.c)]])
  (out_dir / "dataset.json").write_text(json.dumps({"labels": labels}))
  report = {"input": str(in_dir), "photos": len(paths), "processed": written,
            "labels": len(labels), "skipped": skipped,
            "several_faces_largest_used": several, "faces": faces}
  (out_dir / "preprocess_report.json").write_text(json.dumps(report, indent=1))
  print(f"{written} of {len(paths)} photos -> {out_dir}/dataset.json ({len(labels)} labels)")
  for s in skipped:
    print(f"  skipped {s['file']}: {s['reason']}")
  for s in several:
    print(f"  {s['file']}: {s['n_faces']} faces, the largest was used")
  return 0 if labels else 1
