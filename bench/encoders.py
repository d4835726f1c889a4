"""Encoder speed: jaxinv vs the official PyTorch modules, same weights, same inputs, same run (CPU).

For every entry: forward, and forward + backward (gradient of ``sum(output**2)`` w.r.t. all
parameters), batch 4 at 256x256, median of ``--runs`` timed calls after a warm-up (jaxinv: after
compilation, which is reported separately). Weights come from the golden fixtures
(``shared/fixtures/<name>``), so the two outputs are also compared.

The official code is read from checkouts given on the command line (obtained with the ``fetch``
tool; never vendored)::

  python bench/encoders.py --upstream pixel2style2pixel=/tmp/up/psp \
      --upstream triplanenet=/tmp/up/triplanenet --upstream preim3d=/tmp/up/preim3d \
      [--only psp,e4e] [--runs 3] [--batch 4]

Writes ``bench/results/encoders_cpu.json`` and ``.md``. New encoders (GOAE) are added as one
``Entry`` in ``ENTRIES``. GOAE (encoder at 256, AFA at 512 with a 32x32x512 feature map):
``--upstream goae=<checkout>/goae`` (needs ``timm`` for the official Swin).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import types
from typing import Any, Callable

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


@dataclasses.dataclass(frozen=True)
class Entry:
  """One benchmarked encoder.

  Attributes:
    fixture: golden fixture folder (weights + the reference to compare with).
    upstream: key of ``--upstream NAME=PATH`` holding the official checkout.
    build_torch: ``(sd) -> torch module`` (called with the checkout importable as top level).
    build_jax: ``(sd) -> (apply(params, *inputs), params)``; params is the differentiated tree.
    inputs: names and NCHW shapes (batch left out) of the module inputs, in call order.
    output: picks the array compared/summed from the torch output (default: the output itself).
  """
  fixture: str
  upstream: str
  build_torch: Callable[[dict], Any]
  build_jax: Callable[[dict], tuple]
  inputs: tuple[tuple[str, tuple[int, ...]], ...] = (("x", (3, 256, 256)),)
  torch_output: Callable[[Any], Any] = lambda y: y
  jax_output: Callable[[Any], Any] = lambda y: y


# ------------------------------------------------------------------------- upstream imports

def _stub_stylegan2_op():
  """pSp-family repos import CUDA extensions at import time; the encoders never call them."""
  op = types.ModuleType("models.stylegan2.op")

  def _unused(*a, **k):
    raise RuntimeError("stylegan2 CUDA op called by the benchmark (not expected)")
  op.FusedLeakyReLU = type("FusedLeakyReLU", (), {"__init__": _unused})
  op.fused_leaky_relu = _unused
  op.upfirdn2d = _unused
  sys.modules["models.stylegan2.op"] = op


def _import_from(checkout: str, module: str):
  """Imports ``module`` from ``checkout``, isolating the repos' common top-level ``models``."""
  for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
    del sys.modules[name]
  sys.path.insert(0, checkout)
  try:
    _stub_stylegan2_op()
    return importlib.import_module(module)
  finally:
    sys.path.remove(checkout)


def _torch_module(cls, sd, *args, **kwargs):
  import torch
  m = cls(*args, **kwargs)
  m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
  return m.eval()


def _opts(**kw):
  return argparse.Namespace(**kw)


# ----------------------------------------------------------------------------- jaxinv side

def _jax_psp_family(kind):
  def build(sd):
    from jaxinv.convert import psp
    model, variables = psp.load_encoder_from_state_dict(sd, kind)
    return _split_apply(model, variables)
  return build


def _jax_triplane(sd):
  from jaxinv.convert import triplanenet
  model, variables = triplanenet.load_triplane_encoder_from_state_dict(sd)
  return _split_apply(model, variables)


def _split_apply(model, variables):
  """``apply(params, x)`` with the non-trainable collections closed over."""
  rest = {k: v for k, v in variables.items() if k != "params"}

  def apply(params, *inputs):
    return model.apply({"params": params, **rest}, *inputs)
  return apply, variables["params"]


# ------------------------------------------------------------------------------------- GOAE

