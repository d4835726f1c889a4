"""Public entry points: input validation at the boundary, then one jit per entry point.

Conventions (checked here): images float32 NHWC in [-1, 1] (uint8 [H,W,3]/[B,H,W,3] and PIL images
are accepted and converted explicitly); camera labels ``c: [B, 25]`` = flattened 4x4 cam2world
(OpenCV axes, world y-up) + flattened 3x3 normalized intrinsics.
"""
from __future__ import annotations


def preprocess(image, *, output_size: int = 512, min_confidence: float = 0.9,
               include_roll: bool = True, refine=None, weights_path=None, return_info: bool = False):
  """Photo in: the EG3D-aligned face crop and its 25-number camera label.

  Detects faces with MTCNN (weights from the ``mtcnn`` wheel: ``pip install "jaxinv[faces]"``),
  keeps the largest one above ``min_confidence``, crops it as EG3D's in-the-wild preprocessing
  does, and estimates the camera from its five landmarks (see ``jaxinv.preprocess.pose``).

  Args:
    image: a file path, a PIL image, or a uint8 (or uint16) array [H, W], [H, W, 1|3|4] of any
      size. Grayscale is replicated, alpha dropped, 16-bit scaled to 8-bit; floats are refused.
    output_size: side S of the crop (EG3D: 512).
    min_confidence: detector confidence a face needs (EG3D's batch_mtcnn.py: 0.9).
    include_roll: keep the head's roll in the label (as the official labels do).
    refine: optional hook ``c [25] -> c [25]`` for a render-based refinement of the camera.
    weights_path: folder with MTCNN's ``pnet.lz4``, ``rnet.lz4``, ``onet.lz4`` (default: the
      installed ``mtcnn`` package's, found without importing it).
    return_info: also return a ``FaceInfo`` (box, landmarks, confidence, number of faces,
      yaw/pitch/roll in radians, fit error, alignment).
  Returns:
    ``(crop uint8 [S, S, 3], c float32 [25])`` (plus ``info`` when ``return_info``).
  Raises:
    jaxinv.preprocess.mtcnn.NoFaceError: no face found (a ``ValueError``).
  """
  from jaxinv.preprocess import pipeline
  return pipeline.preprocess(image, output_size=output_size, min_confidence=min_confidence,
                             include_roll=include_roll, refine=refine, weights_path=weights_path,
                             return_info=return_info)
