"""EG3D's in-the-wild face crop from five landmarks, at any output size.

EG3D's ``crop_images_in_the_wild.py`` (with Deep3DFaceRecon's ``align_img``) fits the five
detected landmarks to the five landmarks of a mean 3D face with a weak-perspective least-squares
fit ("POS"), which gives a translation ``t`` and a scale ``s``. The photo is rescaled by
``rescale_factor / s`` (bicubic), a 1024 x 1024 window centred on ``t`` is cut (zero outside the
photo), its central 700 x 700 part is kept and resized to 512 (Lanczos). There is no rotation: the
head's roll stays in the picture and goes into the camera label instead.

We follow the same integer truncations so the windows land on the same pixels, but resample only
the 700 x 700 window instead of the whole rescaled photo (same PIL filters, same source
coordinates), which keeps memory bounded for small faces in large photos.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

# Five landmarks of the mean face (left eye, right eye, nose tip, mouth left, mouth right; x right,
# y up, z towards the viewer), in the Basel-Face-Model units used by Deep3DFaceRecon. They are the
# public mean 68-point landmarks reduced to 5 points (eye = mean of its two corners).
MEAN_FACE_LM5 = np.array([
    [-0.311486572, 0.290360779, 0.133779526],
    [0.309798874, 0.289720371, 0.131795257],
    [0.003253499, -0.046179324, 0.552442431],
    [-0.252169281, -0.381339163, 0.224057317],
    [0.248466194, -0.381282359, 0.222357690],
])

# EG3D's recipe: rescaled so the mean face spans `rescale_factor` px per unit, a `target_size`
# window, its central `center_crop_size` part, resized to the output size.
TARGET_SIZE = 1024
RESCALE_FACTOR = 300.0
CENTER_CROP_SIZE = 700


def pos_fit(lm2d: np.ndarray, lm3d: np.ndarray = MEAN_FACE_LM5) -> tuple[np.ndarray, float]:
  """Weak-perspective fit of 3D points to 2D points: translation and mean scale.

  Solves ``lm2d ~ A @ lm3d + t`` for an unconstrained 2x3 ``A`` by least squares and reports
  ``s = (|A[0]| + |A[1]|) / 2``.

  Args:
    lm2d: [N, 2] image points (x right, y up).
    lm3d: [N, 3] model points.
  Returns:
    (t [2], s).
  """
  n = len(lm2d)
  a = np.zeros((2 * n, 8))
  a[0::2, 0:3] = lm3d
  a[0::2, 3] = 1
  a[1::2, 4:7] = lm3d
  a[1::2, 7] = 1
  k = np.linalg.lstsq(a, np.asarray(lm2d, np.float64).reshape(-1), rcond=None)[0]
  s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
  return np.array([k[3], k[7]]), float(s)


class Alignment(NamedTuple):
  """Where the crop lies in the photo.

  scale: photo px -> rescaled px (``w / W`` and ``h / H``, as ``(sx, sy)``); window: (x0, y0) of
  the ``CENTER_CROP_SIZE`` window in the rescaled photo; size: rescaled photo (w, h); output_size.
  """
  scale: tuple[float, float]
  window: tuple[int, int]
  size: tuple[int, int]
  output_size: int

  def to_crop(self, points: np.ndarray) -> np.ndarray:
    """Photo pixel coordinates [..., 2] (x, y; pixel centres at integers) -> crop pixels."""
    p = np.asarray(points, np.float64)
    edge = (p + 0.5) * np.asarray(self.scale) - np.asarray(self.window)  # in the 700 window
    return edge * (self.output_size / CENTER_CROP_SIZE) - 0.5

  def to_normalized(self, points: np.ndarray) -> np.ndarray:
    """Photo pixel coordinates [..., 2] -> crop coordinates in [0, 1] (the intrinsics' units)."""
    p = np.asarray(points, np.float64)
    return ((p + 0.5) * np.asarray(self.scale) - np.asarray(self.window)) / CENTER_CROP_SIZE


def alignment_for(landmarks: np.ndarray, width: int, height: int, output_size: int = 512,
                  rescale_factor: float = RESCALE_FACTOR) -> Alignment:
  """EG3D's crop window for a photo of ``width x height`` and its five landmarks.

  Args:
    landmarks: [5, 2] (x, y) pixels, y down, ordered as MTCNN gives them.
  """
  lm = np.asarray(landmarks, np.float64).reshape(5, 2).copy()
  if not np.all(np.isfinite(lm)):
    raise ValueError("landmarks: contain NaN or inf")
  lm[:, 1] = height - 1 - lm[:, 1]  # the reference fits in y-up coordinates
  t, s = pos_fit(lm)
  if not s > 0:
    raise ValueError(f"landmarks: degenerate (all at one point?): {landmarks.tolist()}")
  s = rescale_factor / s
  # np.int32 casts truncate towards zero, as the reference's `.astype(np.int32)`.
  w = int(np.int32(width * s))
  h = int(np.int32(height * s))
  left = int(np.int32(w / 2 - TARGET_SIZE / 2 + (t[0] - width / 2) * s))
  up = int(np.int32(h / 2 - TARGET_SIZE / 2 + (height / 2 - t[1]) * s))
  inner = int(TARGET_SIZE / 2 - CENTER_CROP_SIZE / 2)
  return Alignment((w / width, h / height), (left + inner, up + inner), (w, h), int(output_size))


def _resized_window(img: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int]):
  """Pixels ``box`` of ``img.resize(size, BICUBIC)`` (zero outside it), computed on the box only."""
  w, h = size
  x0, y0, x1, y1 = box
  out = Image.new(img.mode, (x1 - x0, y1 - y0))
  ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
  if ix0 < ix1 and iy0 < iy1:
    sx, sy = img.width / w, img.height / h
    src = (ix0 * sx, iy0 * sy, min(ix1 * sx, img.width), min(iy1 * sy, img.height))
    part = img.resize((ix1 - ix0, iy1 - iy0), Image.BICUBIC, box=src)
    out.paste(part, (ix0 - x0, iy0 - y0))
  return out


def crop(image, alignment: Alignment) -> np.ndarray:
  """Cuts the aligned face out of ``image`` (uint8 [H, W, 3] or PIL RGB): uint8 [S, S, 3]."""
  img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
  x0, y0 = alignment.window
  win = _resized_window(img, alignment.size, (x0, y0, x0 + CENTER_CROP_SIZE, y0 + CENTER_CROP_SIZE))
  s = alignment.output_size
  if s != CENTER_CROP_SIZE:
    win = win.resize((s, s), Image.LANCZOS)
  return np.asarray(win)


def align_face(image, landmarks: np.ndarray, output_size: int = 512) -> tuple[np.ndarray, Alignment]:
  """EG3D's in-the-wild crop of ``image`` given its five landmarks.

  Args:
    image: uint8 [H, W, 3] or PIL RGB image.
    landmarks: [5, 2] (x, y) pixels (left eye, right eye, nose, mouth left, mouth right).
    output_size: side of the crop (EG3D: 512).
  Returns:
    (crop uint8 [S, S, 3], :class:`Alignment`).
  """
  if isinstance(image, Image.Image):
    width, height = image.size
  else:
    height, width = np.asarray(image).shape[:2]
  if output_size < 1:
    raise ValueError(f"output_size: must be positive, got {output_size}")
  al = alignment_for(landmarks, width, height, output_size)
  return crop(image, al), al


def mirror(crop_image: np.ndarray) -> np.ndarray:
  """Left-right mirror of a crop (pair it with ``pose.mirror_label``)."""
  return np.ascontiguousarray(np.asarray(crop_image)[:, ::-1])
