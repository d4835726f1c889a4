"""Runs a notebook top to bottom in a real kernel (nbclient), as tests/test_notebooks*.py do.

Only cells tagged ``needs-weights`` are left out (``04_real_faces``: the released checkpoints,
which cannot be downloaded here); each of them says so in its first line. The two test files split
the notebooks so that the suite's two workers share them.
"""
import os
import pathlib
import signal

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
SKIP_TAG = "needs-weights"


def path(stem: str) -> pathlib.Path:
  return ROOT / f"{stem}.ipynb"


def _tensorboards() -> set:
  from tensorboard import manager
  return {info.pid for info in manager.get_all()}


def run(nb_path: pathlib.Path, workdir) -> list:
  """Executes the notebook in ``workdir``; returns every code cell's outputs (raises on errors)."""
  nb = nbformat.read(nb_path, as_version=4)
  nb.cells = [c for c in nb.cells if SKIP_TAG not in c.metadata.get("tags", [])]
  before = _tensorboards()
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": str(workdir)}})
  try:
    client.execute()   # raises CellExecutionError naming the cell on any error
  finally:
    for pid in _tensorboards() - before:   # 03 starts a TensorBoard server
      try:
        os.kill(pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  return outputs


def shown_images(outputs) -> int:
  return sum("image/png" in o.get("data", {}) for o in outputs)
