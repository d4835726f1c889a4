"""Shared test plumbing: where the golden fixtures live, how to load them, how to compare.

Fixtures are read from ``../shared/fixtures`` (beside the checkout, as in CI) or from
``$JAXINV_SHARED/fixtures``. Tests that need them skip with a clear message when the folder is
absent; nothing is ever copied into the repository.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("JAXINV_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def fixture_dir(name: str) -> pathlib.Path:
  """Path of ``fixtures/<name>``; skips the calling test when it is absent."""
  d = FIXTURES / name
  if not d.is_dir():
    pytest.skip(f"golden fixture folder {d} is absent (set JAXINV_SHARED to the shared/ folder)")
  return d


@functools.lru_cache(maxsize=None)
def _fixture_weights_module():
  path = FIXTURES / "fixture_weights.py"
  spec = importlib.util.spec_from_file_location("fixture_weights", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@functools.lru_cache(maxsize=None)
def encoder_fixture(name: str):
  """(config dict, state dict {key: np.ndarray}, io dict {name: np.ndarray}) of an encoder fixture.

  Cached per process: materialising the full-size weights takes seconds.
  """
  d = fixture_dir(name)
  cfg = json.loads((d / "config.json").read_text())
  sd = _fixture_weights_module().load_state_dict(str(d))
  with np.load(d / "io.npz") as z:
    io = {k: z[k] for k in z.files}
  return cfg, sd, io


@functools.lru_cache(maxsize=None)
def eg3d_fixture(name: str):
  """(config dict, state dict, stages dict) of ``fixtures/eg3d/<name>`` (tiny, ffhq512_slim)."""
  d = fixture_dir(f"eg3d/{name}")
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "state_dict.npz") as z:
    sd = {k: z[k] for k in z.files}
  with np.load(d / "stages.npz") as z:
    stages = {k: z[k] for k in z.files}
  return cfg, sd, stages


@pytest.fixture(scope="module", autouse=True)
def _free_memory_after_module():
  """Keeps one pytest process's memory flat across the suite: after each test module, drop every
  compiled executable (jax's caches grow with each new shape/config and are never evicted) and
  the full-size fixture weights cached above. ``tiny_eg3d``'s parameters stay cached (small)."""
  yield
  import gc
  import sys
  if "jax" in sys.modules:
    sys.modules["jax"].clear_caches()
  encoder_fixture.cache_clear()
  eg3d_fixture.cache_clear()
  gc.collect()


def nchw_to_nhwc(a):
  a = np.asarray(a)
  return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def assert_encoder_close(actual, expected, name: str = "", rel: float = 1e-4):
  """ENCODERS.md's recommended bound: |a - b| <= rel * max|b| + rel * |b| element-wise."""
  a = np.asarray(actual, np.float64)
  b = np.asarray(expected, np.float64)
  assert a.shape == b.shape, f"{name}: shape {a.shape} != expected {b.shape}"
  bound = rel * np.abs(b).max() + rel * np.abs(b)
  err = np.abs(a - b)
  worst = float((err - bound).max()) if err.size else 0.0
  assert np.all(err <= bound), (
      f"{name}: max |diff| {err.max():.3g} exceeds bound (max|ref| {np.abs(b).max():.3g}, "
      f"worst excess {worst:.3g})")
