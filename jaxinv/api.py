"""Public entry points: input validation at the boundary, then one jit per entry point.

Conventions (checked here): images float32 NHWC in [-1, 1] (uint8 [H,W,3]/[B,H,W,3] and PIL images
are accepted and converted explicitly); camera labels ``c: [B, 25]`` = flattened 4x4 cam2world
(OpenCV axes, world y-up) + flattened 3x3 normalized intrinsics.
"""
from __future__ import annotations


def preprocess(image, *, output_size: int = 512, min_confidence: float = 0.9,
               include_roll: bool = True, refine=None, weights_path=None, return_info: bool = False,
               stabilize: bool = True):
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
    stabilize: refine the detector's landmarks (O-Net averaged over shifted boxes at its own
      fixed point) so that the crop and the pose do not change with the file's encoding
      (PNG / JPEG / a resize: spread 0.15 instead of 5.5 degrees on fixtures/faces, ~0.08 s
      more CPU per photo). ``False`` keeps the landmarks exactly as EG3D's MTCNN gives them.
  Returns:
    ``(crop uint8 [S, S, 3], c float32 [25])`` (plus ``info`` when ``return_info``).
  Raises:
    jaxinv.preprocess.mtcnn.NoFaceError: no face found (a ``ValueError``).
  """
  from jaxinv.preprocess import pipeline
  return pipeline.preprocess(image, output_size=output_size, min_confidence=min_confidence,
                             include_roll=include_roll, refine=refine, weights_path=weights_path,
                             return_info=return_info, stabilize=stabilize)


def load_encoder(path, encoder_type: str | None = None):
  """A released (or converted) image encoder, read without torch and without running the file.

  Recognises pSp / e4e / PREIM3D training checkpoints (``.pt``: ``state_dict`` with ``encoder.*``,
  ``latent_avg``, ``opts``), TriPlaneNet checkpoints (``psp_encoder.*`` + ``triplanenet_encoder.*``)
  and the native ``.npz`` files ``jaxinv.convert.psp`` / ``jaxinv.convert.triplanenet`` /
  ``jaxinv.inversion.nerf3de.save`` write (jaxinv's trained runs: ``jaxinv.train.export``).

  Args:
    path: checkpoint file.
    encoder_type: for pSp-family files, overrides ``opts['encoder_type']`` (``psp``, ``e4e``,
      ``preim3d_wplus``).
  Returns:
    pSp family: ``EncoderCheckpoint(encoder_type, model, variables, latent_avg, opts)``, used as
    ``ws = model.apply(variables, x) + latent_avg`` with ``x [B, 256, 256, 3]`` in [-1, 1].
    TriPlaneNet: ``TriPlaneNetCheckpoint`` (both encoders; see ``jaxinv.inversion.triplanenet``).
    NeRF-3DE: ``(NeRF3DE, params)`` (``jaxinv.inversion.nerf3de.invert``).
  """
  from jaxinv.convert import common
  from jaxinv.convert import psp as psp_convert
  from jaxinv.convert import torchfile
  from jaxinv.convert import triplanenet as tpn_convert
  if common.is_native(path):
    kind = common.load_native(path)[0]
    if kind == psp_convert.NATIVE_KIND:
      return psp_convert.load_native_encoder(path)
    if kind == tpn_convert.NATIVE_KIND:
      return tpn_convert.load_native(path)
    if kind == "nerf3de":
      from jaxinv.inversion import nerf3de
      return nerf3de.load(path)
    if kind in ("goae_encoder", "goae_afa"):
      raise ValueError(f"{path}: a GOAE {kind!r} file; GOAE needs its encoder and AFA together: "
                       "jaxinv.inversion.goae.load_goae(encoder_path, afa_path)")
    raise ValueError(f"{path}: a native {kind!r} file, not a pSp-family, TriPlaneNet or NeRF-3DE "
                     "encoder")
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

  ``path="toy"``: the built-in generator of the procedural world (``jaxinv.data.world``), shipped in
  ``jaxinv/assets/toy_eg3d.npz`` (its manifest ``toy_eg3d.json`` says how it was trained and what it
  measures on held-out scenes): ``G(z, c)["image"]`` approximates ``world.render(z, c, 128)``.
  """
  from jaxinv.convert import eg3d as eg3d_convert
  init_kwargs = config_overrides.pop("init_kwargs", None)
  return eg3d_convert.load(path, init_kwargs, **config_overrides)


def invert(image, pose=None, *, method: str = "goae", weights=None, key=None, **options):
  """Inverts photos into an EG3D generator: one call from an image to a 3D result.

  Args:
    image: a path, a PIL image, uint8 ``[H, W, 3]`` / ``[B, H, W, 3]``, float NHWC in [-1, 1]
      (``[H, W, 3]`` / ``[B, H, W, 3]``), or a list of paths / PIL images / uint8 arrays.
      Resized to the generator's output size (bilinear, antialiased); each network then pools it
      to its own input size.
    pose: None runs :func:`preprocess` on every image (face photos: crop + camera; needs
      ``jaxinv[faces]``); else the images are crops and ``pose`` is their camera: ``c [25]``
      (shared), ``[B, 25]`` or a :class:`jaxinv.Camera`.
    method: encoders ``"psp" | "e4e" | "preim3d" | "triplanenet" | "goae" | "nerf3de"``, or the
      optimisation baselines ``"w" | "wplus" | "pti" | "triplane_opt"`` (see
      ``jaxinv.inversion.optimize`` for their defaults, all overridable via ``options``), or
      ``"zignerf"``: ZIGNeRF's compositional GIRAFFE generator (not EG3D) and its inverter; it
      returns a ``jaxinv.inversion.zignerf.ZIGNeRFInversion`` (``render(rotation=...)`` over the
      full circle, ``swap_background``, ``swap_object``, ``mix``, ``move``, ``video``); its
      ``pose=None`` means the inverter's pose head, not face detection, and ``weights`` are
      ``generator`` + ``encoder`` (its inverter), None = the built-in world models.
    weights: None (the built-in toy-world generator ``load_generator("toy")``; for ``psp``,
      ``e4e`` and ``preim3d`` also its built-in toy encoder ``jaxinv/assets/toy_<method>.npz``),
      or a dict /
      ``jaxinv.inversion.invert.Weights`` with ``generator``, ``encoder``, ``afa`` (GOAE),
      ``lpips`` (optimisation baselines), each a file path or an already-loaded object.
    key: ``jax.random`` key for stochastic parts (optimisation noise, renderer draws).
    **options: per-method options, e.g. ``steps=``, ``lr=`` (``w``/``wplus``), ``pivot=``,
      ``pivot_steps=``, ``steps=`` (``pti``), ``start=``, ``steps=`` (``triplane_opt``),
      ``iterations=`` (``nerf3de``). Unknown options are an error.
  Returns:
    :class:`jaxinv.Inversion` (``render``, ``depth``, ``mesh``, ``save_mesh``, ``video``, ``edit``).
  """
  from jaxinv.inversion import invert as _invert
  _invert.check_method(method)
  if method == "zignerf":
    return _invert.invert_zignerf(image, pose, weights, options)
  w = _load_weights(_invert.Weights.coerce(weights), method)
  return _invert.invert(image, pose, method=method, weights=w, key=key, **options)


def _existing(path, what):
  import os
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what}: no such file: {os.fspath(path)}")
  if os.path.isdir(path):
    raise IsADirectoryError(f"{what}: {os.fspath(path)} is a folder, expected a file")
  return path


