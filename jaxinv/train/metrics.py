"""Metric sinks of the train loop (process 0 only): ``metrics.jsonl`` and TensorBoard.

``WORKDIR/metrics.jsonl``: one JSON object per logged step, ``{"step": int, "loss": float,
<every other metric>: float}``. On resume, lines for steps after the restored checkpoint (logged
by the killed run after its last save) are dropped, so the file matches an uninterrupted run.
``WORKDIR/tensorboard/``: event files (tensorboardX; no TensorFlow) with every metric as a scalar
and the task's preview images as grids (one row per preview entry, one column per sample).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np


def _finite_or_str(v: float):
  return v if math.isfinite(v) else str(v)


def first_and_last_logged(workdir: str) -> tuple[dict | None, dict | None]:
  """The first and the last line of ``WORKDIR/metrics.jsonl`` (None, None without a log): what
  an exported model's manifest records of its run."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None, None
  with open(path) as f:
    lines = [json.loads(x) for x in f if x.strip()]
  return (lines[0], lines[-1]) if lines else (None, None)


class MetricWriter:
  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True,
               tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      keep = []
      with open(self.path) as f:
        for line in f:
          try:
            if json.loads(line)["step"] <= start_step:
              keep.append(line if line.endswith("\n") else line + "\n")
          except (ValueError, KeyError):
            pass  # a line cut by a kill
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)
    self._f = open(self.path, "a")
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError:  # pragma: no cover - tensorboardX is a dependency
        SummaryWriter = None
      if SummaryWriter is not None:
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1
                                 if start_step else None)

  def scalars(self, step: int, metrics: dict):
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _finite_or_str(float(v)) for k, v in sorted(metrics.items())})
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, float(v), int(step))

  def images(self, step: int, images: dict):
    """``images``: name -> [N, H, W, 3] in [-1, 1]; written as one grid image."""
    if not self.enabled or self._tb is None or not images:
      return
    grid = image_grid(images)
    self._tb.add_image("preview", grid, int(step), dataformats="HWC")
    self._tb.flush()

  def close(self):
    if not self.enabled:
      return
    self._f.close()
    if self._tb is not None:
      self._tb.close()


def image_grid(images: dict, pad: int = 2) -> np.ndarray:
  """uint8 [rows*H, cols*W, 3]: one row per entry (sorted by name), resized to the first's size."""
  rows = []
  names = sorted(images)
  h, w = np.asarray(images[names[0]]).shape[1:3]
  for name in names:
    x = np.asarray(images[name], np.float32)
    if x.shape[-1] == 1:
      x = np.repeat(x, 3, -1)
    if x.shape[1:3] != (h, w):  # nearest resize to the first entry's size
      yi = (np.arange(h) * x.shape[1] // h)
      xi = (np.arange(w) * x.shape[2] // w)
      x = x[:, yi][:, :, xi]
    x = np.clip((x + 1) * 127.5, 0, 255).astype(np.uint8)
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows.append(np.concatenate(list(x), axis=1))
  return np.concatenate(rows, axis=0)
