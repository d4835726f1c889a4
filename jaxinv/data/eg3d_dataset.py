"""EG3D-format datasets (a folder or a zip with ``dataset.json``) and a checkpointable per-process
batch iterator. Pure numpy + PIL: the training process never imports TensorFlow (nor TFDS, unless it
reads a TFDS copy through :mod:`jaxinv.data.tfds_eg3d`).

``dataset.json`` is EG3D's label file: ``{"labels": [[file_name, [25 floats]], ...]}`` with the
camera label of :mod:`jaxinv.render.camera` (row-major 4x4 cam2world, then the 3x3 normalized
intrinsics); file names are relative to the folder / zip root, '/'-separated.

Typical use in a trainer (one process of ``jax.process_count()``)::

    ds = EG3DDataset("ffhq512.zip", mirror=True, resolution=256)
    it = DataIterator(ds, global_batch_size=32, seed=0)   # this process's rows of every batch
    it.set_state(saved_state)                              # optional: exact resume
    batch = next(it)   # dict(image uint8 [8, 256, 256, 3], c float32 [8, 25], index, mirrored)
    state = it.get_state()                                 # a dict of ints; put it in the checkpoint
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import json
import os
import posixpath
import threading
import zipfile
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import PIL.Image

from jaxinv.data.synthetic import FLIP_YAW_SIGN

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def flip_yaw_np(c: np.ndarray) -> np.ndarray:
  """:func:`jaxinv.data.synthetic.flip_yaw` on host arrays ``[..., 25]`` (same sign pattern)."""
  c = np.asarray(c, np.float32)
  return c * FLIP_YAW_SIGN


def normalize_images(image):
  """uint8 ``[..., H, W, 3]`` in [0, 255] -> float32 in [-1, 1] (the library's image convention).

  Works on numpy and jax arrays alike (call it inside the jitted step so uint8 crosses to the device).
  """
  return image.astype("float32") * (2.0 / 255.0) - 1.0


class RandomAccessSource(Protocol):
  """What :class:`DataIterator` reads: ``len(src)`` records, ``src[i]`` -> dict(image, c, ...)."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Mapping[str, Any]: ...


class _Files:
  """Read-only access to the files of a folder or a zip (the zip is reopened per process)."""

  def __init__(self, path):
    self.path = os.fspath(path)
    if os.path.isdir(self.path):
      self.kind = "dir"
      names = []
      for root, _, files in os.walk(self.path):
        for f in files:
          names.append(os.path.relpath(os.path.join(root, f), self.path).replace(os.sep, "/"))
      self.names = sorted(names)
    elif os.path.isfile(self.path) and zipfile.is_zipfile(self.path):
      self.kind = "zip"
      with zipfile.ZipFile(self.path) as z:
        self.names = sorted(n for n in z.namelist() if not n.endswith("/"))
    else:
      raise FileNotFoundError(f"EG3D dataset: {self.path!r} is neither a folder nor a zip file")
    self._zip = None
    self._pid = None
    self._lock = threading.Lock()

  def read(self, name: str) -> bytes:
    if self.kind == "dir":
      with open(os.path.join(self.path, *name.split("/")), "rb") as f:
        return f.read()
    with self._lock:  # one ZipFile per process; its reads are safe from several threads
      if self._zip is None or self._pid != os.getpid():
        self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
      z = self._zip
    return z.read(name)

  def __getstate__(self):
    return {k: v for k, v in dict(self.__dict__, _zip=None, _pid=None).items() if k != "_lock"}

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock())


def decode_image(data: bytes, resolution: int | None = None) -> np.ndarray:
  """Encoded image bytes -> uint8 ``[H, W, 3]`` (grey and RGBA converted to RGB).

  ``resolution``: resize to ``resolution x resolution`` (PIL Lanczos) when the size differs.
  """
  with PIL.Image.open(io.BytesIO(data)) as im:
    im = im.convert("RGB")
    if resolution is not None and im.size != (resolution, resolution):
      im = im.resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(im, np.uint8)


