"""Photo in -> (aligned crop, camera label): detection, EG3D alignment, pose, for files and folders."""
from __future__ import annotations

import os
import pathlib
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxinv.preprocess import align, mtcnn, pose

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MIN_SIDE = 20  # MTCNN's smallest face (20 px) must fit


class FaceInfo(NamedTuple):
  """What was found: the detector's box [4] and the landmarks [5, 2] that the crop and the pose
  use (refined by ``mtcnn.refine_landmarks`` unless ``stabilize=False``), in photo pixels; the
  detector's confidence, number of faces above the threshold, the camera estimate
  (yaw/pitch/roll radians) and the crop alignment."""
  box: np.ndarray
  landmarks: np.ndarray
  confidence: float
  n_faces: int
  pose: pose.Pose
  fit_rms: float
  alignment: align.Alignment


def to_rgb_uint8(image, name: str = "image") -> np.ndarray:
  """Path / PIL image / array -> uint8 [H, W, 3] RGB, or a clear error.

  Grayscale is replicated to RGB, alpha is dropped (as EG3D's loaders do), 16-bit images are
  scaled to 8 bits (x / 257), palette images are expanded. Float and bool arrays are refused
  because their value range is ambiguous.
  """
  if isinstance(image, (str, os.PathLike)):
    path = pathlib.Path(image)
    if not path.is_file():
      raise FileNotFoundError(f"{name}: no such file: {path}")
    try:
      with Image.open(path) as im:
        im.load()
        return to_rgb_uint8(im, name)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
      raise ValueError(f"{name}: cannot read {path} as an image ({e})") from e
  if isinstance(image, Image.Image):
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
      a = np.asarray(image)
      if a.dtype != np.uint16 and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"{name}: {image.mode} image with values outside 16-bit range")
      return to_rgb_uint8(a.astype(np.uint16), name)
    if image.mode == "F":
      raise TypeError(f"{name}: floating-point ('F') images are ambiguous; convert to 8-bit RGB")
    return np.asarray(image.convert("RGB"))
  a = np.asarray(image)
  if a.dtype == np.uint16:
    a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
  if a.dtype != np.uint8:
    raise TypeError(f"{name}: expected a uint8 (or uint16) array, got dtype {a.dtype}; "
                    "float images are ambiguous (0-1 or 0-255?): convert to uint8 first")
  if a.ndim == 2:
    a = np.stack([a] * 3, axis=-1)
  if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{name}: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {a.shape}")
  if a.shape[-1] == 1:
    a = np.repeat(a, 3, axis=-1)
  return np.ascontiguousarray(a[..., :3])


def stable_landmarks(rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray,
                     params: dict) -> np.ndarray:
  """``mtcnn.refine_landmarks`` of one detection, or the detector's ``landmarks`` [5, 2] when the
  refinement wandered off (O-Net no longer sees a face, or the box moved by more than a quarter
  of its side or changed its size by more than 1.5x); on fixtures/faces it never does."""
  ref = mtcnn.refine_landmarks(rgb, box, params)
  side0 = max(box[2] - box[0], box[3] - box[1])
  side1 = ref.box[2] - ref.box[0]
  moved = np.abs((ref.box[:2] + ref.box[2:]) / 2 - (np.asarray(box[:2]) + box[2:4]) / 2).max()
  if ref.score < 0.5 or moved > 0.25 * side0 or not 2 / 3 < side1 / side0 < 1.5:
    return np.asarray(landmarks)
  return ref.landmarks


def preprocess_image(image, *, output_size: int = 512, min_confidence: float = 0.9,
                     include_roll: bool = True, refine=None, weights_path=None,
                     stabilize: bool = True):
  """(crop uint8 [S, S, 3], c float32 [25], :class:`FaceInfo`) for one photo.

  ``stabilize``: refine the landmarks (:func:`stable_landmarks`) so that the crop and the pose
  do not depend on the file's encoding (PNG vs JPEG, a resize): yaw/pitch spread over such
  copies of a photo at most 0.15 instead of 5.5 degrees on fixtures/faces, and a smaller error
  against the official labels, for about 0.08 s more CPU per photo (0.20 -> 0.28 s for a
  512 px photo; bench/results/pose_stability.md). ``False``: the detector's landmarks, as
  EG3D's ``batch_mtcnn.py`` writes them.

  Raises:
    mtcnn.NoFaceError: no face above ``min_confidence``.
    ValueError / TypeError / FileNotFoundError: unusable input, named.
  """
  rgb = to_rgb_uint8(image)
  h, w = rgb.shape[:2]
  if min(h, w) < MIN_SIDE:
    raise ValueError(f"image: {w}x{h} px is too small; the detector needs at least "
                     f"{MIN_SIDE} px on each side")
  params = mtcnn.load_params(weights_path)
  dets = mtcnn.detect_faces(rgb, params)
  i = mtcnn.pick_largest(dets, min_confidence)
  n_faces = int(np.sum(dets.scores > min_confidence))
  lm = dets.landmarks[i]
  if stabilize:
    lm = stable_landmarks(rgb, dets.boxes[i], lm, params)
  crop, al = align.align_face(rgb, lm, output_size)
  est = pose.estimate_camera(al.to_normalized(lm), include_roll=include_roll, refine=refine)
  info = FaceInfo(dets.boxes[i], lm, float(dets.scores[i]), n_faces, est.pose, est.rms, al)
  return crop, est.c, info


def preprocess(image, *, output_size: int = 512, min_confidence: float = 0.9,
               include_roll: bool = True, refine=None, weights_path=None,
               return_info: bool = False, stabilize: bool = True):
  """``(crop, c)`` or ``(crop, c, info)``: the body of ``jaxinv.preprocess`` (see ``jaxinv.api``)."""
  crop, c, info = preprocess_image(image, output_size=output_size, min_confidence=min_confidence,
                                   include_roll=include_roll, refine=refine,
                                   weights_path=weights_path, stabilize=stabilize)
  return (crop, c, info) if return_info else (crop, c)


def list_images(folder) -> list[pathlib.Path]:
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise NotADirectoryError(f"not a folder: {folder}")
  return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class Result(NamedTuple):
  """One file of a folder: ``crop``/``c``/``info`` are None and ``error`` says why when skipped."""
  path: pathlib.Path
  crop: np.ndarray | None
  c: np.ndarray | None
  info: FaceInfo | None
  error: str | None


def preprocess_folder(folder, **kwargs) -> Iterator[Result]:
  """Runs :func:`preprocess_image` on every image under ``folder`` (sorted); never raises for
  one bad file: it is yielded with its reason. Missing detector weights fail at once."""
  mtcnn.load_params(kwargs.get("weights_path"))
  for path in list_images(folder):
    try:
      crop, c, info = preprocess_image(path, **kwargs)
      yield Result(path, crop, c, info, None)
    except (mtcnn.NoFaceError, ValueError, TypeError, OSError) as e:
      yield Result(path, None, None, None, f"{type(e).__name__}: {e}")
