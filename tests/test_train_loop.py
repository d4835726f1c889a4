"""The train loop on the seconds-fast ``debug`` task: resume, kills, sharding, processes, errors.

Heavy checks run in subprocesses (fake CPU devices must be set before jax starts); each one
compiles only the tiny debug step.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxinv.train as T
from jaxinv.train.loop import NonFiniteError

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _train_worker import debug_config, flat, write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """24 random 8x8 images in EG3D format: the debug task reads x from them (host data path)."""
  return write_dataset(str(tmp_path_factory.mktemp("data") / "ds"))


def _env(devices=1, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _cli(args, env=None, timeout=240):
  return subprocess.run([sys.executable, "-m", "jaxinv.train", *args], cwd=ROOT, env=env or _env(),
                        capture_output=True, text=True, timeout=timeout)


def _rows(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _same_params(a, b, atol=0.0):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    if atol == 0.0:
      np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    else:
      np.testing.assert_allclose(fa[k], fb[k], atol=atol, rtol=0, err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset):
  """An uninterrupted 20-step run (in this process) on real (host) data."""
  wd = str(tmp_path_factory.mktemp("ref"))
  out = T.train_and_evaluate(debug_config(total_steps=20, checkpoint_every=5, data_path=dataset,
                                          tensorboard=True, preview_every=10), wd)
  return wd, out


def test_run_writes_metrics_checkpoints_and_tensorboard(reference):
  wd, out = reference
  rows = _rows(wd)
  assert [r["step"] for r in rows] == [1, 5, 10, 15, 20]   # the first step, then every 5
  for r in rows:
    assert {"loss", "mse", "loss_net", "grad_norm_net"} <= set(r)
  # The lazy phase (every 2 steps) is logged only on the steps it ran (step index 0, 4, 14 ...).
  assert ["critic_gap" in r for r in rows] == [True, True, False, True, False]
  assert out["step"] == 20 and out["loss"] == rows[-1]["loss"]
  assert rows[-1]["mse"] < rows[0]["mse"]
  ck = T.load_checkpoint(wd)
  assert ck["step"] == 20 and set(ck["params"]) == {"net", "critic"}
  assert T.load_checkpoint(wd, step=15)["step"] == 15
  with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
    T.load_checkpoint(wd, step=7)
  events = list((pathlib.Path(wd) / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0


def test_init_from_starts_from_another_runs_params_and_model_state(reference, tmp_path):
  """``init_from``: a fresh workdir starts from the other run's latest params and model_state
  (e.g. BatchNorm running statistics) at step 0; the other run is left as it was."""
  ref_wd, _ = reference
  src = T.load_checkpoint(ref_wd)
  assert float(np.abs(np.asarray(src["model_state"]["hidden_mean"])).max()) > 0
  wd = str(tmp_path / "ft")
  T.train_and_evaluate(debug_config(total_steps=1, checkpoint_every=1, init_from=ref_wd,
                                    lr=0.0), wd)
  ck = T.load_checkpoint(wd)
  assert ck["step"] == 1
  # lr 0: the net is the source's exactly; the running mean moved one EMA step from the source's.
  _same_params(ck["params"]["net"], src["params"]["net"])
  a, b = np.asarray(ck["model_state"]["hidden_mean"]), np.asarray(src["model_state"]["hidden_mean"])
  assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.5 * np.abs(b).max()
  assert T.load_checkpoint(ref_wd)["step"] == 20


def test_sigkill_after_checkpoint_and_during_save_resumes_bit_identical(reference, dataset,
                                                                          tmp_path):
  """Params, metrics and the data position (the host iterator state is checkpointed)."""
  ref_wd, _ = reference
  wd = str(tmp_path / "run")
  args = ["--config", "configs/debug.py", "--workdir", wd, "--config.total_steps=20",
          f"--config.data.path={dataset}",
          "--config.checkpoint_every=5", "--config.progress=False", "--config.tensorboard=False",
          "--config.preview_every=10"]
  # 1) killed at step 13, after the (synchronous) checkpoint of step 10 completed.
  r = _cli(args + ["--config.checkpoint_async=False"], _env(JAXINV_TRAIN_KILL_AT_STEP=13))
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
  assert T.load_checkpoint(wd)["step"] == 10
  # 2) resumed, then killed while the (async) checkpoint of step 15 is being written.
  r = _cli(args, _env(JAXINV_TRAIN_KILL_IN_SAVE=15))
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
  assert T.load_checkpoint(wd)["step"] in (10, 15)  # never a broken latest checkpoint
  # 3) resumed to the end.
  r = _cli(args)
  assert r.returncode == 0, r.stderr[-2000:]
  _same_params(T.load_checkpoint(wd)["params"], T.load_checkpoint(ref_wd)["params"])
  assert _rows(wd) == _rows(ref_wd)


def test_nan_guard_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path):
  wd = str(tmp_path)
  with pytest.raises(NonFiniteError, match=r"non-finite 'loss_net' at step 7.*step 5"):
    T.train_and_evaluate(debug_config(total_steps=20, checkpoint_every=5, nan_at_step=7), wd)
  assert T.load_checkpoint(wd)["step"] == 5


def test_cli_errors_are_one_line(tmp_path):
  r = _cli(["--config", "configs/debug.py", "--workdir", str(tmp_path), "--config.no_such=1"])
  assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
  assert "unknown config field 'no_such'" in r.stderr
  r = _cli(["--config", "configs/debug.py"])
  assert r.returncode == 2 and "--workdir is required" in r.stderr and "Traceback" not in r.stderr
  r = _cli(["--config", "configs/no_such_method.py", "--workdir", str(tmp_path)])
  assert r.returncode == 2 and "could not load the config file" in r.stderr
  assert "Traceback" not in r.stderr
  # A task's ValueError reaches the user whole (its closing quote too).
  r = _cli(["--config", "configs/triplanenet.py:runlocal", "--workdir", str(tmp_path / "t"),
            "--config.schedule.branch_order=v3"])
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1].endswith("must be 'paper' or 'v2', got 'v3'"), r.stderr


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory, dataset):
  out = tmp_path_factory.mktemp("devices")
  r = subprocess.run([sys.executable, str(ROOT / "tests" / "_train_worker.py"), "devices", str(out),
                      dataset],
                     cwd=ROOT, env=_env(devices=8), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return out


def test_8_devices_equal_1_device_and_split_the_batch(device_runs):
  runs = {n: dict(np.load(device_runs / f"{n}.npz")) for n in ("d1", "d4", "d8", "fsdp")}
  for name in ("d4", "d8", "fsdp"):
    for k, v in runs["d1"].items():
      np.testing.assert_allclose(runs[name][k], v, atol=1e-5, rtol=0, err_msg=f"{name} {k}")
  checks = json.loads((device_runs / "checks.json").read_text())
  assert checks["n_shards"] == 8 and checks["shard_rows"] == [1]  # batch 8 over 8 devices
  assert checks["transfer_guard_ok"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(device_runs, dataset, tmp_path):
  """Each process reads its own shard of the dataset; together they equal one process."""
  wd = str(tmp_path / "mp")
  port = _free_port()
  args = ["--config", "configs/debug.py", "--workdir", wd, "--config.total_steps=3",
          f"--config.data.path={dataset}",
          "--config.log_every=1", "--config.checkpoint_every=3", "--config.progress=False",
          "--config.tensorboard=False", "--config.checkpoint_async=False",
          "--coordinator_address", f"localhost:{port}", "--num_processes", "2"]
  procs = [subprocess.Popen([sys.executable, "-m", "jaxinv.train", *args, "--process_id", str(i)],
                            cwd=ROOT, env=_env(devices=2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
  got = flat(T.load_checkpoint(wd)["params"])
  want = dict(np.load(device_runs / "d4.npz"))
  for k, v in want.items():
    np.testing.assert_allclose(got[k], v, atol=1e-6, rtol=0, err_msg=k)
  ref_rows = _rows(device_runs / "d4")
  for a, b in zip(_rows(wd), ref_rows, strict=True):
    assert a.keys() == b.keys()
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-6)
