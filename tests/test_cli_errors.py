"""Every command: ordinary mistakes give one line and a non-zero exit (traceback only with --debug),
paths are checked before any slow work, and no user file is ever overwritten or deleted."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxinv.cli import SUBCOMMANDS, main


def _err_lines(capsys):
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert "Traceback" not in err
  return lines


@pytest.mark.parametrize("argv, needle", [
    (["preprocess", "NO_SUCH_DIR", "OUT"], "no such folder"),
    (["generate", "NO_SUCH.pkl", "--outdir", "OUT"], "no such checkpoint"),
    (["convert", "eg3d", "NO_SUCH.pkl", "out.npz"], "no such file"),
])
def test_missing_inputs_are_one_line(argv, needle, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  import jaxinv.api
  monkeypatch.setattr(jaxinv.api, "load_generator",
                      lambda *a, **k: pytest.fail("loading began before the path check"))
  assert main(argv) == 1
  lines = _err_lines(capsys)
  assert len(lines) == 1 and lines[0].startswith(f"jaxinv {argv[0]}: error:") and needle in lines[0]
  assert not (tmp_path / "OUT").exists()


def test_debug_flag_shows_the_traceback(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError):
    main(["--debug", "generate", "NO_SUCH.pkl"])
  with pytest.raises(FileNotFoundError):
    main(["generate", "NO_SUCH.pkl", "--debug"])


def test_preprocess_input_is_a_file(tmp_path, capsys):
  f = tmp_path / "photo.jpg"
  f.write_bytes(b"x")
  assert main(["preprocess", str(f), str(tmp_path / "out")]) == 1
  assert "not a folder" in _err_lines(capsys)[0]


def _photos(tmp_path, names=("a.png",)):
  from PIL import Image
  src = tmp_path / "in"
  src.mkdir()
  for n in names:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(src / n)
  return src


def test_preprocess_output_is_an_existing_file(tmp_path, capsys):
  src = _photos(tmp_path)
  out = tmp_path / "out"
  out.write_text("mine")
  assert main(["preprocess", str(src), str(out)]) == 1
  assert "not a folder" in _err_lines(capsys)[0]
  assert out.read_text() == "mine"


def test_preprocess_never_overwrites(tmp_path, capsys):
  src = _photos(tmp_path)
  out = tmp_path / "out"
  out.mkdir()
  (out / "dataset.json").write_text("mine")
  assert main(["preprocess", str(src), str(out)]) == 1
  line = _err_lines(capsys)[0]
  assert "already exists" in line and "--overwrite" in line
  assert (out / "dataset.json").read_text() == "mine"


def test_preprocess_output_inside_input_refused(tmp_path, capsys):
  src = _photos(tmp_path)
  assert main(["preprocess", str(src), str(src / "out")]) == 1
  assert "inside" in _err_lines(capsys)[0]


def test_generate_checks_outputs_before_building(tmp_path, capsys, monkeypatch):
  import jaxinv.models.eg3d as eg3d
  monkeypatch.setattr(eg3d, "tiny_eg3d", lambda *a, **k: pytest.fail("built before checking"))
  out = tmp_path / "gen"
  out.mkdir()
  (out / "grid.png").write_bytes(b"mine")
  assert main(["generate", "--preset", "tiny-random", "--seeds", "0", "--outdir", str(out)]) == 1
  line = _err_lines(capsys)[0]
  assert "grid.png" in line and "--overwrite" in line
  assert (out / "grid.png").read_bytes() == b"mine"
  # --outdir that is a file
  f = tmp_path / "file"
  f.write_text("mine")
  assert main(["generate", "--preset", "tiny-random", "--outdir", str(f)]) == 1
  assert "not a folder" in _err_lines(capsys)[0] and f.read_text() == "mine"
  # a folder given as the checkpoint
  assert main(["generate", str(tmp_path), "--outdir", str(tmp_path / "new")]) == 1
  assert "folder" in _err_lines(capsys)[0]


@pytest.mark.parametrize("seeds", ["x-y", "3-1", "1-2-3", "-4"])
def test_generate_seed_errors_name_the_flag(seeds, capsys):
  with pytest.raises(SystemExit) as e:
    main(["generate", "--preset", "tiny-random", f"--seeds={seeds}"])
  assert "--seeds" in str(e.value.code) and "invalid literal" not in str(e.value.code)


@pytest.mark.parametrize("flag", ["--batch=0", "--resolution=0", "--video-frames=-1"])
def test_generate_bad_numbers(flag):
  with pytest.raises(SystemExit) as e:
    main(["generate", "--preset", "tiny-random", flag])
  assert flag.split("=")[0] in str(e.value.code)


def test_convert_never_overwrites(tmp_path, capsys):
  src = tmp_path / "in.pkl"
  src.write_bytes(b"not a pickle")
  dst = tmp_path / "out.npz"
  dst.write_bytes(b"mine")
  assert main(["convert", "eg3d", str(src), str(dst)]) == 1
  assert "already exists" in _err_lines(capsys)[0]
  assert dst.read_bytes() == b"mine"
  assert main(["convert", "eg3d", str(src), str(src), "--overwrite"]) == 1
  assert "same file" in _err_lines(capsys)[0]
  assert src.read_bytes() == b"not a pickle"
  # a refused file with --overwrite: one line, and the old output is still there
  assert main(["convert", "eg3d", str(src), str(dst), "--overwrite"]) == 1
  assert len(_err_lines(capsys)) == 1
  assert dst.read_bytes() == b"mine"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pkl", "out.npz"]


def test_save_native_leaves_no_temp_and_spares_user_tmp(tmp_path):
  from jaxinv.convert import common
  dst = tmp_path / "x.npz"
  (tmp_path / "x.npz.tmp").write_text("mine")
  common.save_native(dst, "k", {}, {"a": np.zeros(2)})
  assert (tmp_path / "x.npz.tmp").read_text() == "mine"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "x.npz.tmp"]


def test_every_command_gets_debug():
  for name in SUBCOMMANDS:
    with pytest.raises(SystemExit) as e:
      main([name, "--help"])
    assert e.value.code == 0


def test_console_entry_point_one_line(tmp_path):
  """The real process: exit status 1 and exactly one stderr line."""
  p = subprocess.run([sys.executable, "-m", "jaxinv.cli", "generate", str(tmp_path / "no.pkl")],
                     capture_output=True, text=True, timeout=120, cwd=tmp_path)
  assert p.returncode == 1
  assert p.stderr.strip().count("\n") == 0 and "no such checkpoint" in p.stderr


# --- preprocess output names and honest counts (issue 16 item 3) ---------------------------------

def _fake_results(monkeypatch, in_dir):
  from jaxinv.preprocess import pipeline, pose

  def fake(folder, **kw):
    for i, p in enumerate(pipeline.list_images(folder)):
      crop = np.full((8, 8, 3), i, np.uint8)
      c = np.zeros(25, np.float32)
      c[3] = 0.1 * (i + 1)
      info = pipeline.FaceInfo(np.zeros(4), np.zeros((5, 2)), 0.99, 1,
                               pose.Pose(0.1 * i, 0.0, 0.0), 0.0, None)
      yield pipeline.Result(p, crop, c, info, None)

  monkeypatch.setattr(pipeline, "preprocess_folder", fake)


def test_preprocess_same_stem_keeps_both(tmp_path, monkeypatch, capsys):
  from PIL import Image
  src = _photos(tmp_path, ("face.png", "face.jpg", "other.png"))
  _fake_results(monkeypatch, src)
  out = tmp_path / "out"
  assert main(["preprocess", str(src), str(out), "--mirror"]) == 0
  labels = json.loads((out / "dataset.json").read_text())["labels"]
  names = [n for n, _ in labels]
  assert len(set(names)) == len(names) == 6
  assert {"face_png.png", "face_jpg.png", "other.png"} <= set(names)
  files = {p.name for p in out.iterdir()} - {"dataset.json", "preprocess_report.json"}
  assert files == set(names)
  # each crop is the one of its own source
  report = json.loads((out / "preprocess_report.json").read_text())
  assert report["faces"]["face_jpg.png"]["source"] == "face.jpg"
  assert report["processed"] == 3 and report["labels"] == 6
  assert "3 of 3 photos" in capsys.readouterr().out


def test_preprocess_unresolvable_clash_is_refused(tmp_path, monkeypatch, capsys):
  src = _photos(tmp_path, ("face.png", "face.jpg", "face_jpg.png"))
  _fake_results(monkeypatch, src)
  assert main(["preprocess", str(src), str(tmp_path / "out")]) == 1
  assert "clash" in _err_lines(capsys)[0]
  assert not (tmp_path / "out").exists()
