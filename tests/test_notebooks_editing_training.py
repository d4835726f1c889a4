"""Notebooks 02 (editing) and 03 (training an encoder) run top to bottom (``tests/_notebooks.py``)."""
import json

import pytest

import _notebooks as N


@pytest.mark.slow
def test_editing_runs(tmp_path):
  out = N.run(N.path("02_editing"), tmp_path)
  assert N.shown_images(out) == 2
  assert (tmp_path / "out" / "head_width.npz").exists()


@pytest.mark.slow
def test_train_an_encoder_runs_and_its_loss_falls(tmp_path):
  N.run(N.path("03_train_an_encoder"), tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "runs" / "psp_toy" / "metrics.jsonl").open()]
  assert [r["step"] for r in rows] == [1, 5, 10, 15]
  assert rows[-1]["loss"] < rows[0]["loss"]
  assert any((tmp_path / "runs" / "psp_toy" / "tensorboard").iterdir())
  assert (tmp_path / "runs" / "psp_toy" / "encoder.npz").stat().st_size > 0
