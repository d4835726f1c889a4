"""Notebooks run: every code cell executes in order (shell and install lines are skipped)."""
import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_execute(path):
  nb = json.loads(path.read_text())
  scope = {}
  for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] != "code":
      continue
    lines = [l for l in "".join(cell["source"]).splitlines() if not l.lstrip().startswith("!")]
    exec(compile("\n".join(lines), f"{path.name}[cell {i}]", "exec"), scope)
  assert NOTEBOOKS
  if "images" in scope:
    assert scope["images"].ndim == 3 and scope["images"].shape[-1] == 3
