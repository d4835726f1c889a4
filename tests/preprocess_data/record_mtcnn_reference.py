"""Records the reference MTCNN's boxes and landmarks once, for tests/test_preprocess_mtcnn.py.

The reference (the `mtcnn` 1.0.0 package on TensorFlow, the detector EG3D's batch_mtcnn.py uses)
is not a test dependency, so its outputs are stored in ``mtcnn_reference.json``. How they were made:

  # 1. main environment (jaxinv + scikit-image): write the test images
  python tests/preprocess_data/record_mtcnn_reference.py dump /tmp/mtcnn_inputs.npz
  # 2. throwaway environment with the reference:
  python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu mtcnn==1.0.0
  /tmp/tfvenv/bin/python tests/preprocess_data/record_mtcnn_reference.py record \
      /tmp/mtcnn_inputs.npz tests/preprocess_data/mtcnn_reference.json

Recorded with tensorflow-cpu 2.21.0, mtcnn 1.0.0, numpy float64 box arithmetic, CPU.
"""
import json
import sys

import numpy as np


def test_images(faces=None) -> dict:
  """name -> uint8 [H, W, 3]: the photos the parity test runs (built the same way there)."""
  import pathlib
  import skimage.data
  from PIL import Image
  here = pathlib.Path(__file__).resolve()
  faces = pathlib.Path(faces) if faces else here.parents[3] / "shared" / "fixtures" / "faces"
  out = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee()}
  for f in ("goae_1.jpg", "goae_11.jpg", "triplanenet_example.png"):
    out[f] = np.asarray(Image.open(faces / f).convert("RGB"))
  out["group"] = group_photo(out["astronaut"], out["goae_1.jpg"])
  return out


def group_photo(astronaut: np.ndarray, crop: np.ndarray) -> np.ndarray:
  """Two faces of different sizes side by side: the astronaut (about 85 px wide) and a
  downscaled aligned crop (face about 45 px wide) on a grey canvas."""
  from PIL import Image
  small = np.asarray(Image.fromarray(crop).resize((160, 160), Image.BILINEAR))
  canvas = np.full((360, 560, 3), 128, np.uint8)
  canvas[:, :300] = astronaut[20:380, 100:400]
  canvas[100:260, 380:540] = small
  return canvas


def dump(path):
  np.savez(path, **test_images())


def record(inputs, out_path):
  from mtcnn import MTCNN
  det = MTCNN()
  result = {}
  with np.load(inputs) as z:
    for name in z.files:
      img = z[name]
      res = det.detect_faces(img, output_type="numpy", box_format="xyxy")
      res = np.asarray(res, np.float64).reshape(-1, 16) if len(res) else np.zeros((0, 16))
      result[name] = {
          "shape": list(img.shape),
          "boxes": res[:, 1:5].tolist(),       # x1, y1, x2, y2 (fitted to the image)
          "scores": res[:, 5].tolist(),
          "landmarks_x": res[:, 6:11].tolist(),
          "landmarks_y": res[:, 11:16].tolist(),
      }
      print(name, len(res))
  with open(out_path, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  if sys.argv[1] == "dump":
    dump(sys.argv[2])
  else:
    record(sys.argv[2], sys.argv[3])
