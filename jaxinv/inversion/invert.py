"""``jaxinv.invert``: one call from images (and cameras) to an :class:`Inversion`, for every method.

Input handling (all checked here, errors name the argument):
- ``image``: a path, a PIL image, uint8 ``[H, W, 3]`` / ``[B, H, W, 3]``, float NHWC in [-1, 1]
  (``[H, W, 3]`` or ``[B, H, W, 3]``), or a list of paths / PIL images / uint8 arrays.
- ``pose``: None runs ``jaxinv.preprocess`` on each image (face photos: detection, EG3D crop and
  camera; needs ``jaxinv[faces]``); else ``c [25]`` / ``[B, 25]`` or a ``jaxinv.Camera``, and
  the images are taken as crops already.
- images are resized (bilinear, antialiased) to the generator's output size; each network then
  pools them to what it reads (pSp family and TriPlaneNet 256^2, GOAE's Swin its ``img_size``,
  NeRF-3DE its ``input_size``).

``weights``: a :class:`Weights` (or a dict with its field names) naming files or holding loaded
objects, or None for the built-in toy-world generator (``jaxinv.load_generator("toy")``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.inversion import optimize as opt
from jaxinv.inversion.result import Inversion, camera_label

ENCODER_METHODS = ("psp", "e4e", "preim3d", "triplanenet", "goae", "nerf3de")
OPTIMIZATION_METHODS = ("w", "wplus", "pti", "triplane_opt")
INVERT_METHODS = ENCODER_METHODS + OPTIMIZATION_METHODS      # the EG3D methods
ALL_METHODS = INVERT_METHODS + ("zignerf",)                  # + the GIRAFFE one
PSP_RESOLUTION = 256


@dataclasses.dataclass(frozen=True)
class Weights:
  """The networks ``invert`` uses: file paths or already-loaded objects.

  Attributes:
    generator: EG3D ``.pkl`` / native ``.npz`` / state dict path, or an ``EG3DGenerator``.
    encoder: the method's encoder: a pSp / e4e / PREIM3D / TriPlaneNet checkpoint path (or what
      ``jaxinv.load_encoder`` returns); GOAE's ``encoder_FFHQ.pt`` (or a loaded
      ``jaxinv.inversion.goae.GOAE``, then ``afa`` is not needed); NeRF-3DE: a
      ``(NeRF3DE, params)`` pair. For ``pti`` / ``triplane_opt`` an encoder can provide the pivot.
    afa: GOAE's ``afa_FFHQ.pt`` (or converted ``.npz``).
    lpips: native LPIPS ``.npz`` from ``jaxinv convert lpips``, or ``(net, variables)``; used by
      the optimisation baselines (without it they optimise L2 only).
    arcface: accepted for symmetry with training configs; no inversion method reads it.
  """
  generator: Any = None
  encoder: Any = None
  afa: Any = None
  lpips: Any = None
  arcface: Any = None

  @classmethod
  def coerce(cls, weights) -> "Weights":
    if weights is None:
      return cls()
    if isinstance(weights, cls):
      return weights
    if isinstance(weights, dict):
      names = {f.name for f in dataclasses.fields(cls)}
      unknown = sorted(set(weights) - names)
      if unknown:
        raise TypeError(f"weights: unknown key(s) {unknown}; known: {sorted(names)}")
      return cls(**weights)
    raise TypeError(f"weights: expected None, a dict or jaxinv.inversion.invert.Weights, got "
                    f"{type(weights).__name__}")


# ------------------------------------------------------------------------------------ images

def _is_pil(x) -> bool:
  return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _read(x, name: str) -> np.ndarray:
  """One image (path / PIL / array) -> uint8 [H, W, 3] or float [H, W, 3]."""
  if isinstance(x, (str, os.PathLike)):
    path = os.fspath(x)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{name}: no such file: {path}")
    from PIL import Image, UnidentifiedImageError
    try:
      with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
      raise ValueError(f"{name}: {path} is not an image file PIL can read") from None
  if _is_pil(x):
    return np.asarray(x.convert("RGB"))
  raise TypeError(f"{name}: expected a path, a PIL image or an array, got {type(x).__name__}")


def _to_batch(image, name: str = "image") -> tuple[np.ndarray | jax.Array, list]:
  """-> (float32 [B, H, W, 3] in [-1, 1] or a list of uint8 [H, W, 3] of mixed sizes, sources)."""
  if isinstance(image, (list, tuple)):
    if not image:
      raise ValueError(f"{name}: empty list")
    arrs = []
    for i, x in enumerate(image):
      a = np.asarray(x) if hasattr(x, "shape") else _read(x, f"{name}[{i}]")
      if a.dtype != np.uint8:
        raise TypeError(f"{name}[{i}]: lists take paths, PIL images or uint8 [H, W, 3] arrays; "
                        f"pass float images as one [B, H, W, 3] array")
      checks.check_shape(a, f"{name}[{i}]", (None, None, 3), "uint8 [H, W, 3]")
      arrs.append(a)
    return arrs, list(image)
  if not hasattr(image, "shape"):
    return [_read(image, name)], [image]
  a = image
  if a.ndim == 3:
    a = a[None]
  if a.ndim != 4:
    raise ValueError(f"{name}: expected [H, W, 3] or [B, H, W, 3], got shape {tuple(image.shape)}")
  if a.dtype == np.uint8:
    checks.check_shape(a, name, (None, None, None, 3), "uint8 [B, H, W, 3]")
    return [np.asarray(x) for x in a], [None] * a.shape[0]
  if not np.issubdtype(np.dtype(a.dtype), np.floating):
    raise TypeError(f"{name}: expected uint8 or float images, got dtype {a.dtype}")
  checks.check_image(a, name)
  return jnp.asarray(a, jnp.float32), [None] * a.shape[0]


def _uint8_to_float(a: np.ndarray) -> jnp.ndarray:
  return jnp.asarray(a, jnp.float32) / 127.5 - 1.0


def _resize(x: jnp.ndarray, size: int, name: str) -> jnp.ndarray:
  if x.shape[1] != x.shape[2]:
    raise ValueError(f"{name}: expected square crops, got {x.shape[1]}x{x.shape[2]} (crop photos "
                     "with jaxinv.preprocess, or pass pose=None to have invert do it)")
  if x.shape[1] == size:
    return x
  from jaxinv.ops.interpolate import resize_bilinear
  return jnp.clip(resize_bilinear(x, (size, size), antialias=x.shape[1] > size), -1.0, 1.0)


def prepare(image, pose, size: int):
  """``(images [B, size, size, 3] float in [-1, 1], c [B, 25], crops uint8 or None)``."""
  batch, _ = _to_batch(image)
  crops = None
  if pose is None:
    from jaxinv.preprocess.pipeline import preprocess
    if not isinstance(batch, list):  # float input: back to uint8 for the face detector
      batch = [np.asarray(np.clip(np.rint((np.asarray(x) + 1) * 127.5), 0, 255), np.uint8)
               for x in batch]
    crops, cs = [], []
    for i, a in enumerate(batch):
      try:
        crop, c = preprocess(a, output_size=size)
      except ImportError as e:
        raise ImportError(f"pose=None runs jaxinv.preprocess (face photos), which needs "
                          f"'pip install jaxinv[faces]'; or pass pose= (c [25] / [B, 25] / "
                          f"jaxinv.Camera): {e}") from e
      crops.append(crop)
      cs.append(np.asarray(c, np.float32))
    x = _uint8_to_float(np.stack(crops))
    c = jnp.asarray(np.stack(cs))
    crops = np.stack(crops)
  else:
    if isinstance(batch, list):
      sizes = {a.shape[:2] for a in batch}
      if len(sizes) > 1:
        batch = [np.asarray(_resize(_uint8_to_float(a)[None], size, "image")[0]) for a in batch]
        x = jnp.asarray(np.stack(batch))
      else:
        x = _uint8_to_float(np.stack(batch))
    else:
      x = batch
    c = camera_label(pose, x.shape[0], "pose")
  return _resize(x, size, "image"), c, crops


# ------------------------------------------------------------------------------------ weights

def _generator(w: Weights):
  from jaxinv.models.eg3d import EG3DGenerator
  g = w.generator
  if isinstance(g, EG3DGenerator):
    return g
  if g is None:
    raise ValueError("weights: no generator; pass weights=dict(generator='ffhq512-128.pkl' or an "
                     "EG3DGenerator, encoder=..., ...) (jaxinv.invert with weights=None uses the "
                     "built-in toy-world generator)")
  raise TypeError(f"weights.generator: expected an EG3DGenerator here (jaxinv.invert loads files), "
                  f"got {type(g).__name__}")


def _lpips(w: Weights):
  lp = w.lpips
  if lp is None:
    return None, "alex"
  if isinstance(lp, (str, os.PathLike)):
    from jaxinv.convert.lpips import load_native_lpips
    if not os.path.exists(lp):
      raise FileNotFoundError(f"weights.lpips: no such file: {os.fspath(lp)}")
    net, variables = load_native_lpips(lp)
    return variables, net
  if isinstance(lp, tuple) and len(lp) == 2 and isinstance(lp[0], str):
    return lp[1], lp[0]
  if isinstance(lp, dict) and "params" in lp:
    return lp, "alex"
  raise TypeError("weights.lpips: expected a native LPIPS .npz path, (net, variables) or "
                  f"AlexNet-LPIPS variables {{'params': ...}}, got {type(lp).__name__}")


def _need_encoder(w: Weights, method: str):
  if w.encoder is None:
    extra = ", afa=..." if method == "goae" else ""
    raise ValueError(f"method={method!r} needs its encoder: weights=dict(generator=..., "
                     f"encoder=...{extra}) (released or converted files, or loaded objects)")
  return w.encoder


def _psp_encoder(w: Weights, method: str):
  enc = _need_encoder(w, method)
  for attr in ("model", "variables"):
    if not hasattr(enc, attr):
      raise TypeError(f"weights.encoder: method={method!r} takes a pSp-family checkpoint (path or "
                      f"jaxinv.load_encoder's EncoderCheckpoint), got {type(enc).__name__}")
  return enc


def _encode_fn_cache():
  cache = {}

  def get(model):
    if model not in cache:
      cache[model] = jax.jit(lambda v, x: model.apply(v, x))
    return cache[model]
  return get


_encode_with = _encode_fn_cache()


def _latent_avg(enc_latent_avg, G, n_styles):
  if enc_latent_avg is None:
    return jnp.broadcast_to(G.params["params"]["backbone"]["mapping"]["w_avg"], (n_styles, 512))
  return jnp.asarray(enc_latent_avg, jnp.float32)


def _check_codes(ws, G, what):
  if tuple(ws.shape[1:]) != (G.num_ws, G.config.w_dim):
    raise ValueError(f"{what} predicts codes [B, {ws.shape[1]}, {ws.shape[2]}], but the generator "
                     f"takes [B, {G.num_ws}, {G.config.w_dim}]")


def _pool(x, size):
  from jaxinv.inversion.triplanenet import pool_to_encoder
  if x.shape[1] < size:  # small generators (tests, toy): nearest upsampling by the adaptive pool
    from jaxinv.ops.interpolate import resize_bilinear
    return resize_bilinear(x, (size, size))
  return pool_to_encoder(x, size)


# ------------------------------------------------------------------------------------ methods

def _run_psp(G, w, method, x, c, key, options):
  _no_options(options, method)
  enc = _psp_encoder(w, method)
  codes = _encode_with(enc.model)(enc.variables,
                                  _pool(x, int(getattr(enc.model, "input_size", PSP_RESOLUTION))))
  ws = codes + _latent_avg(enc.latent_avg, G, codes.shape[1])
  _check_codes(ws, G, f"the {method} encoder")
  return Inversion(G, ws, c, method, target=x)


def _run_triplanenet(G, w, x, c, key, options):
  _no_options(options, "triplanenet")
  from jaxinv.inversion import triplanenet as tpn
  enc = _need_encoder(w, "triplanenet")
  if not hasattr(enc, "triplane_model"):
    raise TypeError("weights.encoder: method='triplanenet' takes a TriPlaneNet checkpoint (path or "
                    f"jaxinv.load_encoder's TriPlaneNetCheckpoint), got {type(enc).__name__}")
  n = int(getattr(enc.psp_model, "n_styles", G.num_ws))
  latent_avg = _latent_avg(getattr(enc, "latent_avg", None), G, n)
  params = {"psp": enc.psp_variables, "triplane": enc.triplane_variables, "latent_avg": latent_avg}
  fwd = _tpn_forward(enc.psp_model, enc.triplane_model)
  out = fwd(G, params, _pool(x, tpn.encoder_resolution(enc.psp_model)), c)
  _check_codes(out["ws"], G, "the TriPlaneNet pSp encoder")
  return Inversion(G, out["ws"], c, "triplanenet", offsets=out["offsets"], target=x)


_TPN_CACHE = {}


def _tpn_forward(psp_model, triplane_model):
  k = (psp_model, triplane_model)
  if k not in _TPN_CACHE:
    from jaxinv.inversion import triplanenet as tpn
    _TPN_CACHE[k] = jax.jit(lambda G, p, x, c: tpn.forward(G, psp_model, triplane_model, p, x, c))
  return _TPN_CACHE[k]


def _run_goae(G, w, x, c, key, options):
  _no_options(options, "goae")
  from jaxinv.inversion import goae as gi
  enc = _need_encoder(w, "goae")
  if not isinstance(enc, gi.GOAE):
    if w.afa is None:
      raise ValueError("method='goae' needs weights.afa (GOAE's afa_FFHQ.pt) with weights.encoder")
    enc = gi.load_goae(enc, w.afa)
  out = gi.invert(enc, G, x, c, key=key)
  return Inversion(G, out["ws"], c, "goae", planes=out["planes"],
                   extra={"feature_map_adain": out["feature_map_adain"]}, target=x)


def _run_nerf3de(G, w, x, c, key, options):
  iterations = int(options.pop("iterations", 1))
  _no_options(options, "nerf3de")
  from jaxinv.inversion import nerf3de as n3
  enc = _need_encoder(w, "nerf3de")
  if isinstance(enc, dict):
    enc = (enc.get("model"), enc.get("params"))
  if not (isinstance(enc, tuple) and len(enc) == 2 and isinstance(enc[0], n3.NeRF3DE)):
    raise TypeError("weights.encoder: method='nerf3de' takes (NeRF3DE, params), got "
                    f"{type(enc).__name__}")
  model, params = enc
  out = _nerf3de_fn(model, iterations)(params, G, x, c)
  _check_codes(out["ws"], G, "the NeRF-3DE encoder")
  return Inversion(G, out["ws"], c, "nerf3de", target=x)


_N3_CACHE = {}


def _nerf3de_fn(model, iterations):
  k = (model, iterations)
  if k not in _N3_CACHE:
    from jaxinv.inversion import nerf3de as n3
    _N3_CACHE[k] = jax.jit(lambda p, G, x, c: n3.invert(model, p, G, x, c, iterations))
  return _N3_CACHE[k]


def _no_options(options, method):
  if options:
    raise TypeError(f"method={method!r}: unknown option(s) {sorted(options)}")


def _split(options, cls, method, extra=()):
  names = {f.name for f in dataclasses.fields(cls)} | set(extra)
  unknown = sorted(set(options) - names)
  if unknown:
    raise TypeError(f"method={method!r}: unknown option(s) {unknown}; known: {sorted(names)}")
  return cls(**{k: v for k, v in options.items() if k not in extra}), \
      {k: options[k] for k in extra if k in options}


def _start_codes(G, w, start, x, c, key, what, lpips, project_options):
  """Codes to start from: an array, an encoder method's result, or a W / W+ projection."""
  if hasattr(start, "shape"):
    ws = jnp.asarray(start, jnp.float32)
    checks.check_shape(ws, what, (x.shape[0], G.num_ws, G.config.w_dim), "[B, num_ws, 512]")
    return ws, None
  if start in ("w", "wplus"):
    ws, _ = opt.project(G, x, c, mode=start, key=key, lpips_params=lpips[0], lpips_net=lpips[1],
                        options=project_options)
    return ws, None
  if start in ENCODER_METHODS:
    inv = invert_prepared(G, w, start, x, c, key, {})
    return inv.ws, inv
  raise ValueError(f"{what}: expected 'w', 'wplus', an encoder method {ENCODER_METHODS} or codes "
                   f"[B, num_ws, 512], got {start!r}")


