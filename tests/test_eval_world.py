"""`jaxinv eval` end to end on a tiny world test set and a tiny EG3D-format dataset: outputs, the
benchmark script's numbers, resume, one-line errors.

The method is ``psp`` with a tiny random stand-in encoder (``_invert_helpers``): an encoder compiles
in seconds, while an optimisation baseline's loop takes minutes on a loaded 2-core machine; every
``jaxinv.invert`` method goes through the same evaluation code."""
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from _invert_helpers import psp_checkpoint, setup
from test_eval_metrics import NET
from jaxinv.cli import main
from jaxinv.data import world
from jaxinv.eval import run as eval_run
from jaxinv.eval import world_views
from jaxinv.inversion import invert as _invert
from jaxinv.inversion.invert import Weights

# The first evaluation compiles the tiny generator's render, the world renderer and the metrics.
pytestmark = pytest.mark.slow

OPTS = {}
METHOD = "psp"
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _inv_weights():
  return Weights(generator=setup()[0], encoder=psp_checkpoint())


def _weights():
  G = setup()[0]
  return eval_run.EvalWeights(invert=_inv_weights(), arcface=NET,
                              names=dict(generator="tiny_eg3d(0)", arcface="tiny random id net"))


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("eval") / "w"
  res = eval_run.evaluate(METHOD, "world", str(out), _weights(), num=2, batch=1,
                          yaws=(-0.6, 0.3, 0.8), options=OPTS, progress=False)
  return out, res


def test_world_eval_writes_table_plots_json(world_run):
  out, res = world_run
  for f in ("results.json", "results.md", "per_yaw.png", "grid.png", "items.jsonl", "run.json"):
    assert (out / f).is_file(), f
  assert res["items"] == 2 and res["skipped"] == []
  assert set(res["per_yaw"]) == {"-0.60", "+0.00", "+0.30", "+0.80"}
  for m in ("mse", "psnr", "ssim", "id"):
    assert res["input_view"][m] is not None, m
  assert "lpips" not in res["input_view"] and "ms_ssim" not in res["input_view"]
  for v in res["per_yaw"].values():
    assert set(v) == {"id", "psnr", "ssim", "depth_l1"}
  md = (out / "results.md").read_text()
  for needle in ("ID network: tiny random id net", "crop: psp", "128 px",
                 "LPIPS: not computed", "MS-SSIM: not computed", "skipped items (0): none"):
    assert needle in md, needle
  assert json.loads((out / "results.json").read_text())["input_view"] == res["input_view"]