class EG3DDataset:
  """An EG3D ``dataset_tool.py``-style dataset: images + ``dataset.json`` camera labels.

  Records are the image files in sorted order (as EG3D's ``ImageFolderDataset``); with
  ``mirror=True`` the dataset is doubled EG3D-``xflip`` style: record ``n + i`` is record ``i``
  flipped horizontally with its camera replaced by :func:`flip_yaw_np` (EG3D's
  ``mirror_dataset.py`` does the same offline).

  Args:
    path: a folder or a ``.zip``.
    mirror: append the mirrored copies.
    resolution: resize images to this square size on read (None = as stored; all images must then
      share one size for batching).
    max_size: keep only the first ``max_size`` images (sorted order), before mirroring.

  ``ds[i]`` -> dict(image uint8 [H, W, 3], c float32 [25], name str, mirrored bool, index int).
  """

  def __init__(self, path, *, mirror: bool = False, resolution: int | None = None,
               max_size: int | None = None):
    self._files = _Files(path)
    self.path = self._files.path
    self.mirror = bool(mirror)
    self.resolution = resolution
    names = [n for n in self._files.names if posixpath.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    if max_size is not None:
      names = names[:max_size]
    if not names:
      raise FileNotFoundError(f"EG3D dataset {self.path!r}: no image files")
    if "dataset.json" not in self._files.names:
      raise FileNotFoundError(f"EG3D dataset {self.path!r}: no dataset.json with camera labels")
    raw = json.loads(self._files.read("dataset.json"))
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not labels:
      raise ValueError(f"EG3D dataset {self.path!r}: dataset.json has no 'labels' list")
    table = {str(n).replace("\\", "/"): l for n, l in labels}
    missing = [n for n in names if n not in table]
    if missing:
      raise ValueError(f"EG3D dataset {self.path!r}: {len(missing)} image(s) have no label in "
                       f"dataset.json, e.g. {missing[:3]}")
    lab = np.asarray([table[n] for n in names], np.float64)
    if lab.ndim != 2 or lab.shape[1] != 25:
      raise ValueError(f"EG3D dataset {self.path!r}: labels must be 25 numbers (16 cam2world + 9 "
                       f"intrinsics), got shape {lab.shape[1:]}")
    self.names: tuple[str, ...] = tuple(names)
    self.raw_labels = lab.astype(np.float32)
    self.raw_labels.setflags(write=False)

  def __len__(self) -> int:
    return len(self.names) * (2 if self.mirror else 1)

  @property
  def labels(self) -> np.ndarray:
    """Camera labels of every record ``[len(self), 25]`` (mirrored copies flipped)."""
    if not self.mirror:
      return self.raw_labels
    return np.concatenate([self.raw_labels, flip_yaw_np(self.raw_labels)])

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"EG3D dataset index {index} out of range [0, {len(self)})")
    n = len(self.names)
    raw, mirrored = index % n, index >= n
    image = decode_image(self._files.read(self.names[raw]), self.resolution)
    c = self.raw_labels[raw]
    if mirrored:
      image, c = np.ascontiguousarray(image[:, ::-1]), flip_yaw_np(c)
    return dict(image=image, c=np.array(c, np.float32), name=self.names[raw], mirrored=mirrored,
                index=index)

  def read_encoded(self, raw_index: int) -> bytes:
    """The stored bytes of image ``raw_index`` (no mirroring): what a TFDS copy keeps."""
    return self._files.read(self.names[raw_index])


class ArraySource:
  """An in-memory EG3D-style source: ``images uint8 [N, H, W, 3]``, ``labels [N, 25]``.

  Same record fields and ``mirror`` convention as :class:`EG3DDataset` (record ``N + i`` is record
  ``i`` flipped, with :func:`flip_yaw_np` labels).
  """

  def __init__(self, images, labels, names: Sequence[str] | None = None, *, mirror: bool = False):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images: expected uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    labels = np.asarray(labels, np.float32)
    if labels.shape != (images.shape[0], 25):
      raise ValueError(f"labels: expected [{images.shape[0]}, 25], got {labels.shape}")
    self.images, self.raw_labels = images, labels
    self.names = tuple(names) if names is not None else tuple(
        f"{i:08d}.png" for i in range(len(images)))
    self.mirror = bool(mirror)

  def __len__(self) -> int:
    return len(self.images) * (2 if self.mirror else 1)

  @property
  def labels(self) -> np.ndarray:
    if not self.mirror:
      return self.raw_labels
    return np.concatenate([self.raw_labels, flip_yaw_np(self.raw_labels)])

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range [0, {len(self)})")
    n = len(self.images)
    raw, mirrored = index % n, index >= n
    image, c = self.images[raw], self.raw_labels[raw]
    if mirrored:
      image, c = np.ascontiguousarray(image[:, ::-1]), flip_yaw_np(c)
    return dict(image=image, c=np.array(c, np.float32), name=self.names[raw], mirrored=mirrored,
                index=index)


