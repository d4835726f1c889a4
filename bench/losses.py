"""Loss-network speed: identity loss + LPIPS-alex, jaxinv vs the official PyTorch modules (CPU).

Times ``loss = id_loss(y_hat, y) + lpips_alex(y_hat, y).mean()`` and its gradient w.r.t. ``y_hat``
(what an encoder's training step pays for these criteria), batch 8 at 256x256, median of
``--runs`` timed calls after a warm-up (jaxinv's compile time is reported separately). Both sides
use the golden-fixture weights (``shared/fixtures/{ir_se50,lpips_alex}``), so the loss values are
compared too.

Official code: pSp's ``models/encoders/model_irse.py`` (+ ``helpers.py``) from a checkout given on
the command line (obtained with the ``fetch`` tool; never vendored), driven exactly like pSp's
``IDLoss`` (crop 35:223 / 32:220, ``AdaptiveAvgPool2d(112)``, ``1 - dot`` with the target
detached, batch mean); the ``lpips`` package from PyPI (``LPIPS(net='alex', pnet_rand=True)``)::

  pip install torch lpips
  python bench/losses.py --psp /path/to/pixel2style2pixel [--runs 5] [--batch 8]

Writes ``bench/results/losses_cpu.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _median_time(fn, runs):
  ts = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts), ts


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--psp", required=True, help="pixel2style2pixel checkout (models/encoders/...)")
  ap.add_argument("--runs", type=int, default=5)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--out", default=str(REPO / "bench" / "results" / "losses_cpu"))
  args = ap.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import torch

  from conftest import encoder_fixture
  from jaxinv.convert.irse import load_arcface
  from jaxinv.convert.lpips import convert_lpips_module
  from jaxinv.losses.arcface import id_loss
  from jaxinv.losses.lpips import lpips_loss

  _, sd_id, _ = encoder_fixture("ir_se50")
  _, sd_lp, _ = encoder_fixture("lpips_alex")
  b = args.batch
  rng = np.random.default_rng(0)
  y = rng.uniform(-1, 1, (b, 256, 256, 3)).astype(np.float32)
  y_hat = np.clip(y + 0.2 * rng.standard_normal(y.shape), -1, 1).astype(np.float32)

  # ---- jaxinv
  _, v_id = load_arcface(sd_id)
  v_lp = convert_lpips_module(sd_lp, "alex")

  def total(yh, yy, v_id, v_lp):
    return id_loss(v_id, yh, yy) + lpips_loss(v_lp, yh, yy, "alex")

  step = jax.jit(jax.value_and_grad(total))
  jy, jyh = jnp.asarray(y), jnp.asarray(y_hat)
  t0 = time.perf_counter()
  jax.block_until_ready(step(jyh, jy, v_id, v_lp))
  compile_s = time.perf_counter() - t0
  jax_val = float(step(jyh, jy, v_id, v_lp)[0])
  jax_s, jax_runs = _median_time(lambda: jax.block_until_ready(step(jyh, jy, v_id, v_lp)), args.runs)

  # ---- official PyTorch
  sys.path.insert(0, os.path.abspath(args.psp))
  from models.encoders.model_irse import Backbone  # noqa: E402  (pSp checkout)
  import lpips  # noqa: E402

  facenet = Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se")
  facenet.load_state_dict({k: torch.from_numpy(np.asarray(a)) for k, a in sd_id.items()})
  facenet.eval()
  pool = torch.nn.AdaptiveAvgPool2d((112, 112))
  lp = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
  lp.load_state_dict({k: torch.from_numpy(np.asarray(a)) for k, a in sd_lp.items()})
  lp.eval()
  for p in list(facenet.parameters()) + list(lp.parameters()):
    p.requires_grad_(False)

  def feats(x):
    return facenet(pool(x[:, :, 35:223, 32:220]))

  ty = torch.from_numpy(y.transpose(0, 3, 1, 2).copy())
  tyh0 = torch.from_numpy(y_hat.transpose(0, 3, 1, 2).copy())

  def torch_step():
    tyh = tyh0.clone().requires_grad_(True)
    fy = feats(ty).detach()
    fh = feats(tyh)
    l_id = (1 - (fh * fy).sum(dim=1)).mean()
    l_lp = lp(tyh, ty).sum() / tyh.shape[0]
    loss = l_id + l_lp
    loss.backward()
    return float(loss.detach()), tyh.grad

  torch_val, _ = torch_step()  # warm-up
  torch_s, torch_runs = _median_time(torch_step, args.runs)

  res = {
      "what": "value_and_grad wrt y_hat of id_loss (pSp path) + LPIPS-alex mean, batch "
              f"{b}, 256x256, CPU, median of {args.runs}",
      "batch": b, "runs": args.runs,
      "jaxinv_s": jax_s, "jaxinv_runs_s": jax_runs, "jaxinv_compile_s": compile_s,
      "torch_s": torch_s, "torch_runs_s": torch_runs,
      "ratio_jaxinv_over_torch": jax_s / torch_s,
      "loss_jaxinv": jax_val, "loss_torch": torch_val,
      "loss_rel_diff": abs(jax_val - torch_val) / abs(torch_val),
      "torch": torch.__version__, "jax": jax.__version__, "torch_threads": torch.get_num_threads(),
      "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
      "loadavg_at_end": list(os.getloadavg()),
      "gpu": "none lent to this task: CPU figures only",
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
  md = [
      "# Loss networks: jaxinv vs official PyTorch (CPU)", "",
      f"{res['what']}. Same fixture weights on both sides. No GPU was lent: CPU only.", "",
      "| | median s | runs (s) |", "|---|---:|---|",
      f"| jaxinv (jit, after {compile_s:.1f} s compile) | {jax_s:.3f} | "
      + ", ".join(f"{t:.3f}" for t in jax_runs) + " |",
      f"| PyTorch {torch.__version__} (pSp model_irse + lpips 0.1.4) | {torch_s:.3f} | "
      + ", ".join(f"{t:.3f}" for t in torch_runs) + " |", "",
      f"Ratio jaxinv / torch: **{res['ratio_jaxinv_over_torch']:.2f}**. Loss values: "
      f"{jax_val:.6f} vs {torch_val:.6f} (rel. diff {res['loss_rel_diff']:.1e}).", "",
      f"Machine: {res['cpus']} CPUs, torch threads {res['torch_threads']}, load average at end "
      f"{res['loadavg_at_end'][0]:.2f} (the machine was shared with other jobs; figures are noisy).",
  ]
  out.with_suffix(".md").write_text("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
