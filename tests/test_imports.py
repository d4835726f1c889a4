"""Architecture guards: imports point one way, and ``import jaxinv`` pulls in no torch/tensorflow."""
import ast
import pathlib
import subprocess
import sys

PKG = pathlib.Path(__file__).resolve().parents[1] / "jaxinv"

# Lower rank = lower layer. A module may import modules of its own or a lower rank only.
RANK = {
    "checks": -1, "ops": 0, "render": 1, "nn": 2, "models": 3, "losses": 4,
    "convert": 5, "data": 5, "parallel": 5, "preprocess": 5,
    "eval": 6, "inversion": 6, "train": 7, "api": 8, "cli": 8, "__init__": 9,
}


def _layer(modpath: str) -> str:
  parts = modpath.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: pathlib.Path, modname: str):
  tree = ast.parse(path.read_text())
  pkg_parts = modname.split(".")[:-1] if path.name != "__init__.py" else modname.split(".")
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        yield a.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = pkg_parts[: len(pkg_parts) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ""
      yield mod
      for a in node.names:  # `from jaxinv import render` imports the layer `render`
        yield f"{mod}.{a.name}"


def test_import_direction():
  bad = []
  for path in PKG.rglob("*.py"):
    rel = path.relative_to(PKG.parent).with_suffix("")
    modname = ".".join(rel.parts)
    if modname.endswith(".__init__"):
      modname = modname[: -len(".__init__")]
    own = _layer(modname if "." in modname else "jaxinv.__init__")
    if own not in RANK:
      bad.append(f"{modname}: layer {own!r} has no rank in tests/test_imports.py")
      continue
    for imp in _imports(path, modname):
      if not imp.startswith("jaxinv.") or own == "__init__":
        continue
      target = _layer(imp)
      if target in RANK and RANK[target] > RANK[own]:
        bad.append(f"{modname} imports {imp} ({own} may not import {target})")
  assert not bad, "imports point the wrong way:\n" + "\n".join(sorted(set(bad)))


def test_import_jaxinv_pulls_no_torch_or_tensorflow():
  code = ("import sys, jaxinv; import jaxinv.convert.reference; "
          "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; "
          "print(bad); sys.exit(1 if bad else 0)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout + r.stderr