def test_world_eval_equals_the_benchmark_code_path(world_run):
  out, _ = world_run
  spec = importlib.util.spec_from_file_location("world_novel_view",
                                                ROOT / "bench" / "world_novel_view.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  G = setup()[0]
  rows = [json.loads(l) for l in (out / "items.jsonl").read_text().splitlines()]
  zs = np.asarray(world.sample_z(jax.random.PRNGKey(bench.SEED), 2))
  # The benchmark's own loop for scene 0: one image, PRNGKey(0), then bench._score.
  z = zs[0]
  c_in = world.orbit_label(np.full(1, 0.0))
  image = world.render(z[None], c_in, resolution=G.config.img_resolution)["image"]
  inv = _invert.invert(image, pose=c_in, method=METHOD, weights=_inv_weights(),
                       key=jax.random.PRNGKey(0), **OPTS)
  ref = bench._score(lambda c: inv.render(c), z[None], 0.0, G)
  mine = rows[0]["views"]
  for off, key in (("+0.0", "+0.00"), ("+0.3", "+0.30"), ("-0.6", "-0.60")):
    for m in ("psnr", "ssim", "depth_l1"):
      assert mine[key][m] == pytest.approx(ref[off][m], rel=1e-6, abs=1e-7), (off, m)
  assert world_views.SEED == bench.SEED


def test_resume_skips_done_items(world_run, tmp_path):
  out, res = world_run
  calls = []

  def counting_invert(*a, **k):
    calls.append(1)
    return _invert.invert(*a, **k)

  kw = dict(num=2, batch=1, yaws=(-0.6, 0.3, 0.8), options=OPTS, progress=False,
            invert_fn=counting_invert)
  again = eval_run.evaluate(METHOD, "world", str(out), _weights(), **kw)
  assert calls == [] and again["input_view"] == res["input_view"]
  # An interrupted run: the last item's line is lost; only that item is redone.
  lines = (out / "items.jsonl").read_text().splitlines()
  (out / "items.jsonl").write_text(lines[0] + "\n" + lines[1][:20])
  again = eval_run.evaluate(METHOD, "world", str(out), _weights(), **kw)
  assert len(calls) == 1
  for k, v in res["input_view"].items():
    assert again["input_view"][k] == pytest.approx(v, rel=1e-6)
  with pytest.raises(ValueError, match="other settings"):
    eval_run.evaluate(METHOD, "world", str(out), _weights(), **{**kw, "num": 3})


def test_cli_on_an_eg3d_dataset(tmp_path, monkeypatch, capsys):
  """`jaxinv eval` over a dataset.json folder (loading files is jaxinv.api's, patched out here)."""
  from jaxinv.cli import eval as eval_cli
  from jaxinv.data.eg3d_dataset import write_eg3d_dataset
  G, c, target = setup()
  u8 = np.asarray(np.clip(np.rint((np.asarray(target) + 1) * 127.5), 0, 255), np.uint8)
  ds = write_eg3d_dataset(tmp_path / "ds", u8, np.asarray(c), names=["a.png", "b.png"])
  monkeypatch.setattr(eval_cli, "load_weights", lambda paths, method: _weights())
  out = tmp_path / "out"
  argv = ["eval", "--method", METHOD, "--data", str(ds), "--outdir", str(out), "--batch", "1",
          "--yaws=-0.3,0.3", "--no-progress"]
  assert main(argv) == 0, capsys.readouterr().err
  res = json.loads((out / "results.json").read_text())
  assert res["items"] == 2 and set(res["per_yaw"]) == {"-0.30", "+0.30"}
  assert set(res["per_yaw"]["+0.30"]) == {"id"}          # no ground truth off the world
  assert "| psp | 2 |" in capsys.readouterr().out
  for f in ("per_yaw.png", "grid.png", "previews/a_png.png"):
    assert (out / f).is_file(), f
  # A rerun with the same command finishes at once (nothing left to do) and agrees.
  monkeypatch.setattr(eval_run._invert, "invert", None)
  assert main(argv) == 0
  assert json.loads((out / "results.json").read_text())["input_view"] == res["input_view"]


@pytest.mark.parametrize("argv,needle", [
    (["--method", "nope", "--data", "world"], "--method: unknown 'nope'"),
    (["--method", "w", "--data", "missing_dir"], "--data: expected 'world'"),
    (["--method", "w", "--data", "world", "--num", "0"], "--num must be >= 1"),
    (["--method", "w", "--data", "world", "--weights", "foo=bar.npz"], "unknown key 'foo'"),
    (["--method", "w", "--data", "world", "--weights", "lpips=none.npz"], "no such file"),
    (["--method", "w", "--data", "world", "--yaws", "a,b"], "--yaws"),
])
def test_bad_arguments_are_one_line(argv, needle, tmp_path, capsys):
  rc = main(["eval", *argv, "--outdir", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip()
  assert rc == 1 and needle in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "o").exists()


def test_fid_and_kid_with_inception_weights(tmp_path):
  """FID/KID columns from Inception features; the inputs' features equal those of the world's own
  renders (an independent path), and the FID is ``metrics.fid`` of the stored features."""
  import dataclasses
  from jaxinv.eval import metrics
  from jaxinv.models import inception
  params = inception.init_params(jax.random.PRNGKey(0))   # random: FID weights can't be downloaded
  base = _weights()
  w = dataclasses.replace(base, inception=params, names={**base.names, "inception": "random"})
  out = tmp_path / "fid"
  res = eval_run.evaluate(METHOD, "world", str(out), w, num=3, batch=3, yaws=(0.3,),
                          options=OPTS, progress=False)
  G = setup()[0]
  zs = world.sample_z(jax.random.PRNGKey(world_views.SEED), 3)
  images = world.render(zs, world.orbit_label(np.zeros(3)), resolution=G.config.img_resolution)
  real = np.asarray(inception.features_jit(params, images["image"]))
  feats = [np.load(out / "features" / f"world-{i:05d}.npz") for i in range(3)]
  np.testing.assert_allclose(np.stack([f["input"] for f in feats]), real, rtol=1e-5, atol=1e-5)
  fake = np.stack([f["reconstruction"] for f in feats])
  assert res["input_view"]["fid"] == pytest.approx(metrics.fid(real, fake), rel=1e-6)
  assert res["input_view"]["kid"] == pytest.approx(metrics.kid(real, fake), rel=1e-6)
  assert {"fid", "kid"} <= set(res["per_yaw"]["+0.30"])
  md = (out / "results.md").read_text()
  assert "| FID |" in md and "KID" in md and "Inception-v3 pool3" in md


def test_cli_goae_on_an_eg3d_dataset_writes_table_plots_json(tmp_path, monkeypatch, capsys):
  """The issue's command, `jaxinv eval --method goae --data DATASET --outdir OUT`, with the tiny
  stand-in GOAE (the released files are not here; loading them is jaxinv.api's, patched out)."""
  from _invert_helpers import goae_model
  from jaxinv.cli import eval as eval_cli
  from jaxinv.data.eg3d_dataset import write_eg3d_dataset
  G, c, target = setup()
  u8 = np.asarray(np.clip(np.rint((np.asarray(target) + 1) * 127.5), 0, 255), np.uint8)
  ds = write_eg3d_dataset(tmp_path / "ds", u8, np.asarray(c), names=["a.png", "b.png"])
  w = eval_run.EvalWeights(invert=Weights(generator=G, encoder=goae_model()), arcface=NET,
                           names=dict(generator="tiny_eg3d(0)", encoder="tiny GOAE"))
  monkeypatch.setattr(eval_cli, "load_weights", lambda paths, method: w)
  out = tmp_path / "out"
  assert main(["eval", "--method", "goae", "--data", str(ds), "--outdir", str(out), "--batch", "2",
               "--yaws=-0.3,0.3", "--no-progress"]) == 0, capsys.readouterr().err
  for f in ("results.json", "results.md", "per_yaw.png", "grid.png"):
    assert (out / f).is_file(), f
  res = json.loads((out / "results.json").read_text())
  assert res["items"] == 2 and res["settings"]["method"] == "goae"
  assert "| goae | 2 |" in (out / "results.md").read_text()


def test_several_methods_in_one_table(tmp_path, monkeypatch, capsys):
  """`--method psp,goae`: each into OUT/<method>, then one table (rows = methods), a line per
  method in per_yaw.png and a row per method in grid.png; `--compare` rebuilds the same."""
  from PIL import Image
  from _invert_helpers import goae_model
  from jaxinv.cli import eval as eval_cli
  from jaxinv.data.eg3d_dataset import write_eg3d_dataset
  G, c, target = setup()
  u8 = np.asarray(np.clip(np.rint((np.asarray(target) + 1) * 127.5), 0, 255), np.uint8)
  ds = write_eg3d_dataset(tmp_path / "ds", u8, np.asarray(c), names=["a.png", "b.png"])
  enc = {"psp": psp_checkpoint(), "goae": goae_model()}
  monkeypatch.setattr(eval_cli, "load_weights", lambda paths, method: eval_run.EvalWeights(
      invert=Weights(generator=G, encoder=enc[method]), arcface=NET,
      names=dict(generator="tiny_eg3d(0)")))
  out = tmp_path / "table"
  assert main(["eval", "--method", "psp,goae", "--data", str(ds), "--outdir", str(out),
               "--batch", "2", "--yaws=-0.3,0.3", "--no-progress"]) == 0, capsys.readouterr().err
  md = (out / "results.md").read_text()
  assert "| psp | 2 |" in md and "| goae | 2 |" in md and "### ID" in md
  single = json.loads((out / "psp" / "results.json").read_text())
  both = json.loads((out / "results.json").read_text())
  assert both["runs"]["psp"]["input_view"] == single["input_view"]
  grid = Image.open(out / "grid.png")
  tile = np.asarray(Image.open(out / "psp" / "previews" / "a_png.png")).shape[0]
  assert grid.size[1] >= 2 * 2 * tile          # 2 items x 2 methods
  assert (out / "per_yaw.png").is_file()
  capsys.readouterr()
  assert main(["eval", "--compare", str(out / "psp"), str(out / "goae"), "--outdir",
               str(tmp_path / "again")]) == 0
  assert (tmp_path / "again" / "results.md").read_text() == md
  assert main(["eval", "--compare", str(tmp_path), "--outdir", str(tmp_path / "x")]) == 1
  assert "no results.json" in capsys.readouterr().err
  assert main(["eval", "--method", "psp,psp", "--data", str(ds), "--outdir", str(tmp_path / "y")]) == 1
  assert "twice" in capsys.readouterr().err
