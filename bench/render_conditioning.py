"""How exact can a float32 EG3D renderer be? Official float32, jaxinv float32, both against float64.

    python bench/render_conditioning.py --eg3d-src /tmp/eg3d_src/eg3d

Renders the ``tiny`` fixture's planes (jaxinv's backbone on ``mapping.ws_psi1``) with the fixture's
recorded random draws (``synthesis_randdraws``) three ways: the official ImportanceRenderer in float32,
the same official code in float64 (reference), and jaxinv's renderer in float32. The fixture
calibrated the decoder's density to a large gain, so a one-ulp change in a sample position or plane
feature moves the density by ~1e-3 and the composite by ~1e-4; this script measures that, to
justify the parity tolerance of the random-draw synthesis test. Writes
``bench/results/render_conditioning_cpu.{json,md}``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = pathlib.Path(os.environ.get("JAXINV_SHARED", REPO.parent / "shared")) / "fixtures" / "eg3d"


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--eg3d-src", required=True)
  p.add_argument("--config", default="tiny")
  p.add_argument("--out", default=str(REPO / "bench" / "results"))
  a = p.parse_args()

  import torch
  sys.path.insert(0, a.eg3d_src)
  sys.path.insert(0, str(REPO))
  import training.volumetric_rendering.renderer as official  # official code, bench only
  from training.triplane import OSGDecoder as OfficialDecoder
  from training.volumetric_rendering.ray_sampler import RaySampler

  import jax.numpy as jnp
  from jaxinv.convert import eg3d as eg3d_convert
  from jaxinv.nn.decoder import OSGDecoder, decoder_params_from_state_dict
  from jaxinv.render import rays, renderer
  from jaxinv.render.options import RenderOptions

  d = FIXTURES / a.config
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "stages.npz") as z:
    st = {k: z[k] for k in z.files}
  with np.load(d / "state_dict.npz") as z:
    sd = {k: z[k] for k in z.files}
  if "synthesis_randdraws.u_stratified" not in st:
    sys.exit(f"{a.config}: no synthesis_randdraws stage (only tiny has one)")
  G = eg3d_convert.from_state_dict(sd, cfg["constructor_kwargs"])
  planes = np.asarray(G.planes(st["mapping.ws_psi1"]))  # [B, 3, H, W, C]
  rk = cfg["rendering_kwargs"]
  r = int(st["synthesis.neural_rendering_resolution"])
  c = st["camera.c"]
  us, ui = st["synthesis_randdraws.u_stratified"], st["synthesis_randdraws.u_importance"]

  def run_official(dtype):
    dec = OfficialDecoder(32, {"decoder_lr_mul": 1, "decoder_output_dim": 32}).to(dtype)
    dec.load_state_dict({k[len("decoder."):]: torch.from_numpy(v).to(dtype)
                         for k, v in sd.items() if k.startswith("decoder.")})
    saved = (torch.rand_like, torch.rand, official.sample_from_planes)
    torch.rand_like = lambda x, **kw: torch.from_numpy(us).to(dtype).reshape(x.shape)
    torch.rand = lambda *args, **kw: torch.from_numpy(ui).to(dtype)
    if dtype == torch.float64:
      # The official sampler casts the grid to float32; keep everything in float64 instead.
      def sample64(axes, feats, coords, mode="bilinear", padding_mode="zeros", box_warp=None):
        n, p_, ch, h, w = feats.shape
        grid = official.project_onto_planes(axes.to(dtype), (2 / box_warp) * coords).unsqueeze(1)
        out = torch.nn.functional.grid_sample(feats.view(n * p_, ch, h, w), grid, mode="bilinear",
                                              padding_mode="zeros", align_corners=False)
        return out.permute(0, 3, 2, 1).reshape(n, p_, coords.shape[1], ch)
      official.sample_from_planes = sample64
    try:
      with torch.no_grad():
        ct = torch.from_numpy(c).to(dtype)
        o, dirs = RaySampler()(ct[:, :16].view(-1, 4, 4), ct[:, 16:].view(-1, 3, 3), r)
        tp = torch.from_numpy(np.ascontiguousarray(planes.transpose(0, 1, 4, 2, 3))).to(dtype)
        ren = official.ImportanceRenderer()
        ren.plane_axes = ren.plane_axes.to(dtype)
        return [x.numpy().astype(np.float64) for x in ren(tp, dec, o, dirs, rk)]
    finally:
      torch.rand_like, torch.rand, official.sample_from_planes = saved

  ref = run_official(torch.float64)
  off32 = run_official(torch.float32)
  o, dirs = rays.rays_from_label(c, r)
  ours = renderer.render(jnp.asarray(planes), functools.partial(OSGDecoder().apply,
                                                                decoder_params_from_state_dict(sd)),
                         o, dirs, RenderOptions.from_rendering_kwargs(rk),
                         draws=dict(u_stratified=us, u_importance=ui))
  ours = [np.asarray(x, np.float64) for x in ours]
  names = ["feature_image", "depth", "weights_sum"]
  res = {"config": a.config, "resolution": r, "rows": {}}
  for n, x64, x32, xj in zip(names, ref, off32, ours):
    res["rows"][n] = dict(official_f32_vs_f64=float(np.abs(x32 - x64).max()),
                          jaxinv_f32_vs_f64=float(np.abs(xj - x64).max()),
                          jaxinv_vs_official_f32=float(np.abs(xj - x32).max()))
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "render_conditioning_cpu.json").write_text(json.dumps(res, indent=1))
  lines = [f"# Renderer float32 error vs float64 ({a.config}, R={r}, recorded random draws)", "",
           "Max abs error on the same planes and draws. Both float32 implementations are about "
           "equally far from float64; neither can match the other closer than that.", "",
           "| output | official f32 vs f64 | jaxinv f32 vs f64 | jaxinv vs official f32 |",
           "|---|---|---|---|"]
  for n, row in res["rows"].items():
    lines.append(f"| {n} | {row['official_f32_vs_f64']:.2g} | {row['jaxinv_f32_vs_f64']:.2g} | "
                 f"{row['jaxinv_vs_official_f32']:.2g} |")
  (out / "render_conditioning_cpu.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
