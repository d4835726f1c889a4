"""MTCNN face detector (P-Net, R-Net, O-Net) in JAX, with the pretrained weights of the `mtcnn` wheel.

This is the detector EG3D's ``batch_mtcnn.py`` runs (the ``mtcnn`` package, version 1.x pipeline):
an image pyramid scanned by P-Net, candidate boxes refined by R-Net on 24x24 patches and by O-Net
on 48x48 patches, which also gives five landmarks. Thresholds, NMS rules and box arithmetic follow
that package so that boxes and landmarks agree with it to float rounding.

Weights: the ``mtcnn`` wheel ships them in ``mtcnn/assets/weights/{pnet,rnet,onet}.lz4`` (joblib
pickles compressed with LZ4). ``pip install mtcnn`` brings them with ``joblib`` and ``lz4`` only;
TensorFlow is an optional extra of that wheel and is never needed here. We locate the files without
importing the package (its ``__init__`` imports TensorFlow) and read them with an allow-listed
unpickler that executes nothing from the file.

``refine_landmarks`` is our addition (not in the reference): O-Net re-run on shifted boxes of an
anti-aliased photo until its box regression settles, so that the landmarks, and the camera pose
read from them, do not change with the file's encoding; ``jaxinv.preprocess`` uses it by default.

Pixel conventions: images are uint8 RGB ``[H, W, 3]``; box coordinates ``(x1, y1, x2, y2)`` and
landmarks ``(x, y)`` are in pixels of that image, in the detector's own convention (no half-pixel
shift). Landmarks are ordered left eye, right eye, nose, mouth left, mouth right, "left" meaning
the image's left (smaller x), as ``batch_mtcnn.py`` writes them.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import pathlib
import pickle
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
PIP_HINT = 'pip install "jaxinv[faces]"   (or just: pip install mtcnn lz4; TensorFlow is not needed)'


class NoFaceError(ValueError):
  """Raised when no face passes the detector's thresholds (or the confidence threshold)."""


# ----------------------------------------------------------------------------------------------
# Weights: safe reader of the joblib/LZ4 files in the `mtcnn` wheel.


def default_weights_dir() -> pathlib.Path:
  """Folder of the `mtcnn` wheel's weight files, found without importing the package."""
  env = os.environ.get("JAXINV_MTCNN_WEIGHTS")
  if env:
    return pathlib.Path(env)
  spec = importlib.util.find_spec("mtcnn")  # top-level spec: does not run mtcnn/__init__.py
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "MTCNN weights not found: the `mtcnn` package (which ships them) is not installed. "
        f"Install it with:  {PIP_HINT}  or pass weights_path= a folder holding pnet.lz4, "
        "rnet.lz4 and onet.lz4.")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"


class _ArrayWrapper:
  """Stand-in for joblib's array header object; its state is read, nothing is run."""

  def __setstate__(self, state):
    self.state = state


_ALLOWED_GLOBALS = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapper,
    ("numpy", "ndarray"): np.ndarray,  # only recorded as the array's class
    ("numpy", "dtype"): np.dtype,
}


class _JoblibUnpickler(pickle._Unpickler):  # pure-Python unpickler: lets us hook BUILD
  """Unpickles a joblib file: allow-listed globals only; array bytes read from the stream."""

  dispatch = dict(pickle._Unpickler.dispatch)

  def __init__(self, fileobj):
    super().__init__(fileobj)
    self._raw = fileobj

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refusing global {module}.{name} in an MTCNN weight file (only numpy arrays expected)"
      ) from None

  def _load_build(self):
    pickle._Unpickler.load_build(self)
    obj = self.stack[-1]
    if not isinstance(obj, _ArrayWrapper):
      return
    st = obj.state
    dtype = np.dtype(st["dtype"])
    if dtype.hasobject or st.get("subclass", np.ndarray) is not np.ndarray:
      raise pickle.UnpicklingError("MTCNN weight file holds a non-numeric array")
    # joblib writes the raw array bytes right after the header object, outside pickle frames,
    # optionally preceded by one byte giving the number of alignment padding bytes.
    if st.get("numpy_array_alignment_bytes"):
      pad = self._raw.read(1)[0]
      self._raw.read(pad)
    count = int(np.prod(st["shape"], dtype=np.int64))
    data = self._raw.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
      raise pickle.UnpicklingError("MTCNN weight file is truncated")
    arr = np.frombuffer(data, dtype=dtype).reshape(st["shape"], order=st.get("order", "C"))
    self.stack[-1] = np.array(arr)

  dispatch[pickle.BUILD[0]] = _load_build


