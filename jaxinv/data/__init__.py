"""Training data: on-device synthetic batches (:mod:`~jaxinv.data.synthetic`), EG3D-format datasets
and their checkpointable per-process iterator (:mod:`~jaxinv.data.eg3d_dataset`), TFDS copies
without TensorFlow (:mod:`~jaxinv.data.tfds_eg3d`), and the procedural world
(:mod:`~jaxinv.data.world`). Submodules are imported on use; this file imports nothing heavy.
"""
from __future__ import annotations


def _get(cfg, name, default):
  if cfg is None:
    return default
  if hasattr(cfg, "get"):
    v = cfg.get(name, default)
  else:
    v = getattr(cfg, name, default)
  return default if v is None else v


def train_iterator(config, *, task_name: str = "", batch_size: int, process_index: int = 0,
                   process_count: int = 1):
  """The real-image iterator of a training run: this process's ``batch_size`` rows of every step.

  Reads ``config.data`` (every field optional):

  - ``path``: an EG3D folder or ``.zip`` with ``dataset.json``; with ``format="tfds"`` the TFDS
    ``data_dir`` of a copy made by :func:`jaxinv.data.tfds_eg3d.build_tfds` (``name`` = its
    dataset name). Empty: a stand-in of :func:`~jaxinv.data.eg3d_dataset.world_stand_in` images
    (``stand_in_size`` scenes of the procedural world, default 64), logged as such.
  - ``mirror`` (False): add EG3D-style mirrored copies (image flip + ``flip_yaw``).
  - ``resolution`` (None = as stored; the stand-in's default is 64): resize on read.
  - ``shuffle`` (True), ``seed`` (default ``config.seed``).

  Returns a :class:`~jaxinv.data.eg3d_dataset.DataIterator` yielding dict(image float32
  [batch_size, H, W, 3] in [-1, 1], c float32 [batch_size, 25], index int64, mirrored bool), with
  JSON-able ``get_state()`` / ``set_state()`` for exact resume. It reads one batch ahead on a
  background thread (the state counts only the batches returned).
  """
  import logging

  from jaxinv.data import eg3d_dataset as E

  data = _get(config, "data", None)
  path = str(_get(data, "path", ""))
  mirror = bool(_get(data, "mirror", False))
  resolution = _get(data, "resolution", None)
  resolution = None if resolution in (None, 0, "") else int(resolution)
  seed = int(_get(data, "seed", _get(config, "seed", 0)))
  fmt = str(_get(data, "format", "eg3d"))
  if not path:
    n = int(_get(data, "stand_in_size", 64))
    logging.getLogger(__name__).warning(
        "%s: config.data.path is empty; using a stand-in of %d procedural-world images "
        "(jaxinv.data.eg3d_dataset.world_stand_in)", task_name or "train", n)
    source = E.world_stand_in(n, resolution or 64, seed, mirror=mirror)
  elif fmt == "tfds":
    from jaxinv.data import tfds_eg3d
    source = tfds_eg3d.TFDSEG3D(str(_get(data, "name", "eg3d_images")), path, mirror=mirror,
                                resolution=resolution)
  elif fmt == "eg3d":
    source = E.EG3DDataset(path, mirror=mirror, resolution=resolution)
  else:
    raise ValueError(f"config.data.format must be 'eg3d' or 'tfds', got {fmt!r}")
  return E.DataIterator(source, int(batch_size) * int(process_count), seed=seed,
                        shuffle=bool(_get(data, "shuffle", True)), process_index=process_index,
                        process_count=process_count, normalize=True, prefetch=True)