def _load_weights(w, method: str):
  """Files named in ``w`` -> loaded objects (generator, encoder, GOAE encoder + AFA)."""
  import dataclasses
  import os
  changes = {}
  if w.generator is None and w.encoder is None:
    # The built-in toy-world encoder of this method, when one ships (jaxinv/assets/toy_<m>.npz).
    from jaxinv.convert.psp import toy_encoder_path
    builtin = toy_encoder_path(method)
    if builtin is not None and method == "goae":
      from jaxinv.inversion import goae
      changes["encoder"] = goae.load_goae(*builtin)
    elif builtin is not None:
      changes["encoder"] = load_encoder(builtin)
  if w.generator is None:
    try:
      changes["generator"] = load_generator("toy")
    except Exception as e:  # the built-in toy models ship with jaxinv.assets
      raise ValueError("weights=None means the built-in toy-world generator, which this install "
                       f"cannot load ({type(e).__name__}: {e}); pass weights=dict(generator="
                       "'ffhq512-128.pkl' (or an EG3DGenerator), encoder=..., ...)") from e
  elif isinstance(w.generator, (str, os.PathLike)):
    changes["generator"] = load_generator(_existing(w.generator, "weights.generator"))
  enc = w.encoder
  if isinstance(enc, (str, os.PathLike)):
    _existing(enc, "weights.encoder")
    if method == "goae" or (method in ("pti", "triplane_opt") and w.afa is not None):
      from jaxinv.inversion import goae
      if w.afa is None:
        raise ValueError("method='goae' needs weights.afa (GOAE's afa_FFHQ.pt) with weights.encoder")
      changes["encoder"] = goae.load_goae(enc, _existing(w.afa, "weights.afa"))
    else:
      changes["encoder"] = load_encoder(enc, "preim3d_wplus" if method == "preim3d" else None)
  return dataclasses.replace(w, **changes) if changes else w
