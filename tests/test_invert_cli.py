"""`jaxinv invert` over a folder (one broken file: the others finish, it is reported) and
`jaxinv edit` on its latents; --help teaches the flow; bad arguments give one-line errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from _invert_helpers import setup
from jaxinv.cli import main
from jaxinv.inversion.directions import EditDirection
from jaxinv.inversion.result import Inversion

OPTS = ["--option", "steps=6", "--option", "lr=0.003", "--option", "num_w_samples=256",
        "--option", "initial_noise_factor=0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  from jaxinv.convert import eg3d as eg3d_convert
  G, c, target = setup()
  d = tmp_path_factory.mktemp("cli")
  gen = d / "G.npz"
  eg3d_convert.save(G, gen)
  photos = d / "photos"
  photos.mkdir()
  u8 = np.asarray(np.clip(np.rint((np.asarray(target) + 1) * 127.5), 0, 255), np.uint8)
  Image.fromarray(u8[0]).save(photos / "a.png")
  Image.fromarray(u8[1]).save(photos / "b.png")
  (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  labels = {"labels": [[n, np.asarray(c[i % 2]).tolist()] for i, n in
                       enumerate(["a.png", "b.png", "broken.png"])]}
  (d / "dataset.json").write_text(json.dumps(labels))
  return d


def test_invert_folder_with_a_broken_file(folder, capsys):
  out = folder / "out"
  rc = main(["invert", str(folder / "photos"), "--method", "w", "--generator",
             str(folder / "G.npz"), "--pose", str(folder / "dataset.json"), "--outdir", str(out),
             "--batch", "2", "--mesh-resolution", "16", "--video-frames", "2",
             "--video-format", "gif", "--no-progress", *OPTS])
  err = capsys.readouterr().err
  assert rc == 1 and "broken.png" in err
  summary = json.loads((out / "summary.json").read_text())
  assert summary["images"] == 3 and summary["failed"] == 1
  by = {os.path.basename(r["source"]): r for r in summary["results"]}
  assert by["broken.png"]["status"] == "error" and by["broken.png"]["stage"] == "read"
  for name in ("a", "b"):
    r = by[f"{name}.png"]
    assert r["status"] == "ok" and r["seconds"]["invert"] > 0
    for f in ("crop.png", "reconstruction.png", "depth.png", "views.png", "mesh.ply",
              "video.gif", "latents.npz"):
      assert (out / name / f).is_file(), f
  inv = Inversion.load(out / "a" / "latents.npz", setup()[0])
  assert inv.method == "w" and inv.ws.shape == (1, 14, 512)
  # Outputs are never replaced silently.
  rc = main(["invert", str(folder / "photos" / "a.png"), "--method", "w", "--generator",
             str(folder / "G.npz"), "--pose", "front", "--outdir", str(out), *OPTS])
  assert rc == 1 and "already exists" in capsys.readouterr().err


def test_edit_cli(folder, capsys):
  latents = folder / "out" / "a" / "latents.npz"
  if not latents.exists():
    pytest.skip("needs test_invert_folder_with_a_broken_file's outputs")
  d = EditDirection(np.random.default_rng(0).standard_normal(512)).save(folder / "d.npz")
  out = folder / "edit"
  rc = main(["edit", str(latents), "--direction", d, "--alpha=0,1", "--outdir", str(out),
             "--views", "0.3"])
  assert rc == 0, capsys.readouterr().err
  for f in ("edit_p0.png", "edit_p1.png", "edit_p1_views.png", "edit_p1.npz", "strip.png"):
    assert (out / f).is_file(), f
  rec = np.asarray(Image.open(folder / "out" / "a" / "reconstruction.png"))
  np.testing.assert_array_equal(np.asarray(Image.open(out / "edit_p0.png")), rec)
  rc = main(["edit", str(latents), "--direction", str(folder / "none.npz"), "--outdir", str(out)])
  assert rc == 1 and "--direction: no such file" in capsys.readouterr().err


def test_help_and_bad_arguments(folder, capsys):
  with pytest.raises(SystemExit):
    main(["invert", "--help"])
  text = capsys.readouterr().out
  for word in ("mesh.ply", "--pose", "jaxinv edit", "summary.json", "photo to a mesh"):
    assert word in text, word
  cases = [
      (["invert", str(folder / "nothing"), "--outdir", str(folder / "o2")], "input: no such file"),
      (["invert", str(folder / "photos"), "--method", "w", "--outdir", str(folder / "o3"),
        "--option", "steps"], "--option: expected KEY=VALUE"),
      (["invert", str(folder / "photos"), "--outdir", str(folder / "o4"), "--generator",
        str(folder / "none.pkl")], "--generator: no such file"),
      (["invert", str(folder / "photos"), "--outdir", str(folder / "o5"), "--pose",
        str(folder / "G.npz")], "--pose"),
      (["invert", str(folder / "photos"), "--outdir", str(folder / "o6"), "--views", "a,b"],
       "--views"),
  ]
  for argv, msg in cases:
    assert main(argv) == 1
    assert msg in capsys.readouterr().err, msg
