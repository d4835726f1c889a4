"""MTCNN port: weight reading, building blocks against brute force, parity with the reference.

Parity: the reference (the `mtcnn` 1.0.0 package on TensorFlow, EG3D's detector) is not installed
in the test environment, so its boxes, scores and landmarks were recorded once into
``tests/preprocess_data/mtcnn_reference.json`` by ``tests/preprocess_data/record_mtcnn_reference.py``
(its docstring has the commands); the tests compare against that recording only, so they run
(and can fail) in CI without TensorFlow. Measured difference on the recorded images: at most 0.0017 px (boxes and
landmarks), 4e-7 in confidence.
"""
import functools
import importlib.util
import io
import json
import pathlib
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fixture_dir
from jaxinv.preprocess import mtcnn

HERE = pathlib.Path(__file__).resolve().parent
REF = HERE / "preprocess_data" / "mtcnn_reference.json"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mtcnn") is None,
                                reason='MTCNN weights absent: pip install "jaxinv[faces]"')


@functools.lru_cache(maxsize=None)
def _images():
  import sys
  sys.path.insert(0, str(HERE / "preprocess_data"))
  import record_mtcnn_reference as rec
  return rec.test_images(fixture_dir("faces"))


def test_weights_load_with_expected_shapes():
  p = mtcnn.load_params()
  assert p["pnet"]["params"]["conv1"]["kernel"].shape == (3, 3, 3, 10)
  assert p["rnet"]["params"]["fc4"]["kernel"].shape == (576, 128)
  assert p["onet"]["params"]["fc6_2"]["kernel"].shape == (256, 10)
  assert p["onet"]["params"]["prelu5"]["alpha"].shape == (256,)


def test_weight_reader_refuses_foreign_globals(tmp_path):
  class Evil:
    def __reduce__(self):
      import os
      return (os.system, ("echo pwned",))
  f = tmp_path / "evil.pkl"
  f.write_bytes(pickle.dumps([Evil()]))
  with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|refusing"):
    mtcnn.read_joblib_arrays(f)


def test_missing_weights_name_the_pip_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="pip install"):
    mtcnn.load_params(str(tmp_path))


def test_area_resize_matches_brute_force():
  rng = np.random.RandomState(0)
  img = rng.rand(13, 17, 2).astype(np.float32)
  out = mtcnn.area_resize(img, 9, 5)
  ref = np.zeros((9, 5, 2))
  for oy in range(9):
    for ox in range(5):
      sy, sx = 13 / 9, 17 / 5
      acc = 0
      for iy in range(13):
        wy = max(0, min(iy + 1, (oy + 1) * sy) - max(iy, oy * sy))
        for ix in range(17):
          wx = max(0, min(ix + 1, (ox + 1) * sx) - max(ix, ox * sx))
          acc = acc + wy * wx * img[iy, ix]
      ref[oy, ox] = acc / (sy * sx)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_crop_and_resize_identity_and_outside():
  img = np.random.RandomState(1).rand(10, 10, 3).astype(np.float32)
  out = mtcnn.crop_and_resize(img, np.array([[0, 0, 1, 1], [2, 2, 3, 3]]), 10)
  np.testing.assert_allclose(out[0], img, atol=1e-6)
  assert np.all(out[1] == 0)  # a box entirely outside: TF's extrapolation value 0


def test_pnet_padding_mask_is_exact():
  p = mtcnn.load_params()["pnet"]
  x = np.random.RandomState(2).randn(1, 27, 31, 3).astype(np.float32)
  f = mtcnn._pnet_fn()  # jitted; valid = the full size masks nothing
  reg, prob = f(p, jnp.asarray(x), jnp.asarray([27, 31]))
  xp = np.zeros((1, 40, 40, 3), np.float32)
  xp[:, :27, :31] = x
  reg2, prob2 = f(p, jnp.asarray(xp), jnp.asarray([27, 31]))
  h, w = prob.shape[1:]
  np.testing.assert_allclose(prob2[:, :h, :w], prob, atol=1e-6)
  np.testing.assert_allclose(reg2[:, :h, :w], reg, atol=1e-6)


def test_nms_counts_suppressed_boxes_as_the_reference():
  rows = np.array([[0, 0, 10, 10, 0.9], [3, 0, 13, 10, 0.8], [6, 0, 16, 10, 0.7]], float)
  # box 1 overlaps box 0 (IoU 0.54); box 2 overlaps only box 1, which was itself suppressed.
  kept = mtcnn.nms(rows, 0.5)
  assert kept[:, 4].tolist() == [0.9]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "goae_1.jpg", "goae_11.jpg",
                                  "triplanenet_example.png", "group"])
def test_parity_with_recorded_reference(name):
  ref = json.loads(REF.read_text())[name]
  img = _images()[name]
  assert list(img.shape) == ref["shape"]
  d = mtcnn.detect_faces(img)
  assert len(d.scores) == len(ref["scores"])
  if not len(d.scores):
    return
  lm = np.stack([np.array(ref["landmarks_x"]), np.array(ref["landmarks_y"])], -1)
  np.testing.assert_allclose(d.boxes, np.array(ref["boxes"]), atol=0.01)
  np.testing.assert_allclose(d.landmarks, lm, atol=0.01)
  np.testing.assert_allclose(d.scores, np.array(ref["scores"]), atol=1e-4)
