"""`jaxinv invert --demo`: a procedural-world scene through the built-in toy generator, scored
against the world's exact views (the issue's CI check), and its argument errors."""
import json

import numpy as np
import pytest

from jaxinv.cli import main


@pytest.mark.slow
def test_demo_writes_every_output_and_scores_against_the_truth(tmp_path, capsys):
  out = tmp_path / "demo"
  argv = ["invert", "--demo", "--outdir", str(out), "--option", "steps=5", "--mesh-resolution", "32",
          "--video-frames", "4", "--video-format", "gif", "--views=-0.3,0.3"]
  assert main(argv) == 0, capsys.readouterr().err
  for f in ("input.png", "reconstruction.png", "views.png", "depth.png", "mesh.ply", "video.gif",
            "latents.npz", "metrics.json"):
    assert (out / f).stat().st_size > 0, f
  m = json.loads((out / "metrics.json").read_text())
  assert m["method"] == "w" and m["options"] == {"steps": 5}
  assert set(m["views"]) == {"-0.30", "+0.00", "+0.30"}
  for v in m["views"].values():
    assert np.isfinite(v["psnr"]) and 5 < v["psnr"] < 60 and 0 <= v["depth_l1"] < 2.7
  from PIL import Image
  assert Image.open(out / "views.png").size == (3 * 128, 2 * 128)   # inversion over truth
  assert "demo (w): PSNR by yaw offset" in capsys.readouterr().out
  # Nothing is overwritten without --overwrite.
  assert main(argv) == 1
  assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["invert", "--demo", "img.png"], "--demo takes no input"),
    (["invert", "--demo", "--generator", "g.pkl"], "--generator"),
    (["invert"], "input: give an image file or folder (or --demo"),
    (["invert", "--demo", "--video-frames", "-1"], "--video-frames must be >= 0"),
])
def test_demo_argument_errors_are_one_line(argv, needle, tmp_path, capsys):
  rc = main([*argv, "--outdir", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip()
  assert rc == 1 and needle in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "o").exists()