def _run_optimization(G, w, method, x, c, key, options):
  lpips = _lpips(w)
  key = jax.random.PRNGKey(0) if key is None else key
  k1, k2 = jax.random.split(key)
  extra = {"lpips": lpips[0] is not None}
  if method in ("w", "wplus"):
    po, _ = _split(options, opt.ProjectOptions, method)
    ws, curve = opt.project(G, x, c, mode=method, key=k1, lpips_params=lpips[0],
                            lpips_net=lpips[1], options=po)
    return Inversion(G, ws, c, method, extra=dict(extra, loss=curve[..., 0]), target=x)
  if method == "pti":
    po, rest = _split(options, opt.PTIOptions, method, extra=("pivot", "num_w_samples"))
    pivot = rest.get("pivot", "w")
    proj = opt.ProjectOptions(steps=po.pivot_steps, lr=po.pivot_lr,
                              num_w_samples=rest.get("num_w_samples", 10000))
    ws, _ = _start_codes(G, w, pivot, x, c, k1, "pivot", lpips, proj)
    tuned, curve = opt.pti_tune(G, x, c, ws, key=k2, lpips_params=lpips[0], lpips_net=lpips[1],
                                options=po)
    return Inversion(tuned, ws, c, "pti", extra=dict(extra, loss=curve[:, 0]), target=x)
  if method == "triplane_opt":
    po, rest = _split(options, opt.TriPlaneOptOptions, method,
                      extra=("start", "start_steps", "num_w_samples"))
    default = "triplanenet" if hasattr(w.encoder, "triplane_model") else "w"
    proj = opt.ProjectOptions(steps=rest.get("start_steps", 1000),
                              num_w_samples=rest.get("num_w_samples", 10000))
    ws, inv0 = _start_codes(G, w, rest.get("start", default), x, c, k1, "start", lpips, proj)
    offsets = None if inv0 is None else inv0.offsets
    offsets, curve = opt.triplane_optimize(G, x, c, ws, offsets, lpips_params=lpips[0],
                                           lpips_net=lpips[1], options=po)
    return Inversion(G, ws, c, "triplane_opt", offsets=offsets,
                     extra=dict(extra, loss=curve), target=x)
  raise AssertionError(method)


