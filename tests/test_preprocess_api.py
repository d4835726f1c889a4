"""jaxinv.preprocess and `jaxinv preprocess`: real photos, bad inputs, several faces, the CLI."""
import functools
import importlib.util
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

import jaxinv
from jaxinv.cli import main as cli_main
from jaxinv.preprocess import mtcnn

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mtcnn") is None,
                                reason='MTCNN weights absent: pip install "jaxinv[faces]"')


@functools.lru_cache(maxsize=None)
def _astronaut():
  return jaxinv.preprocess(skimage.data.astronaut(), return_info=True)


def test_uncropped_photo_one_face_plausible_pose():
  crop, c, info = _astronaut()
  assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
  assert c.shape == (25,) and c.dtype == np.float32
  assert info.n_faces == 1 and info.confidence > 0.99
  yaw, pitch, roll = np.degrees(info.pose)
  assert abs(yaw) < 15 and -5 < pitch < 25 and abs(roll) < 10, (yaw, pitch, roll)
  np.testing.assert_allclose(np.linalg.norm(c[[3, 7, 11]]), 2.7, rtol=1e-5)
  # the face fills the crop as in EG3D: eyes at about 45% height, centred
  lm = info.alignment.to_crop(info.landmarks)
  assert abs(lm[:2, 0].mean() - 256) < 25 and 200 < lm[:2, 1].mean() < 260


def test_no_face_gives_clear_error():
  with pytest.raises(mtcnn.NoFaceError, match="no face"):
    jaxinv.preprocess(skimage.data.coffee())


def test_output_size_and_path_and_pil_inputs(tmp_path):
  img = skimage.data.astronaut()
  p = tmp_path / "a.png"
  Image.fromarray(img).save(p)
  crop_p, c_p = jaxinv.preprocess(str(p), output_size=128)
  crop_i, c_i = jaxinv.preprocess(Image.open(p), output_size=128)
  assert crop_p.shape == (128, 128, 3)
  np.testing.assert_array_equal(crop_p, crop_i)
  np.testing.assert_allclose(c_p, _astronaut()[1], atol=1e-6)


def test_grayscale_rgba_16bit_are_handled():
  img = skimage.data.astronaut()
  gray = np.asarray(Image.fromarray(img).convert("L"))
  rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], -1)
  deep = img.astype(np.uint16) * 257
  _, c_ref, _ = _astronaut()
  _, c_rgba = jaxinv.preprocess(rgba)
  np.testing.assert_allclose(c_rgba, c_ref, atol=1e-6)
  _, c_16 = jaxinv.preprocess(deep)
  np.testing.assert_allclose(c_16, c_ref, atol=1e-6)
  crop_g, c_g = jaxinv.preprocess(gray)
  assert crop_g.shape == (512, 512, 3)
  # grey pixels move the landmarks by a pixel or two; the view direction by 3.8 deg (measured)
  assert np.degrees(np.abs(np.arccos(np.clip(c_g[[2, 6, 10]] @ c_ref[[2, 6, 10]], -1, 1)))) < 6
  _, c_pil16 = jaxinv.preprocess(Image.fromarray(deep[..., 0]))  # PIL 'I;16' grayscale
  assert c_pil16.shape == (25,)


def test_bad_inputs_are_named(tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_text("not an image")
  with pytest.raises(ValueError, match="cannot read"):
    jaxinv.preprocess(bad)
  with pytest.raises(FileNotFoundError, match="no such file"):
    jaxinv.preprocess(tmp_path / "missing.png")
  with pytest.raises(TypeError, match="uint8"):
    jaxinv.preprocess(np.zeros((64, 64, 3), np.float32))
  with pytest.raises(ValueError, match="too small"):
    jaxinv.preprocess(np.zeros((12, 40, 3), np.uint8))
  with pytest.raises(ValueError, match="expected"):
    jaxinv.preprocess(np.zeros((64, 64, 2), np.uint8))
  with pytest.raises(mtcnn.NoFaceError):  # small but valid: runs and finds nothing
    jaxinv.preprocess(np.full((24, 24, 3), 128, np.uint8))


def test_several_faces_largest_chosen_and_reported():
  img = skimage.data.astronaut()
  small = np.asarray(Image.fromarray(img[20:380, 100:400]).resize((150, 180)))
  canvas = np.full((400, 620, 3), 128, np.uint8)
  canvas[20:380, 0:300] = img[20:380, 100:400]
  canvas[110:290, 420:570] = small
  crop, c, info = jaxinv.preprocess(canvas, return_info=True)
  assert info.n_faces == 2
  assert info.box[0] < 300  # the big face, on the left
  np.testing.assert_allclose(np.degrees(info.pose[:2]), np.degrees(_astronaut()[2].pose[:2]), atol=3)


def test_cli_writes_eg3d_dataset(tmp_path, capsys):
  src = tmp_path / "in"
  (src / "sub").mkdir(parents=True)
  Image.fromarray(skimage.data.astronaut()).save(src / "astro.jpg")
  Image.fromarray(skimage.data.coffee()).save(src / "sub" / "coffee.png")
  (src / "broken.png").write_bytes(b"\x89PNG nope")
  out = tmp_path / "out"
  assert cli_main(["preprocess", str(src), str(out), "--mirror", "--size", "256"]) == 0
  labels = json.loads((out / "dataset.json").read_text())["labels"]
  assert [n for n, _ in labels] == ["astro.png", "astro_mirror.png"]
  assert all(len(c) == 25 for _, c in labels)
  assert Image.open(out / "astro.png").size == (256, 256)
  report = json.loads((out / "preprocess_report.json").read_text())
  reasons = {s["file"]: s["reason"] for s in report["skipped"]}
  assert set(reasons) == {"broken.png", "sub/coffee.png"}
  assert "no face" in reasons["sub/coffee.png"] and "cannot read" in reasons["broken.png"]
  m = np.asarray(labels[1][1])
  assert m[3] == pytest.approx(-labels[0][1][3])  # mirrored camera: x position flips
  assert "skipped" in capsys.readouterr().out
