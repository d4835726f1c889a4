"""`jaxinv generate`: help text, argument errors, and a real run on the random-init preset."""
import numpy as np
import pytest
from PIL import Image

from jaxinv.cli import main


def test_generate_help_teaches(capsys):
  with pytest.raises(SystemExit) as e:
    main(["generate", "--help"])
  assert e.value.code == 0
  text = capsys.readouterr().out
  for needle in ("--preset", "tiny-random", "radians", "seedNNNN_depth.png", "--video-format"):
    assert needle in text


def test_generate_refuses_missing_checkpoint():
  with pytest.raises(SystemExit, match="checkpoint"):
    main(["generate", "--seeds", "0"])
  with pytest.raises(SystemExit, match="seeds"):
    main(["generate", "--preset", "tiny-random", "--seeds", ","])


def test_generate_tiny_random_writes_grids_depth_and_video(tmp_path, capsys):
  out = tmp_path / "gen"
  rc = main(["generate", "--preset", "tiny-random", "--seeds", "0-1", "--yaws=-0.3,0.3",
             "--resolution", "16", "--video-frames", "2", "--video-format", "gif", "--batch", "2",
             "--no-progress", "--outdir", str(out)])
  assert rc == 0
  assert "randomly initialised" in capsys.readouterr().out
  img = np.asarray(Image.open(out / "seed0000.png"))
  assert img.shape == (128, 256, 3)  # two 128x128 views side by side
  assert img[:, :128].std() > 0 and np.abs(img[:, :128].astype(int) - img[:, 128:]).max() > 0
  depth = np.asarray(Image.open(out / "seed0001_depth.png"))
  assert depth.shape == (16, 32, 3) and depth.max() > depth.min()
  assert np.asarray(Image.open(out / "grid.png")).shape == (256, 256, 3)
  gif = Image.open(out / "seed0000_sweep.gif")
  assert gif.n_frames == 2
