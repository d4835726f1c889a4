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
import tempfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# XLA's persistent compilation cache, shared by both xdist workers and every subprocess test
# (they inherit the environment): many modules compile the same functions (``tiny_eg3d``'s
# initialisation alone is ~40 s of compiling per process, ~3 s from the cache). Keys hash the
# program, the compile options and the jax version, so a stale entry is never reused. Set before
# any test module imports jax; ``JAX_COMPILATION_CACHE_DIR`` already set wins.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"jaxinv-tests-xla-cache-{os.getuid()}"))
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


@functools.lru_cache(maxsize=2)
def encoder_fixture(name: str):
  """(config dict, state dict {key: np.ndarray}, io dict {name: np.ndarray}) of an encoder fixture.

  Cached per process, two at a time: materialising the full-size weights takes seconds, and
  holding every fixture at once would take ~4 GB.
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


# Modules that take minutes (subprocess training runs): scheduled first, so that with
# ``-n 2 --dist loadfile`` the two workers finish together instead of one waiting on the other.
HEAVY_FIRST = ("test_train_goae.py", "test_train_tasks.py", "test_nerf3de_train.py",
               "test_train_triplanenet.py", "test_notebooks_editing_training.py",
               "test_notebooks.py", "test_invert_optimize.py", "test_invert_cli.py",
               "test_eval_world.py", "test_train_export.py", "test_eval_sharded.py",
               "test_goae_pipeline.py", "test_encoders_psp.py", "test_render_sharding.py",
               "test_invert_api.py", "test_zignerf_train.py", "test_giraffe.py")


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda it: rank.get(it.path.name, len(rank)))   # stable: order within a file kept


def _malloc_trim():
  """Hands freed heap pages back to the OS (glibc keeps them otherwise, so one module's peak
  would stay resident for the rest of the worker's life)."""
  try:
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def _rss_log(module: str):
  """``$JAXINV_TEST_RSS_LOG``: append this process's resident and peak memory after a module."""
  path = os.environ.get("JAXINV_TEST_RSS_LOG")
  if not path:
    return
  with open("/proc/self/status") as f:
    kb = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "VmHWM"))}
  with open(path, "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "module": module, "rss_gib": kb["VmRSS"] / 2**20,
                        "peak_gib": kb["VmHWM"] / 2**20}) + "\n")


@pytest.fixture(scope="module", autouse=True)
def _free_memory_after_module(request):
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
  _malloc_trim()
  _rss_log(request.module.__name__)


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