def write_eg3d_dataset(path, images, labels, names: Sequence[str] | None = None) -> str:
  """Writes an EG3D-format dataset: PNG files + ``dataset.json``; a ``.zip`` path writes a zip.

  Args:
    path: a folder (created) or a file name ending in ``.zip``.
    images: uint8 ``[N, H, W, 3]``.
    labels: ``[N, 25]`` camera labels.
    names: file names (default ``00000000.png`` ...).
  Returns:
    ``path`` as a string.
  """
  src = ArraySource(images, labels, names)
  path = os.fspath(path)
  entries = []
  for i, name in enumerate(src.names):
    buf = io.BytesIO()
    PIL.Image.fromarray(src.images[i]).save(buf, format="PNG")
    entries.append((name, buf.getvalue()))
  meta = json.dumps({"labels": [[n, [float(x) for x in l]] for n, l in
                                zip(src.names, src.raw_labels)]})
  if path.endswith(".zip"):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("dataset.json", meta)
      for name, data in entries:
        z.writestr(name, data)
  else:
    os.makedirs(path, exist_ok=True)
    for name, data in entries:
      full = os.path.join(path, *name.split("/"))
      os.makedirs(os.path.dirname(full), exist_ok=True)
      with open(full, "wb") as f:
        f.write(data)
    with open(os.path.join(path, "dataset.json"), "w") as f:
      f.write(meta)
  return path