def _import_goae(checkout: str, module: str):
  """Imports from GOAE's ``goae/`` folder; the generator side of ``training/goae.py`` (EG3D, pickle
  loader, dnnlib) is replaced by inert placeholders, as in the fixture generation."""
  for name in [m for m in sys.modules
               if m.split(".")[0] in ("models", "training", "legacy", "dnnlib", "torch_utils")]:
    del sys.modules[name]
  placeholders = {"training.triplane": {"TriPlaneGenerator": object}, "legacy": {},
                  "dnnlib": {}, "torch_utils": {}, "torch_utils.misc": {}}
  for name, attrs in placeholders.items():
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
  sys.modules["torch_utils"].misc = sys.modules["torch_utils.misc"]
  sys.path.insert(0, checkout)
  try:
    return importlib.import_module(module)
  finally:
    sys.path.remove(checkout)


def _goae_swin_config():
  """``configs/swinv2.yaml`` over the ``swin_config.py`` defaults, as ``build_model`` reads it."""
  ns = types.SimpleNamespace
  return ns(DATA=ns(IMG_SIZE=256),
            MODEL=ns(NUM_CLASSES=1000, DROP_RATE=0.0, DROP_PATH_RATE=0.2,
                     SWINV2=ns(PATCH_SIZE=4, IN_CHANS=3, EMBED_DIM=128, DEPTHS=[2, 2, 18, 2],
                               NUM_HEADS=[4, 8, 16, 32], WINDOW_SIZE=16, MLP_RATIO=4.0,
                               QKV_BIAS=True, APE=False, PATCH_NORM=True,
                               PRETRAINED_WINDOW_SIZES=[12, 12, 12, 6])),
            TRAIN=ns(USE_CHECKPOINT=False))


def _jax_goae_encoder(sd):
  from jaxinv.convert import goae
  from jaxinv.models.encoders.goae import GOAEncoder, GOAEncoderConfig
  return _split_apply(GOAEncoder(GOAEncoderConfig()), goae.convert_encoder(sd))


def _jax_goae_afa(sd):
  from jaxinv.convert import goae
  from jaxinv.models.encoders.goae import AFA, AFAConfig
  return _split_apply(AFA(AFAConfig()), goae.convert_afa(sd))


def _nchw(y):
  import jax.numpy as jnp
  return jnp.transpose(y, (0, 3, 1, 2))


ENTRIES: dict[str, Entry] = {
    "psp": Entry(
        "psp_gradual_style_encoder", "pixel2style2pixel",
        lambda sd: _torch_module(
            _import_from(ARGS.upstream["pixel2style2pixel"],
                         "models.encoders.psp_encoders").GradualStyleEncoder,
            sd, 50, "ir_se", _opts(n_styles=18, input_nc=3)),
        _jax_psp_family("GradualStyleEncoder")),
    "triplanenet_psp": Entry(
        "triplanenet_psp_encoder", "triplanenet",
        lambda sd: _torch_module(
            _import_from(ARGS.upstream["triplanenet"],
                         "models.encoders.psp_encoders").GradualStyleEncoder,
            sd, 50, "ir_se", _opts(n_styles=14)),
        _jax_psp_family("GradualStyleEncoder")),
    "triplanenet_offsets": Entry(
        "triplanenet_triplane_encoder", "triplanenet",
        lambda sd: _torch_module(
            _import_from(ARGS.upstream["triplanenet"],
                         "models.encoders.triplane_encoders").TriPlane_Encoder, sd),
        _jax_triplane, inputs=(("x_input", (6, 256, 256)),)),
    "preim3d_e4e": Entry(
        "preim3d_e4e_encoder", "preim3d",
        lambda sd: _torch_module(
            _import_from(ARGS.upstream["preim3d"], "models.encoders.psp_encoders").Encoder4Editing,
            sd, 50, "ir_se", _opts(stylegan_size=256)),
        _jax_psp_family("Encoder4Editing")),
    "preim3d_wplus": Entry(
        "preim3d_wplus_encoder", "preim3d",
        lambda sd: _torch_module(
            _import_from(ARGS.upstream["preim3d"],
                         "models.encoders.psp_encoders").BackboneEncoderUsingLastLayerIntoWPlus,
            sd, 50, "ir_se", _opts(n_styles=14, stylegan_size=256)),
        _jax_psp_family("WPlusEncoder")),
    "goae_encoder": Entry(
        "goae_encoder", "goae",
        lambda sd: _torch_module(
            _import_goae(ARGS.upstream["goae"], "training.goae").GOAEncoder, sd,
            _goae_swin_config(), mlp_layer=2, stage_list=[10000, 20000, 30000]),
        _jax_goae_encoder,
        torch_output=lambda y: y[0], jax_output=lambda y: y["ws"]),
    "goae_afa": Entry(
        "goae_afa", "goae",
        lambda sd: _torch_module(_import_goae(ARGS.upstream["goae"], "models.afa").AFA, sd),
        _jax_goae_afa,
        inputs=(("img", (3, 512, 512)), ("rec_img", (3, 512, 512)), ("feature_map", (512, 32, 32))),
        torch_output=lambda y: y[0], jax_output=lambda y: _nchw(y["feature_map_adain"])),
}


