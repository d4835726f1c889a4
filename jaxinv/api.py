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


def load_encoder(path, encoder_type: str | None = None):
  """A released (or converted) image encoder, read without torch and without running the file.

  Recognises pSp / e4e / PREIM3D training checkpoints (``.pt``: ``state_dict`` with ``encoder.*``,
  ``latent_avg``, ``opts``), TriPlaneNet checkpoints (``psp_encoder.*`` + ``triplanenet_encoder.*``)
  and the native ``.npz`` files ``jaxinv.convert.psp`` / ``jaxinv.convert.triplanenet`` write.

  Args:
    path: checkpoint file.
    encoder_type: for pSp-family files, overrides ``opts['encoder_type']`` (``psp``, ``e4e``,
      ``preim3d_wplus``).
  Returns:
    pSp family: ``EncoderCheckpoint(encoder_type, model, variables, latent_avg, opts)``, used as
    ``ws = model.apply(variables, x) + latent_avg`` with ``x [B, 256, 256, 3]`` in [-1, 1].
    TriPlaneNet: ``TriPlaneNetCheckpoint`` (both encoders; see ``jaxinv.inversion.triplanenet``).
  """
  from jaxinv.convert import common
  from jaxinv.convert import psp as psp_convert
  from jaxinv.convert import torchfile
  from jaxinv.convert import triplanenet as tpn_convert
  if common.is_native(path):
    kind = common.load_native(path)[0]
    if kind == psp_convert.NATIVE_KIND:
      return psp_convert.load_native_encoder(path)
    if kind in ("goae_encoder", "goae_afa"):
      raise ValueError(f"{path}: a GOAE {kind!r} file; GOAE needs its encoder and AFA together: "
                       "jaxinv.inversion.goae.load_goae(encoder_path, afa_path)")
    raise ValueError(f"{path}: a native {kind!r} file, not a pSp-family encoder "
                     "(TriPlaneNet native files: jaxinv.convert.triplanenet.load_native)")
  ck = torchfile.load(path)
  if isinstance(ck, dict) and any(str(k).endswith("swin_model.patch_embed.proj.weight") or
                                  str(k).endswith("cross_att_gamma.multihead_attn.in_proj_weight")
                                  for k in ck):
    raise ValueError(f"{path}: a GOAE encoder/AFA state dict; GOAE needs both files together: "
                     "jaxinv.inversion.goae.load_goae(encoder_path, afa_path)")
  sd = ck.get("state_dict", {}) if isinstance(ck, dict) else {}
  if any(k.startswith("triplanenet_encoder.") for k in sd):
    return tpn_convert.load_checkpoint(ck)
  return psp_convert.load_checkpoint(ck, encoder_type)


def load_generator(path, **config_overrides):
  """An EG3D generator from a native ``.npz``, a network ``.pkl`` or a ``.pt``/``.npz`` state dict.

  State dicts need ``init_kwargs=...`` (the ``TriPlaneGenerator`` constructor kwargs); other keyword
  arguments override :class:`jaxinv.models.eg3d.EG3DConfig` fields (e.g. ``inplace_image_raw=False``).
  Nothing in the file is executed and torch is not needed.
  """
  from jaxinv.convert import eg3d as eg3d_convert
  init_kwargs = config_overrides.pop("init_kwargs", None)
  return eg3d_convert.load(path, init_kwargs, **config_overrides)
