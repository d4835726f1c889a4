"""A TFDS copy of an EG3D-format dataset, written and read **without TensorFlow**.

The builder stores every image's original encoded bytes (PNG/JPEG, so TFDS never needs TensorFlow
to encode), its 25-number camera label and its file name in ``array_record`` files; the reader is
``tfds.data_source`` (random access; the image bytes are decoded with PIL here, as the folder reader does), wrapped so it yields exactly
the records of :class:`jaxinv.data.eg3d_dataset.EG3DDataset` and plugs into its
:class:`~jaxinv.data.eg3d_dataset.DataIterator` (per-process rows, checkpointable state).

Needs the ``tfds`` extra (``pip install "jaxinv[tfds]"``: tensorflow-datasets + array-record, no
TensorFlow). ``import jaxinv`` never imports this module; importing it imports TFDS only when a
function here is called.

    build_tfds("ffhq512.zip", data_dir="/data/tfds", name="ffhq512")   # once
    src = TFDSEG3D("ffhq512", data_dir="/data/tfds", mirror=True)       # in the trainer
    it = DataIterator(src, global_batch_size=32)
"""
from __future__ import annotations

import functools
import os

import numpy as np

from jaxinv.data.eg3d_dataset import EG3DDataset, decode_image, flip_yaw_np

_VERSION = "1.0.0"


def _tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:  # pragma: no cover - the extra is part of the test install
    raise ImportError('jaxinv.data.tfds_eg3d needs tensorflow-datasets and array-record: '
                      'pip install "jaxinv[tfds]"') from e
  return tfds


@functools.lru_cache(maxsize=None)
def _builder_class():
  tfds = _tfds()

  class EG3DImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """EG3D-format images with camera labels (one ``train`` split)."""

    VERSION = tfds.core.Version(_VERSION)
    RELEASE_NOTES = {_VERSION: "Images (original encoding), 25-number camera labels, file names."}

    def __init__(self, *, source: str | None = None, dataset_name: str = "eg3d_images",
                 **kwargs):
      self.name = dataset_name  # the folder under data_dir; set before the base class reads it
      self._source = source
      super().__init__(**kwargs)

    def _info(self):
      return self.dataset_info_from_configs(
          description="EG3D dataset_tool format: image + dataset.json camera label",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(None, None, 3)),
              "c": tfds.features.Tensor(shape=(25,), dtype=np.float32),
              "name": tfds.features.Text(),
          }),
          supervised_keys=None)

    def _split_generators(self, dl_manager):
      if self._source is None:
        raise ValueError("EG3DImages: pass source= (an EG3D folder or zip) to build the dataset")
      return {"train": self._generate_examples(self._source)}

    def _generate_examples(self, source):
      ds = EG3DDataset(source)
      for i, name in enumerate(ds.names):
        yield name, {"image": ds.read_encoded(i), "c": ds.raw_labels[i], "name": name}

  return EG3DImages


def build_tfds(source, data_dir, *, name: str = "eg3d_images"):
  """Write the TFDS copy of the EG3D dataset ``source`` (folder or zip) under ``data_dir/name``.

  Images keep their stored encoding (no re-encoding, no TensorFlow). Idempotent: an existing copy
  of the same version is reused. Returns the builder.
  """
  builder = _builder_class()(source=os.fspath(source), dataset_name=name,
                             data_dir=os.fspath(data_dir), file_format="array_record")
  builder.download_and_prepare()  # nothing is downloaded: _split_generators reads `source`
  return builder


class TFDSEG3D:
  """Random-access records of a TFDS copy made by :func:`build_tfds`.

  The same records and fields as :class:`~jaxinv.data.eg3d_dataset.EG3DDataset` with the same
  ``mirror`` / ``resolution`` options (record ``n + i`` is record ``i`` mirrored, same pixels), in
  TFDS's record order (TFDS shuffles by key at write time, deterministically), so the two readers
  are interchangeable under :class:`~jaxinv.data.eg3d_dataset.DataIterator`.
  """

  def __init__(self, name: str, data_dir, *, mirror: bool = False,
               resolution: int | None = None, split: str = "train"):
    builder = _builder_class()(dataset_name=name, data_dir=os.fspath(data_dir),
                               file_format="array_record")
    # Images come back as their stored bytes and are decoded here exactly as EG3DDataset decodes
    # them, so both readers give the same pixels.
    self._source = builder.as_data_source(
        split=split, decoders={"image": _tfds().decode.SkipDecoding()})
    self.mirror = bool(mirror)
    self.resolution = resolution
    self._meta = None

  def _metadata(self):
    # One pass over every record (their bytes are read, not decoded): only for names / labels.
    if self._meta is None:
      recs = (self._source[i] for i in range(len(self._source)))
      names, labels = zip(*((_text(r["name"]), np.asarray(r["c"], np.float32)) for r in recs))
      labels = np.stack(labels)
      labels.setflags(write=False)
      self._meta = (tuple(names), labels)
    return self._meta

  @property
  def names(self) -> tuple[str, ...]:
    """File names in record order (reads every record once, then cached)."""
    return self._metadata()[0]

  @property
  def raw_labels(self) -> np.ndarray:
    """Camera labels ``[n, 25]`` without mirrored copies (reads every record once, then cached)."""
    return self._metadata()[1]

  def __len__(self) -> int:
    return len(self._source) * (2 if self.mirror else 1)

  @property
  def labels(self) -> np.ndarray:
    """Camera labels of every record ``[len(self), 25]`` (mirrored copies flipped)."""
    if not self.mirror:
      return self.raw_labels
    return np.concatenate([self.raw_labels, flip_yaw_np(self.raw_labels)])

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"TFDS EG3D index {index} out of range [0, {len(self)})")
    n = len(self._source)
    raw, mirrored = index % n, index >= n
    rec = self._source[raw]
    image = decode_image(rec["image"], self.resolution)
    c = np.asarray(rec["c"], np.float32)
    if mirrored:
      image, c = np.ascontiguousarray(image[:, ::-1]), flip_yaw_np(c)
    return dict(image=image, c=c, name=_text(rec["name"]), mirrored=mirrored, index=index)


def _text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)