# ---------------------------------------------------------------------------------- timing

def _median_time(fn, runs):
  ts = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts), ts


def bench_entry(name: str, entry: Entry, batch: int, runs: int) -> dict:
  import jax
  import jax.numpy as jnp
  import torch

  from conftest import encoder_fixture
  _, sd, _ = encoder_fixture(entry.fixture)
  rng = np.random.default_rng(0)
  inputs = [rng.uniform(-1, 1, (batch, *shape)).astype(np.float32) for _, shape in entry.inputs]
  res: dict[str, Any] = {"fixture": entry.fixture, "batch": batch, "runs": runs}

  # ---- official PyTorch
  tm = entry.build_torch(sd)
  t_in = [torch.from_numpy(a) for a in inputs]
  with torch.inference_mode():
    y_torch = entry.torch_output(tm(*t_in)).numpy()
    res["torch_fwd_s"], res["torch_fwd_runs"] = _median_time(
        lambda: tm(*t_in), runs)

  def torch_fwd_bwd():
    tm.zero_grad(set_to_none=True)
    (entry.torch_output(tm(*t_in)) ** 2).sum().backward()
  torch_fwd_bwd()
  res["torch_fwd_bwd_s"], res["torch_fwd_bwd_runs"] = _median_time(torch_fwd_bwd, runs)
  del tm

  # ---- jaxinv
  apply, params = entry.build_jax(sd)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  j_in = [jnp.asarray(np.transpose(a, (0, 2, 3, 1))) for a in inputs]
  fwd = jax.jit(lambda p, *xs: entry.jax_output(apply(p, *xs)))
  t = time.perf_counter()
  y_jax = np.asarray(jax.block_until_ready(fwd(params, *j_in)))
  res["jax_fwd_compile_and_first_s"] = time.perf_counter() - t
  res["jax_fwd_s"], res["jax_fwd_runs"] = _median_time(
      lambda: jax.block_until_ready(fwd(params, *j_in)), runs)

  grad = jax.jit(jax.grad(lambda p, *xs: jnp.sum(entry.jax_output(apply(p, *xs)) ** 2)))
  t = time.perf_counter()
  jax.block_until_ready(grad(params, *j_in))
  res["jax_fwd_bwd_compile_and_first_s"] = time.perf_counter() - t
  res["jax_fwd_bwd_s"], res["jax_fwd_bwd_runs"] = _median_time(
      lambda: jax.block_until_ready(grad(params, *j_in)), runs)

  # Same weights and inputs: the outputs must agree (layout differences handled by the entry).
  y_t = y_torch
  if y_t.ndim == 4 and y_jax.ndim == 5:  # tri-plane offsets: [B,96,H,W] vs [B,3,H,W,32]
    y_t = y_t.reshape(batch, 3, 32, *y_t.shape[2:]).transpose(0, 1, 3, 4, 2)
  res["max_rel_diff"] = float(np.abs(y_jax - y_t).max() / np.abs(y_t).max())
  res["fwd_ratio_jax_over_torch"] = res["jax_fwd_s"] / res["torch_fwd_s"]
  res["fwd_bwd_ratio_jax_over_torch"] = res["jax_fwd_bwd_s"] / res["torch_fwd_bwd_s"]
  return res