def read_joblib_arrays(path) -> object:
  """Reads a joblib file of numpy arrays (optionally LZ4-compressed) without executing code."""
  raw = pathlib.Path(path).read_bytes()
  if raw[:4] == b"\x04\x22\x4d\x18":  # LZ4 frame magic
    try:
      import lz4.frame
    except ImportError as e:
      raise ImportError(f"reading {path} needs the `lz4` package: {PIP_HINT}") from e
    raw = lz4.frame.decompress(raw)
  return _JoblibUnpickler(io.BytesIO(raw)).load()


# Keras weight order of each network -> (module name, parameter name). Shapes are checked.
_KERAS_ORDER = {
    "pnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2"],
    "rnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4",
             "fc5_1", "fc5_2"],
    "onet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
             "fc5", "prelu5", "fc6_1", "fc6_2", "fc6_3"],
}


def _to_params(name: str, arrays: Sequence[np.ndarray]) -> dict:
  """Keras weight list -> linen params; fails unless every array is used with the right shape."""
  arrays = list(arrays)
  params, i = {}, 0
  for layer in _KERAS_ORDER[name]:
    if layer.startswith("prelu"):
      params[layer] = {"alpha": np.asarray(arrays[i], np.float32).reshape(-1)}
      i += 1
    else:
      params[layer] = {"kernel": np.asarray(arrays[i], np.float32),
                       "bias": np.asarray(arrays[i + 1], np.float32)}
      i += 2
  if i != len(arrays):
    raise ValueError(f"{name}: weight file has {len(arrays)} arrays, expected {i}")
  template = jax.eval_shape(_NETS[name]().init, jax.random.PRNGKey(0),
                            jnp.zeros((1,) + _INPUT[name], jnp.float32))["params"]
  for layer, leaves in template.items():
    for k, v in leaves.items():
      got = params.get(layer, {}).get(k)
      if got is None or tuple(got.shape) != tuple(v.shape):
        raise ValueError(f"{name}.{layer}.{k}: expected shape {tuple(v.shape)}, got "
                         f"{None if got is None else tuple(got.shape)}")
  return {"params": params}


@functools.lru_cache(maxsize=4)
def load_params(weights_path: str | os.PathLike | None = None) -> dict:
  """The three networks' parameters: ``{'pnet': {'params': ...}, 'rnet': ..., 'onet': ...}``.

  Args:
    weights_path: folder holding ``pnet.lz4``, ``rnet.lz4``, ``onet.lz4`` (the ``mtcnn`` wheel's
      ``mtcnn/assets/weights``). Default: the installed ``mtcnn`` package's folder, found without
      importing it, or ``$JAXINV_MTCNN_WEIGHTS``.
  """
  d = pathlib.Path(weights_path) if weights_path is not None else default_weights_dir()
  out = {}
  for name in ("pnet", "rnet", "onet"):
    f = d / f"{name}.lz4"
    if not f.is_file():
      raise FileNotFoundError(f"MTCNN weight file {f} not found. Install the weights with:  "
                              f"{PIP_HINT}")
    out[name] = _to_params(name, read_joblib_arrays(f))
  return out