def invert_prepared(G, w: Weights, method: str, x, c, key, options) -> Inversion:
  """``invert`` on checked inputs: ``x [B, S, S, 3]`` at G's size, ``c [B, 25]``."""
  options = dict(options)
  if method in ("psp", "e4e", "preim3d"):
    return _run_psp(G, w, method, x, c, key, options)
  if method == "triplanenet":
    return _run_triplanenet(G, w, x, c, key, options)
  if method == "goae":
    return _run_goae(G, w, x, c, key, options)
  if method == "nerf3de":
    return _run_nerf3de(G, w, x, c, key, options)
  return _run_optimization(G, w, method, x, c, key, options)


def check_method(method) -> None:
  if not isinstance(method, str) or method not in ALL_METHODS:
    raise ValueError(f"method: expected one of {', '.join(ALL_METHODS)}; got {method!r}")


def invert_zignerf(image, pose, weights, options):
  """``jaxinv.invert(..., method="zignerf")``: a :class:`jaxinv.inversion.zignerf.ZIGNeRFInversion`.

  ``weights``: None (the built-in world models) or ``generator`` (a ZIGNeRF generator ``.npz`` /
  ``Giraffe``) and ``encoder`` (its inverter ``.npz`` / ``Inverter``). ``pose``: None = the
  inverter's pose head (no face detection: these are world models), else cameras ``c`` read as
  (turn, pitch). Options: ``search`` (turns to try, see ``jaxinv.inversion.zignerf``).
  """
  from jaxinv.inversion import zignerf as zi
  from jaxinv.models import giraffe as gm
  w = Weights.coerce(weights)
  extra = sorted(k for k in ("afa", "lpips", "arcface") if getattr(w, k) is not None)
  if extra:
    raise TypeError(f"weights: zignerf reads only generator and encoder, got {extra}")
  unknown = sorted(set(options) - {"search"})
  if unknown:
    raise TypeError(f"unknown option(s) {unknown} for method 'zignerf'; known: ['search']")
  if w.generator is None and w.encoder is None:
    try:
      G, inverter = zi.load_toy()
    except (OSError, ValueError) as e:
      raise ValueError(f"weights=None means the built-in ZIGNeRF world models, which this install "
                       f"cannot load ({e}); pass weights=dict(generator=..., encoder=...)") from e
  else:
    if w.generator is None or w.encoder is None:
      raise ValueError("weights: zignerf needs both generator (the GIRAFFE .npz) and encoder (its "
                       "inverter .npz)")
    G = w.generator if isinstance(w.generator, gm.Giraffe) else gm.load(_file(w.generator,
                                                                              "weights.generator"))
    if isinstance(w.encoder, zi.Inverter):
      inverter = w.encoder
    else:
      inverter, gcfg = zi.load_inverter(_file(w.encoder, "weights.encoder"))
      if gcfg != G.config:
        raise ValueError("weights.encoder: this inverter was trained for another generator config")
  batch, _ = _to_batch(image)
  r = G.config.img_resolution
  if isinstance(batch, list):
    x = jnp.asarray(np.stack([np.asarray(_resize(_uint8_to_float(a)[None], r, "image")[0])
                              for a in batch]))
  else:
    x = _resize(batch, r, "image")
  c = None if pose is None else camera_label(pose, x.shape[0], "pose")
  return zi.invert(G, inverter, x, c, search=options.get("search", 0))


def _file(path, what):
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"{what}: expected a file path, got {type(path).__name__}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what}: no such file: {os.fspath(path)}")
  return os.fspath(path)


def invert(image, pose=None, *, method: str = "goae", weights=None, key=None,
           **options) -> Inversion:
  """``jaxinv.invert`` with loaded networks in ``weights`` (``jaxinv.api.invert`` loads files)."""
  check_method(method)
  if method == "zignerf":
    return invert_zignerf(image, pose, weights, options)
  if key is not None and not (hasattr(key, "dtype") and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                                         or np.shape(key) == (2,))):
    raise TypeError(f"key: expected a jax.random key (e.g. jax.random.PRNGKey(0)), got {key!r}")
  w = Weights.coerce(weights)
  G = _generator(w)
  x, c, _ = prepare(image, pose, G.config.img_resolution)
  return invert_prepared(G, w, method, x, c, key, options)