def _load(v) -> str:
  if isinstance(v, (list, tuple)) and len(v) == 2:
    return f"{v[0][0]:.1f}, {v[1][0]:.1f}"
  return str(v or "")


def _markdown(meta, results) -> str:
  lines = [
      "# Encoder speed on CPU: jaxinv vs official PyTorch (same run)", "",
      f"{meta['cpu']} ({meta['cores']} cores), torch {meta['torch']} ({meta['torch_threads']} threads), "
      f"jax {meta['jax']}; batch {meta['batch']}, 256x256, median of {meta['runs']} runs; "
      f"load average at start {meta['loadavg_start']}, end {meta['loadavg_end']}. "
      "No GPU was lent to this task: CPU figures only.", "",
      "| encoder | torch fwd s | jaxinv fwd s | ratio | torch fwd+bwd s | jaxinv fwd+bwd s | ratio "
      "| jaxinv compile fwd / fwd+bwd s | max rel diff | load avg (start, end) |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for name, r in results.items():
    if "error" in r:
      lines.append(f"| {name} | error: {r['error']} |||||||")
      continue
    lines.append(
        f"| {name} | {r['torch_fwd_s']:.2f} | {r['jax_fwd_s']:.2f} | {r['fwd_ratio_jax_over_torch']:.2f} "
        f"| {r['torch_fwd_bwd_s']:.2f} | {r['jax_fwd_bwd_s']:.2f} | "
        f"{r['fwd_bwd_ratio_jax_over_torch']:.2f} | {r['jax_fwd_compile_and_first_s']:.0f} / "
        f"{r['jax_fwd_bwd_compile_and_first_s']:.0f} | {r['max_rel_diff']:.1e} | "
        f"{_load(r.get('loadavg_start_end'))} |")
  lines += ["", "ratio = jaxinv time / official time (below 1: jaxinv is faster)."]
  return "\n".join(lines) + "\n"


def main(argv=None):
  global ARGS
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--upstream", action="append", default=[], metavar="NAME=PATH",
                 help="official checkout: pixel2style2pixel, triplanenet, preim3d (GOAE: goae)")
  p.add_argument("--only", default="", help="comma-separated entry names (default: all)")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--out", default=str(REPO / "bench" / "results" / "encoders_cpu"))
  ARGS = p.parse_args(argv)
  ARGS.upstream = dict(u.split("=", 1) for u in ARGS.upstream)

  import jax
  import torch
  torch.set_num_threads(os.cpu_count())
  names = [n for n in ARGS.only.split(",") if n] or list(ENTRIES)
  meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "jax": jax.__version__, "batch": ARGS.batch, "runs": ARGS.runs,
          "loadavg_start": os.getloadavg()}
  out_json = pathlib.Path(ARGS.out + ".json")
  results = json.loads(out_json.read_text())["results"] if out_json.exists() else {}
  out_json.parent.mkdir(parents=True, exist_ok=True)
  for name in names:
    entry = ENTRIES[name]
    if entry.upstream not in ARGS.upstream:
      print(f"{name}: skipped (no --upstream {entry.upstream}=PATH)")
      continue
    print(f"{name} ...", flush=True)
    load0 = os.getloadavg()
    try:
      results[name] = bench_entry(name, entry, ARGS.batch, ARGS.runs)
    except Exception as e:  # one failing entry must not lose the others' numbers
      results[name] = {"error": f"{type(e).__name__}: {e}"}
    # The machine may be shared: keep each entry's load next to its numbers.
    results[name]["loadavg_start_end"] = [load0, os.getloadavg()]
    print(json.dumps(results[name], indent=1), flush=True)
    # Written after every entry so that an interrupted run keeps what it measured.
    meta["loadavg_end"] = os.getloadavg()
    out_json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    pathlib.Path(ARGS.out + ".md").write_text(_markdown(meta, results))
  print(_markdown(meta, results))


ARGS = None

if __name__ == "__main__":
  main()