def write_generated(G, path, num_images: int, key, config=None, *, batch_size: int = 8,
                    labels=None) -> str:
  """Pre-generates an EG3D-format dataset with the frozen generator ``G`` (TriPlaneNet's recipe of
  pre-generated EG3D samples): ``num_images`` images of :func:`jaxinv.data.synthetic.generate`
  written as PNGs with their render cameras in ``dataset.json``, plus ``latents.npz`` (``z``,
  ``ws``, ``c_map``, ``mirrored`` in file order) beside them.

  Args:
    G: the generator; path: a folder; key: PRNG key (batch ``i`` uses ``fold_in(key, i)``);
    config: a :class:`jaxinv.data.synthetic.SyntheticConfig` (default: psi 1, Gaussian poses);
    batch_size: images rendered per call; labels: for ``PoseDistribution(kind="labels")``.
  Returns:
    ``path`` as a string.
  """
  import jax

  from jaxinv.data import synthetic
  config = synthetic.SyntheticConfig() if config is None else config
  parts = {k: [] for k in ("image", "c", "z", "ws", "c_map", "mirrored")}
  for i in range(-(-int(num_images) // batch_size)):
    extra = () if labels is None else (labels,)  # same call signature as plain generate_jit users
    out = synthetic.generate_jit(G, jax.random.fold_in(key, i), batch_size, config, *extra)
    for k in parts:
      parts[k].append(np.asarray(out[k]))
  arrays = {k: np.concatenate(v)[:num_images] for k, v in parts.items()}
  images = np.round((np.clip(arrays.pop("image"), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
  path = write_eg3d_dataset(path, images, arrays.pop("c"))
  np.savez(os.path.join(path, "latents.npz"), **arrays)
  return path


def world_stand_in(num_images: int = 64, resolution: int = 64, seed: int = 0, *,
                   mirror: bool = False, poses=None) -> ArraySource:
  """A small stand-in "real" dataset the project makes itself: scenes of the procedural world.

  ``num_images`` scenes ``z ~ N(0, I)`` of :mod:`jaxinv.data.world` rendered at ``resolution`` from
  cameras of ``poses`` (default :meth:`PoseDistribution.eg3d_gaussian
  <jaxinv.data.synthetic.PoseDistribution.eg3d_gaussian>`), all from ``seed``: deterministic, so
  every process builds the same records. For ``runlocal`` configs without a dataset.
  """
  import jax

  from jaxinv.data import synthetic, world
  poses = synthetic.PoseDistribution.eg3d_gaussian() if poses is None else poses
  kz, kc = jax.random.split(jax.random.PRNGKey(seed))
  z = world.sample_z(kz, num_images)
  c = jax.jit(synthetic.sample_poses, static_argnums=(1, 2))(kc, num_images, poses)
  out = world.render(z, c, resolution)
  images = np.asarray(np.round((np.asarray(out["image"]) + 1.0) * 127.5).clip(0, 255), np.uint8)
  return ArraySource(images, np.asarray(c), mirror=mirror)


# ------------------------------------------------------------------ sharding and iteration


def shard_indices(num_records: int, process_index: int, process_count: int) -> np.ndarray:
  """Record indices of one process's static shard: contiguous, disjoint, together complete.

  Shard sizes differ by at most one (the first ``num_records % process_count`` shards get one
  more), as ``tfds.even_splits`` / grain's ``ShardOptions(drop_remainder=False)`` split.
  """
  _check_process(process_index, process_count)
  base, extra = divmod(int(num_records), process_count)
  start = process_index * base + min(process_index, extra)
  return np.arange(start, start + base + (process_index < extra), dtype=np.int64)


def _check_process(process_index, process_count):
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, process_count), got {process_index} of "
                     f"{process_count}")


@dataclasses.dataclass(frozen=True)
class IteratorState:
  """Where a :class:`DataIterator` is: the next batch is batch ``position`` of epoch ``epoch``.

  ``seed`` fixes every epoch's permutation; ``num_records`` and ``global_batch_size`` are kept to
  refuse a restore into a different dataset or batch size.
  """
  epoch: int = 0
  position: int = 0
  seed: int = 0
  num_records: int = 0
  global_batch_size: int = 0

  def to_dict(self) -> dict[str, int]:
    return {k: int(v) for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "IteratorState":
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f"IteratorState: unknown fields {sorted(unknown)}")
    return cls(**{k: int(np.asarray(v)) for k, v in d.items()})


class DataIterator:
  """Deterministic, checkpointable batches of a random-access source, split over processes.

  Every epoch is one permutation of all records (``seed``, ``epoch``; identity if ``shuffle`` is
  off). Global batch ``k`` is records ``perm[k*B:(k+1)*B]``; process ``p`` of ``P`` yields rows
  ``[p*B/P, (p+1)*B/P)`` of it. So the global batch does not depend on the number of processes,
  the processes' rows are disjoint, and over an epoch they cover every record except the last
  ``num_records % B`` of that epoch's permutation (dropped so shapes stay fixed; a different set
  each epoch).

  The state (:meth:`get_state`: epoch, position, seed and the sizes it was made for) is a dict of
  ints: save it with the checkpoint, :meth:`set_state` it after restoring, and the next batches are
  exactly those an uninterrupted run would have read.

  Args:
    source: a :class:`RandomAccessSource` (:class:`EG3DDataset`, a TFDS copy, ...).
    global_batch_size: rows per step over all processes (divisible by ``process_count``).
    seed: shuffle seed.
    shuffle: permute each epoch (False: records in order).
    process_index, process_count: this process and how many (default: ``jax.process_index()``,
      ``jax.process_count()``).
    num_epochs: stop after this many epochs (None = forever).
    keys: record fields stacked into the batch (others, e.g. ``name``, are dropped).
    normalize: turn ``image`` into float32 in [-1, 1] (:func:`normalize_images`); False keeps
      uint8 (4x less to copy to the device; normalize there).
    num_threads: records of a batch are read and decoded by this many threads (PIL releases the
      GIL while decoding); 1 reads them in the calling thread. The result does not depend on it.
    prefetch: read the next batch on a background thread while the caller uses this one (the
      state still counts only the batches returned, so resume stays exact); False reads on demand.
  """

  def __init__(self, source: RandomAccessSource, global_batch_size: int, *, seed: int = 0,
               shuffle: bool = True, process_index: int | None = None,
               process_count: int | None = None, num_epochs: int | None = None,
               keys: Sequence[str] = ("image", "c", "index", "mirrored"),
               normalize: bool = False, num_threads: int = 8, prefetch: bool = False):
    if process_index is None or process_count is None:
      import jax  # only for the defaults; the data layer itself is host numpy
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    _check_process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of "
                       f"process_count {process_count}")
    self.source = source
    self.num_records = len(source)
    if self.num_records < global_batch_size:
      raise ValueError(f"dataset has {self.num_records} records, fewer than one global batch "
                       f"({global_batch_size})")
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.shuffle = bool(shuffle)
    self.num_epochs = num_epochs
    self.keys = tuple(keys)
    self.normalize = bool(normalize)
    self.num_threads = max(1, int(num_threads))
    self._pool = None
    self._lock = threading.Lock()
    self.prefetch = bool(prefetch)
    self._prefetcher = concurrent.futures.ThreadPoolExecutor(1) if self.prefetch else None
    self._pending = None  # (state it was read at, future of (batch, next state))
    self.batches_per_epoch = self.num_records // self.global_batch_size
    self._state = IteratorState(0, 0, int(seed), self.num_records, self.global_batch_size)

  # -- state
  def get_state(self) -> dict[str, int]:
    """The position as a dict of ints (JSON / Orbax friendly)."""
    return self._state.to_dict()

  def set_state(self, state: Mapping[str, Any] | IteratorState) -> None:
    """Continue from a state returned by :meth:`get_state` (same dataset size and batch size)."""
    s = state if isinstance(state, IteratorState) else IteratorState.from_dict(state)
    if (s.num_records, s.global_batch_size) != (self.num_records, self.global_batch_size):
      raise ValueError(f"iterator state is for {s.num_records} records in global batches of "
                       f"{s.global_batch_size}, but this iterator has {self.num_records} and "
                       f"{self.global_batch_size}")
    if not 0 <= s.position < self.batches_per_epoch or s.epoch < 0:
      raise ValueError(f"iterator state out of range: {s}")
    self._state = s

  # -- order
  def permutation(self, epoch: int) -> np.ndarray:
    """The record order of ``epoch`` (the same on every process)."""
    return _epoch_permutation(self._state.seed, int(epoch), self.num_records, self.shuffle)

  def local_indices(self, epoch: int, position: int) -> np.ndarray:
    """Record indices of this process's rows of global batch ``position`` of ``epoch``."""
    start = position * self.global_batch_size + self.process_index * self.local_batch_size
    return self.permutation(epoch)[start:start + self.local_batch_size]

  # -- iteration
  def __iter__(self):
    return self

  def _read(self, s: IteratorState):
    """(batch at ``s``, the state after it); pure in ``s`` (safe on the prefetch thread)."""
    if self.num_epochs is not None and s.epoch >= self.num_epochs:
      raise StopIteration
    indices = [int(i) for i in self.local_indices(s.epoch, s.position)]
    if self.num_threads > 1 and len(indices) > 1:
      records = list(self._decode_pool().map(self.source.__getitem__, indices))
    else:
      records = [self.source[i] for i in indices]
    batch = {k: np.stack([np.asarray(r[k]) for r in records]) for k in self.keys}
    if self.normalize and "image" in batch:
      batch["image"] = normalize_images(batch["image"])
    position, epoch = s.position + 1, s.epoch
    if position == self.batches_per_epoch:
      position, epoch = 0, epoch + 1
    return batch, dataclasses.replace(s, epoch=epoch, position=position)

  def _decode_pool(self):
    with self._lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.num_threads)
      return self._pool

  def __next__(self) -> dict[str, np.ndarray]:
    if not self.prefetch:
      batch, self._state = self._read(self._state)
      return batch
    if self._pending is None or self._pending[0] != self._state:
      self._pending = (self._state, self._prefetcher.submit(self._read, self._state))
    batch, nxt = self._pending[1].result()  # re-raises StopIteration at the end
    self._state = nxt
    # Read the following batch while the caller trains on this one.
    self._pending = (nxt, self._prefetcher.submit(self._read, nxt))
    return batch

  def close(self) -> None:
    """Stops the reader threads (also done at garbage collection)."""
    for pool in (self._pool, self._prefetcher):
      if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    self._pool, self._pending = None, None


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, num_records: int, shuffle: bool) -> np.ndarray:
  if not shuffle:
    perm = np.arange(num_records)
  else:
    perm = np.random.default_rng([seed, epoch]).permutation(num_records)
  perm.setflags(write=False)
  return perm