# ----------------------------------------------------------------------------------------------
# Networks.


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel (last axis)."""

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, alpha * x)


def _max_pool(x, k: int, s: int, same: bool):
  """TF-style max pooling of ``x: [B, H, W, C]`` (``same``: output ceil(n/s), -inf padding)."""
  pads = [(0, 0)]
  for n in x.shape[1:3]:
    if same:
      out = -(-n // s)
      total = max((out - 1) * s + k - n, 0)
      pads.append((total // 2, total - total // 2))
    else:
      pads.append((0, 0))
  pads.append((0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), pads)


def _conv(features, k, name):
  return nn.Conv(features, (k, k), padding="VALID", precision=HIGHEST, name=name)


def _dense(features, name):
  return nn.Dense(features, precision=HIGHEST, name=name)


class PNet(nn.Module):
  """Proposal net, fully convolutional: ``x [B, H, W, 3] -> (reg [B, h, w, 4], prob [B, h, w])``.

  ``valid``: optional (H, W) of the real image inside a zero-padded ``x``; activations beyond it
  are masked before the first pooling so the padded call equals the unpadded one on the valid
  outputs (the first pooling's "same" padding would otherwise see padded pixels).
  """

  @nn.compact
  def __call__(self, x, valid=None):
    x = PReLU(name="prelu1")(_conv(10, 3, "conv1")(x))
    if valid is not None:
      rows = jnp.arange(x.shape[1])[:, None] < valid[0] - 2
      cols = jnp.arange(x.shape[2])[None, :] < valid[1] - 2
      x = jnp.where((rows & cols)[None, :, :, None], x, -jnp.inf)
    x = _max_pool(x, 2, 2, same=True)
    x = PReLU(name="prelu2")(_conv(16, 3, "conv2")(x))
    x = PReLU(name="prelu3")(_conv(32, 3, "conv3")(x))
    reg = _conv(4, 1, "conv4_1")(x)
    prob = jax.nn.softmax(_conv(2, 1, "conv4_2")(x), axis=-1)[..., 1]
    return reg, prob


def _flatten_wh(x):
  # The converted Caffe weights expect the flatten order of a [B, W, H, C] tensor.
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class RNet(nn.Module):
  """Refine net: ``x [B, 24, 24, 3] -> (reg [B, 4], prob [B])``."""

  @nn.compact
  def __call__(self, x):
    x = _max_pool(PReLU(name="prelu1")(_conv(28, 3, "conv1")(x)), 3, 2, same=True)
    x = _max_pool(PReLU(name="prelu2")(_conv(48, 3, "conv2")(x)), 3, 2, same=False)
    x = PReLU(name="prelu3")(_conv(64, 2, "conv3")(x))
    x = PReLU(name="prelu4")(_dense(128, "fc4")(_flatten_wh(x)))
    reg = _dense(4, "fc5_1")(x)
    prob = jax.nn.softmax(_dense(2, "fc5_2")(x), axis=-1)[:, 1]
    return reg, prob


class ONet(nn.Module):
  """Output net: ``x [B, 48, 48, 3] -> (reg [B, 4], landmarks [B, 10], prob [B])``.

  Landmarks are five x's then five y's, as fractions of the input box.
  """

  @nn.compact
  def __call__(self, x):
    x = _max_pool(PReLU(name="prelu1")(_conv(32, 3, "conv1")(x)), 3, 2, same=True)
    x = _max_pool(PReLU(name="prelu2")(_conv(64, 3, "conv2")(x)), 3, 2, same=False)
    x = _max_pool(PReLU(name="prelu3")(_conv(64, 3, "conv3")(x)), 2, 2, same=True)
    x = PReLU(name="prelu4")(_conv(128, 2, "conv4")(x))
    x = PReLU(name="prelu5")(_dense(256, "fc5")(_flatten_wh(x)))
    reg = _dense(4, "fc6_1")(x)
    lms = _dense(10, "fc6_2")(x)
    prob = jax.nn.softmax(_dense(2, "fc6_3")(x), axis=-1)[:, 1]
    return reg, lms, prob


_NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}
_INPUT = {"pnet": (12, 12, 3), "rnet": (24, 24, 3), "onet": (48, 48, 3)}


# ----------------------------------------------------------------------------------------------
# Resampling (the reference's TF ops, written out).


def area_resize_axis(cum: np.ndarray, n_in: int, n_out: int, axis: int) -> np.ndarray:
  """Area (box-filter) resampling along ``axis`` from the cumulative sums ``cum`` of the input.

  ``cum`` has ``n_in + 2`` entries along ``axis``: 0, the running sums, and one more copy of the
  last pixel, because TF's area resize clamps indices past the edge. Output pixel ``i`` averages
  the input interval ``[i * n_in / n_out, (i + 1) * n_in / n_out)`` with fractional end pixels.
  """
  scale = n_in / n_out
  edges = np.arange(n_out + 1, dtype=np.float64) * scale
  lo = np.floor(edges).astype(np.int64)
  frac = edges - lo
  lo = np.minimum(lo, n_in)
  c0 = np.take(cum, lo, axis=axis)
  c1 = np.take(cum, lo + 1, axis=axis)
  shape = [1] * cum.ndim
  shape[axis] = -1
  integral = c0 + (c1 - c0) * frac.reshape(shape)  # piecewise-linear cumulative sum at edges
  return np.diff(integral, axis=axis) / scale


def _cumsum_padded(x: np.ndarray, axis: int) -> np.ndarray:
  last = np.take(x, [-1], axis=axis)
  x = np.concatenate([x, last], axis=axis)
  c = np.cumsum(x, axis=axis, dtype=np.float64)
  zero = np.zeros_like(np.take(c, [0], axis=axis))
  return np.concatenate([zero, c], axis=axis)


def area_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """TF's ``resize(method=AREA)`` (align_corners=False) of ``img: [H, W, C]`` -> float32."""
  h, w = img.shape[:2]
  rows = area_resize_axis(_cumsum_padded(img, 0), h, out_h, 0)
  return area_resize_axis(_cumsum_padded(rows, 1), w, out_w, 1).astype(np.float32)


def crop_and_resize(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """TF's ``crop_and_resize`` (bilinear, extrapolation 0) of one image, in float32 numpy.

  Args:
    img: [H, W, C] float32.
    boxes: [N, 4] (y1, x1, y2, x2) in units where 0 and 1 are the first and last pixel centre.
    size: output side.
  Returns:
    [N, size, size, C] float32.
  """
  h, w = img.shape[:2]
  boxes = np.asarray(boxes, np.float32)
  t = np.arange(size, dtype=np.float32)

  def coords(a, b, n):
    p = a[:, None] * np.float32(n - 1) + t[None, :] * ((b - a) * np.float32(n - 1) / np.float32(size - 1))[:, None]
    ok = (p >= 0) & (p <= n - 1)
    lo = np.floor(p)
    frac = (p - lo).astype(np.float32)
    lo_i = np.clip(lo.astype(np.int64), 0, n - 1)
    hi_i = np.clip(np.ceil(p).astype(np.int64), 0, n - 1)
    return lo_i, hi_i, frac, ok

  y0, y1, fy, oky = coords(boxes[:, 0], boxes[:, 2], h)
  x0, x1, fx, okx = coords(boxes[:, 1], boxes[:, 3], w)
  rows0, rows1 = y0[:, :, None], y1[:, :, None]
  cols0, cols1 = x0[:, None, :], x1[:, None, :]
  fxe = fx[:, None, :, None]
  top = img[rows0, cols0] + (img[rows0, cols1] - img[rows0, cols0]) * fxe
  bot = img[rows1, cols0] + (img[rows1, cols1] - img[rows1, cols0]) * fxe
  out = top + (bot - top) * fy[:, :, None, None]
  ok = (oky[:, :, None] & okx[:, None, :])[..., None]
  return np.where(ok, out, np.float32(0)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Box arithmetic (numpy; boxes are rows (x1, y1, x2, y2, score, ...)).


def _iou(b: np.ndarray, method: str) -> np.ndarray:
  area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  iw = np.maximum(0, np.minimum(b[None, :, 2], b[:, None, 2]) - np.maximum(b[None, :, 0], b[:, None, 0]))
  ih = np.maximum(0, np.minimum(b[None, :, 3], b[:, None, 3]) - np.maximum(b[None, :, 1], b[:, None, 1]))
  inter = iw * ih
  with np.errstate(divide="ignore", invalid="ignore"):
    if method == "union":
      return inter / (area[:, None] + area[None, :] - inter)
    return inter / np.minimum(area[:, None], area[None, :])


def nms(rows: np.ndarray, threshold: float, method: str = "union", sort: bool = True) -> np.ndarray:
  """The reference's NMS: after sorting by score, a box survives iff no earlier box overlaps it
  by more than ``threshold`` (earlier boxes count even when they were suppressed themselves)."""
  if len(rows) == 0:
    return rows
  if sort:
    rows = rows[np.argsort(rows[:, 4])[::-1]]
  ov = _iou(rows[:, :4], method)
  earlier = np.triu(np.ones(ov.shape, bool), k=1)
  keep = ~np.any((ov > threshold) & earlier, axis=0)
  return rows[keep]


def _square(rows: np.ndarray) -> np.ndarray:
  rows = rows.copy()
  w = rows[:, 2] - rows[:, 0]
  h = rows[:, 3] - rows[:, 1]
  side = np.maximum(w, h)
  rows[:, 0] += 0.5 * (w - side)
  rows[:, 1] += 0.5 * (h - side)
  rows[:, 2] = rows[:, 0] + side
  rows[:, 3] = rows[:, 1] + side
  return rows


def _regress(rows: np.ndarray, reg: np.ndarray) -> np.ndarray:
  rows = rows.copy()
  w = rows[:, 2] - rows[:, 0] + 1
  h = rows[:, 3] - rows[:, 1] + 1
  rows[:, :4] += reg * np.stack([w, h, w, h], axis=-1)
  return rows


def pyramid_scales(width: int, height: int, min_face_size: float = 20,
                   scale_factor: float = 0.709, min_size: int = 12) -> np.ndarray:
  """The reference's pyramid: ``(min_size / min_face_size) * scale_factor ** k``."""
  min_dim = min(width, height)
  count = round(-((np.log(min_dim / min_size) / np.log(scale_factor)) + 1))
  return (min_size / min_face_size) * scale_factor ** np.arange(max(count, 0))


# ----------------------------------------------------------------------------------------------
# The cascade.


def _bucket(n: int) -> int:
  """Smallest size >= n of the form m * 2^e with m in 4..7: at most 25% padding, and pyramids of
  differently sized photos mostly land on the same few shapes (one compilation each)."""
  e = max(int(n).bit_length() - 3, 0)
  m = -(-n // (1 << e))
  return m << e


@functools.lru_cache(maxsize=None)
def _pnet_fn():
  return jax.jit(lambda p, x, valid: PNet().apply(p, x, valid))


@functools.lru_cache(maxsize=None)
def _stage_fn(name: str):
  net = _NETS[name]()
  return jax.jit(net.apply)


def _run_stage(name, size, params, img, rows):
  """Crops every box of ``rows`` from ``img`` to ``size``^2 and runs the net (padded batch)."""
  h, w = img.shape[:2]
  n = len(rows)
  nb = max(16, 1 << (n - 1).bit_length())  # power-of-two batches: few compilations
  boxes = rows[:, [1, 0, 3, 2]] / np.array([h, w, h, w])  # the reference divides by H, W
  patches = np.zeros((nb, size, size, 3), np.float32)
  patches[:n] = crop_and_resize(img, boxes, size)
  outs = _stage_fn(name)(params, jnp.asarray(patches))
  return [np.asarray(o, np.float64)[:n] for o in outs]


class Detections(NamedTuple):
  """All faces in one image, in the detector's final order.

  boxes: [N, 4] (x1, y1, x2, y2) pixels; scores: [N]; landmarks: [N, 5, 2] (x, y) pixels, ordered
  left eye, right eye, nose, mouth left, mouth right (image left/right).
  """
  boxes: np.ndarray
  scores: np.ndarray
  landmarks: np.ndarray


def _empty() -> Detections:
  return Detections(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))


def detect_faces(image: np.ndarray, params: dict | None = None, *, min_face_size: float = 20,
                 scale_factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8),
                 nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7),
                 weights_path=None) -> Detections:
  """Every face MTCNN finds in ``image``.

  Args:
    image: [H, W, 3] uint8 RGB.
    params: from :func:`load_params` (loaded from ``weights_path`` / the installed wheel if None).
    min_face_size, scale_factor: the image pyramid (reference defaults 20, 0.709).
    thresholds: P-Net, R-Net, O-Net face-probability thresholds (reference 0.6, 0.7, 0.8).
    nms_thresholds: P-Net per scale, P-Net across scales, R-Net (IoU) and O-Net (overlap over
      the smaller box), as the reference.
  Returns:
    :class:`Detections`; empty when nothing passes (no exception here).
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image: expected [H, W, 3] RGB, got shape {image.shape}")
  if params is None:
    params = load_params(weights_path)
  h, w = image.shape[:2]
  img = (image.astype(np.float32) - 127.5) / 128.0

  # Stage 1: P-Net over the pyramid. Each level is zero-padded to a bucketed size so that
  # pictures of different sizes share compiled functions; the padding is masked inside P-Net.
  cum_rows = _cumsum_padded(img, 0)
  proposals = []
  for scale in pyramid_scales(w, h, min_face_size, scale_factor):
    hs, ws = (np.asarray([h, w]) * scale).astype(np.int64)  # the reference truncates
    if min(hs, ws) < 12:
      continue
    rows_resized = area_resize_axis(cum_rows, h, hs, 0)
    level = area_resize_axis(_cumsum_padded(rows_resized, 1), w, ws, 1).astype(np.float32)
    hp, wp = _bucket(hs), _bucket(ws)
    padded = np.zeros((1, hp, wp, 3), np.float32)
    padded[0, :hs, :ws] = level
    reg, prob = _pnet_fn()(params["pnet"], jnp.asarray(padded), jnp.asarray([hs, ws]))
    oh, ow = -(-(hs - 2) // 2) - 4, -(-(ws - 2) // 2) - 4
    prob = np.asarray(prob[0, :oh, :ow], np.float64)
    reg = np.asarray(reg[0, :oh, :ow], np.float64)
    yy, xx = np.nonzero(prob > thresholds[0])
    if len(yy) == 0:
      continue
    r = reg[yy, xx]
    # Cells are 12x12 windows with stride 2; the reference places them at 2*i + 1 ... 2*i + 12.
    x1, y1 = 2.0 * xx + 1, 2.0 * yy + 1
    x2, y2 = 2.0 * xx + 12, 2.0 * yy + 12
    rows = np.stack([x1 + r[:, 0] * 11, y1 + r[:, 1] * 11, x2 + r[:, 2] * 11, y2 + r[:, 3] * 11,
                     prob[yy, xx]], axis=-1)
    rows = rows[np.argsort(rows[:, 4])[::-1]]
    rows[:, :4] /= scale
    proposals.append(nms(rows, nms_thresholds[0], "union", sort=False))
  if not proposals:
    return _empty()
  rows = _square(nms(np.concatenate(proposals), nms_thresholds[1], "union"))
  if len(rows) == 0:
    return _empty()

  # Stage 2: R-Net.
  reg, prob = _run_stage("rnet", 24, params["rnet"], img, rows)
  rows = rows.copy()
  rows[:, 4] = prob
  rows = _regress(rows, reg)
  rows = rows[rows[:, 4] > thresholds[1]]
  rows = _square(nms(rows, nms_thresholds[2], "union"))
  if len(rows) == 0:
    return _empty()

  # Stage 3: O-Net, boxes and landmarks.
  reg, lms, prob = _run_stage("onet", 48, params["onet"], img, rows)
  bw = rows[:, 2:3] - rows[:, 0:1] + 1
  bh = rows[:, 3:4] - rows[:, 1:2] + 1
  lx = bw * lms[:, :5] + rows[:, 0:1] - 1
  ly = bh * lms[:, 5:] + rows[:, 1:2] - 1
  rows = rows.copy()
  rows[:, 4] = prob
  rows = _regress(rows, reg)
  rows = np.concatenate([rows[:, :5], lx, ly], axis=-1)
  rows = rows[rows[:, 4] > thresholds[2]]
  rows = nms(rows, nms_thresholds[3], "min")
  if len(rows) == 0:
    return _empty()
  boxes = rows[:, :4].copy()
  boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w - 1)  # the reference fits boxes to the image
  boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h - 1)
  landmarks = np.stack([rows[:, 5:10], rows[:, 10:15]], axis=-1)
  return Detections(boxes, rows[:, 4].copy(), landmarks)


# ----------------------------------------------------------------------------------------------
# Landmark refinement: O-Net at its own fixed point, averaged over shifted boxes.

# Defaults of :func:`refine_landmarks`, chosen on fixtures/faces (bench/pose_stability.py).
REFINE_SHIFTS = (-0.1, -0.1 / 3, 0.1 / 3, 0.1)  # box offsets in x and y, fractions of its side
REFINE_ITERATIONS = 3
REFINE_BLUR = 0.5  # Gaussian sigma in O-Net input pixels (box side / 48)
REFINE_WORK_SIDE = 160  # larger faces are area-resampled to a box of this many pixels first


class Refined(NamedTuple):
  """One face after :func:`refine_landmarks`: box [4] (x1, y1, x2, y2, square), landmarks
  [5, 2] (x, y) pixels (as :class:`Detections`), score (mean O-Net face probability of the
  last round), iterations run."""
  box: np.ndarray
  landmarks: np.ndarray
  score: float
  iterations: int


def _gaussian_kernel(sigma: float) -> np.ndarray:
  r = max(int(np.ceil(3 * sigma)), 1)
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of ``img: [H, W, C]`` float32, edges replicated."""
  if sigma <= 0:
    return img
  k = _gaussian_kernel(sigma)
  r = len(k) // 2
  out = np.asarray(img, np.float32)
  for axis in (0, 1):
    pad = [(0, 0)] * out.ndim
    pad[axis] = (r, r)
    x = np.moveaxis(np.pad(out, pad, mode="edge"), axis, 0)
    n = out.shape[axis]
    acc = k[0] * x[:n]
    for i in range(1, len(k)):
      acc += k[i] * x[i:i + n]
    out = np.moveaxis(acc, 0, axis)
  return np.ascontiguousarray(out)


def _sample_patches(img: np.ndarray, origin: tuple[int, int], scale: tuple[float, float],
                    photo_size: tuple[int, int], boxes: np.ndarray, size: int) -> np.ndarray:
  """Bilinear samples at the centres of a ``size``^2 grid of pixels covering each box.

  ``img`` is a window of the photo starting at photo pixel ``origin`` (x, y), resampled by
  ``scale`` (x, y) (window pixel j covers photo pixels [j, j + 1) / scale from the origin's edge);
  ``photo_size`` is (W, H). ``boxes`` are (x1, y1, x2, y2) photo pixels covering pixels
  x1 - 1 .. x2 - 1, as the detector cuts them (width x2 - x1 + 1). Outside the photo the
  samples are 0 (as ``crop_and_resize``). Returns [N, size, size, C] float32.
  """
  t = (np.arange(size) + 0.5) / size

  def coords(lo, hi, o, scale, n_photo, n):
    p = (lo[:, None] - 1) + t[None, :] * (hi - lo + 1)[:, None] - 0.5  # photo pixels
    ok = (p >= 0) & (p <= n_photo - 1)
    q = np.clip((p - o + 0.5) * scale - 0.5, 0, n - 1)  # window pixels
    i0 = np.floor(q).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (q - i0).astype(np.float32), ok

  y0, y1, fy, oky = coords(boxes[:, 1], boxes[:, 3], origin[1], scale[1], photo_size[1],
                          img.shape[0])
  x0, x1, fx, okx = coords(boxes[:, 0], boxes[:, 2], origin[0], scale[0], photo_size[0],
                          img.shape[1])
  r0, r1, c0, c1 = y0[:, :, None], y1[:, :, None], x0[:, None, :], x1[:, None, :]
  fxe = fx[:, None, :, None]
  top = img[r0, c0] + (img[r0, c1] - img[r0, c0]) * fxe
  bot = img[r1, c0] + (img[r1, c1] - img[r1, c0]) * fxe
  out = top + (bot - top) * fy[:, :, None, None]
  return np.where((oky[:, :, None] & okx[:, None, :])[..., None], out, 0).astype(np.float32)


def _blurred_window(image: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: float,
                    sigma: float):
  """Photo pixels [lo, hi) (x, y; clipped to the photo), area-resampled by ``scale`` <= 1,
  normalized as the nets expect and blurred by ``sigma`` photo pixels. Returns (window
  [h, w, 3] float32, origin (x, y), scales, valid (lo, hi)): inside ``valid`` the window equals the
  same filtering of the whole photo (edges replicated), up to the phase of the resampling grid
  (anchored at the window's corner; the blur makes it negligible); scales (x, y) are the exact
  window / photo pixel ratios."""
  ph, pw = image.shape[:2]
  # generous: the blur's support plus the resampling's and bilinear's neighbours, in photo px
  need = int(np.ceil((3 * sigma + 2) / scale)) + 2
  wlo = np.clip(np.floor(lo) - need, 0, [pw, ph]).astype(np.int64)
  whi = np.clip(np.ceil(hi) + need, 0, [pw, ph]).astype(np.int64)
  pixels = (image[wlo[1]:whi[1], wlo[0]:whi[0]].astype(np.float32) - 127.5) / 128.0
  scales = (1.0, 1.0)
  if scale < 1:
    n = np.maximum(np.round((whi - wlo) * scale), 1).astype(np.int64)
    pixels = area_resize(pixels, int(n[1]), int(n[0]))
    scales = tuple(float(x) for x in n / (whi - wlo))
  window = gaussian_blur(pixels, sigma * scale)
  valid = (np.where(wlo > 0, wlo + need, -np.inf), np.where(whi < [pw, ph], whi - need, np.inf))
  return window, (int(wlo[0]), int(wlo[1])), scales, valid


def _square_box(box: np.ndarray) -> tuple[float, float, float]:
  x1, y1, x2, y2 = np.asarray(box, np.float64)[:4]
  return (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)


def refine_landmarks(image: np.ndarray, box: np.ndarray, params: dict | None = None, *,
                     shifts: Sequence[float] = REFINE_SHIFTS,
                     iterations: int = REFINE_ITERATIONS, blur: float = REFINE_BLUR,
                     tolerance: float = 1e-3, weights_path=None) -> Refined:
  """Landmarks of one face that do not depend on the detector's exact box or the file encoding.

  O-Net's landmarks move by several pixels when its input box moves by one, and the box that
  P-Net and R-Net hand over changes with JPEG noise or a resize: the camera pose read from the
  landmarks moved by up to 5.5 degrees between encodings of one photo. Here O-Net runs on a
  ``len(shifts)^2`` grid of shifted copies of the box, on an image blurred to O-Net's input
  resolution (sigma = ``blur`` O-Net pixels; without it the 48 x 48 resampling aliases), and the
  mean of its box regressions becomes the next box; after ``iterations`` rounds (or once the box
  moves by less than ``tolerance`` of its side) the landmarks are the mean over the last grid.
  Deterministic; costs ``iterations * len(shifts)^2`` O-Net patches (48 by default).

  Args:
    image: [H, W, 3] uint8 RGB.
    box: the detector's box (x1, y1, x2, y2, ...) pixels, e.g. ``Detections.boxes[i]``.
    params: from :func:`load_params` (loaded from ``weights_path`` / the installed wheel if None).
  Returns:
    :class:`Refined`.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image: expected [H, W, 3] RGB, got shape {image.shape}")
  if iterations < 1 or len(shifts) < 1:
    raise ValueError("refine_landmarks: needs at least one iteration and one shift")
  if params is None:
    params = load_params(weights_path)
  h, w = image.shape[:2]
  cx, cy, side = _square_box(box)
  if not (np.isfinite([cx, cy, side]).all() and side > 0):
    raise ValueError(f"box: degenerate {np.asarray(box).tolist()}")
  sigma = blur * side / 48
  # Larger faces are first area-resampled so that the box is REFINE_WORK_SIDE pixels wide
  # (3.3 per O-Net pixel): the cost does not grow with the face's size in pixels, and the
  # nets see the same input at any photo resolution.
  scale = min(1.0, REFINE_WORK_SIDE / side)
  offsets = np.array([(dx, dy) for dy in shifts for dx in shifts], np.float64)
  valid = None
  landmarks, score = None, 0.0
  for it in range(1, iterations + 1):
    centres = np.array([cx, cy]) + offsets * side
    boxes = np.concatenate([centres - side / 2, centres + side / 2], axis=-1)
    lo, hi = boxes[:, :2].min(0) - 2, boxes[:, 2:].max(0)
    if not (np.all(hi > 0) and np.all(lo < [w, h])):  # the box left the photo
      if landmarks is None:
        raise ValueError(f"box: outside the {w}x{h} image: {np.asarray(box).tolist()}")
      break
    if valid is None or np.any(lo < valid[0]) or np.any(hi > valid[1]):
      # A window around the boxes with room for the box to move; cut again only if it leaves.
      room = 0.5 * side
      blurred, origin, scales, valid = _blurred_window(image, lo - room, hi + room, scale, sigma)
    n = len(boxes)
    nb = max(16, 1 << (n - 1).bit_length())  # the batch sizes _run_stage compiles for
    patches = np.zeros((nb, 48, 48, 3), np.float32)
    patches[:n] = _sample_patches(blurred, origin, scales, (w, h), boxes, 48)
    reg, lms, prob = [np.asarray(o, np.float64)[:n]
                      for o in _stage_fn("onet")(params["onet"], jnp.asarray(patches))]
    bw = boxes[:, 2:3] - boxes[:, 0:1] + 1
    bh = boxes[:, 3:4] - boxes[:, 1:2] + 1
    landmarks = np.stack([bw * lms[:, :5] + boxes[:, 0:1] - 1,
                          bh * lms[:, 5:] + boxes[:, 1:2] - 1], axis=-1).mean(0)
    score = float(prob.mean())
    ncx, ncy, nside = _square_box(_regress(boxes, reg).mean(0))
    moved = max(abs(ncx - cx), abs(ncy - cy), abs(nside - side)) / side
    cx, cy, side = ncx, ncy, nside
    if moved < tolerance:
      break
  half = side / 2
  return Refined(np.array([cx - half, cy - half, cx + half, cy + half]), landmarks, score, it)


def pick_largest(dets: Detections, min_confidence: float = 0.9) -> int:
  """Index of the largest face (by box width + height) among those above ``min_confidence``.

  EG3D's ``batch_mtcnn.py`` takes the largest face and keeps it if its confidence exceeds 0.9;
  we drop faces under the threshold first, so a large false positive cannot hide a real face.
  Raises :class:`NoFaceError` when none qualifies.
  """
  ok = np.nonzero(dets.scores > min_confidence)[0]
  if len(ok) == 0:
    if len(dets.scores):
      raise NoFaceError(f"no face with confidence > {min_confidence} (best "
                        f"{dets.scores.max():.3f} among {len(dets.scores)} candidates)")
    raise NoFaceError("no face found")
  size = (dets.boxes[ok, 2] - dets.boxes[ok, 0]) + (dets.boxes[ok, 3] - dets.boxes[ok, 1])
  return int(ok[np.argmax(size)])
