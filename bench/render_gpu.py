"""Pallas vs XLA rendering on a GPU, full G(z, c) latency/throughput, and the official EG3D, in one run.

    python bench/render_gpu.py [--eg3d-src /path/to/eg3d/eg3d] [--skip-g] [--repeats 10]
    python bench/render_gpu.py --smoke          # CPU, tiny sizes, Pallas in interpret mode

Measures (each a median over ``--repeats`` timed calls after one compiling call):
  1. the renderer at the FFHQ-512 settings (128^2 rays, 48 + 48 samples, planes [1, 3, 256, 256, 32],
     decoder 32 -> 64 -> 33): ``render(kernel='xla')`` vs ``render(kernel='pallas')``, forward and
     forward + backward (gradients to the planes and the decoder weights);
  2. the fused kernel alone on the final pass (96 sorted samples per ray), with its modelled memory
     traffic (rays + depths + 12 plane-texel gathers of C floats per sample + outputs, every gather
     counted as a DRAM read) over the time, as a fraction of the GPU's peak bandwidth;
  3. full ``G(z, c)`` at the FFHQ-512 architecture (random weights: timing only), latency at batch 1
     and throughput at batch 32, float32 and ``bf16_convs='superresolution'``, render_kernel 'xla'
     and 'pallas' (batch 32 only for the kernel 'auto' picks);
  4. with ``--eg3d-src`` (a checkout of github.com/NVlabs/eg3d, the folder holding ``training/``):
     the official PyTorch ``TriPlaneGenerator`` with the same kwargs on the same GPU, same batches,
     in a subprocess (its CUDA ops build with nvcc there).
Writes ``bench/results/render_gpu.{json,md}`` (``render_gpu_smoke.*`` with ``--smoke``). Each section
is written as soon as it finishes, so a run cut short by a time limit still leaves its results.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Peak DRAM bandwidth (bytes/s) by device-kind substring, for the achieved-fraction column.
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L4": 0.3e12, "A10": 0.6e12}

FFHQ512_KWARGS = {
    "z_dim": 512, "w_dim": 512, "c_dim": 25, "img_resolution": 512, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2}, "channel_base": 32768, "channel_max": 512,
    "num_fp16_res": 0, "conv_clamp": None, "sr_num_fp16_res": 4,
    "sr_kwargs": {"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"},
    "fused_modconv_default": "inference_only",
    "rendering_kwargs": {
        "image_resolution": 512, "disparity_space_sampling": False, "clamp_mode": "softplus",
        "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC",
        "c_gen_conditioning_zero": False, "c_scale": 1.0, "superresolution_noise_mode": "none",
        "decoder_lr_mul": 1.0, "sr_antialias": True, "depth_resolution": 48,
        "depth_resolution_importance": 48, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1,
        "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2]},
    "neural_rendering_resolution": 128,
}


def _timeit(fn, repeats):
  import jax
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return dict(first_call_s=first, median_s=statistics.median(times), min_s=min(times))


def _sizes(smoke):
  if smoke:
    return dict(rays_side=8, samples=6, importance=6, plane_res=16, batch_small=1, batch_large=2,
                block_rays=64)
  return dict(rays_side=128, samples=48, importance=48, plane_res=256, batch_small=1,
              batch_large=32, block_rays=64)


def bench_renderer(sz, repeats, interpret):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxinv.ops.pallas import raymarch
  from jaxinv.render import camera, rays, renderer
  from jaxinv.render.options import RenderOptions

  rng = np.random.default_rng(0)
  p = sz["plane_res"]
  planes = jnp.asarray(rng.normal(size=(1, 3, p, p, 32)), jnp.float32)
  dec = raymarch.MLPDecoder(
      jnp.asarray(rng.normal(size=(32, 64)) / np.sqrt(32), jnp.float32), jnp.zeros((64,)),
      jnp.asarray(rng.normal(size=(64, 33)) / 8, jnp.float32), jnp.zeros((33,)))
  opts = RenderOptions(depth_resolution=sz["samples"], depth_resolution_importance=sz["importance"])
  c = camera.Camera.look_at(0.2, 0.1).label
  o, d = rays.rays_from_label(c, sz["rays_side"])
  m = o.shape[1]
  cot = jnp.asarray(rng.normal(size=(1, m, 32)), jnp.float32)
  out = {}
  for kernel in ("xla", "pallas"):
    kw = dict(kernel=kernel, interpret=interpret, block_rays=sz["block_rays"])
    fwd = jax.jit(lambda planes, dec: renderer.render(planes, dec, o, d, opts, **kw))

    def loss(planes, dec):
      rgb, depth, wsum = renderer.render(planes, dec, o, d, opts, **kw)
      return jnp.sum(rgb * cot) + jnp.sum(wsum) + 1e-3 * jnp.sum(depth)
    bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
    out[kernel] = dict(forward=_timeit(lambda: fwd(planes, dec), repeats),
                       forward_backward=_timeit(lambda: bwd(planes, dec), repeats))
    print(f"renderer {kernel}: {out[kernel]}", flush=True)
  for phase in ("forward", "forward_backward"):
    out[f"speedup_{phase}"] = out["xla"][phase]["median_s"] / out["pallas"][phase]["median_s"]
  ref = jax.jit(lambda: renderer.render(planes, dec, o, d, opts, kernel="xla"))()
  got = jax.jit(lambda: renderer.render(planes, dec, o, d, opts, kernel="pallas",
                                        interpret=interpret, block_rays=sz["block_rays"]))()
  out["max_abs_diff_rgb"] = float(jnp.max(jnp.abs(ref[0] - got[0])))

  # The kernel alone on the final pass: S = D + Ni sorted samples per ray.
  s = sz["samples"] + sz["importance"]
  t = jnp.sort(jnp.asarray(rng.uniform(2.25, 3.3, size=(1, m, s, 1)), jnp.float32), axis=2)
  march = jax.jit(functools.partial(raymarch.march, box_warp=1.0, plane_axes=opts.plane_axes,
                                    interpret=interpret, block_rays=sz["block_rays"]))
  k = _timeit(lambda: march(planes, dec, o, d, t), repeats)
  bytes_moved = m * (8 * 4 + s * 4 + s * 12 * 32 * 4 + (32 + 2) * 4)
  k["modelled_bytes"] = bytes_moved
  k["achieved_bytes_per_s"] = bytes_moved / k["median_s"]
  kind = jax.devices()[0].device_kind
  peak = next((v for key, v in PEAK_BANDWIDTH.items() if key in kind), None)
  k["peak_bytes_per_s"] = peak
  k["fraction_of_peak_bandwidth"] = None if peak is None else k["achieved_bytes_per_s"] / peak
  out["kernel_final_pass"] = k
  print(f"kernel alone: {k}", flush=True)
  return out


def _generator(smoke):
  import jax
  from jaxinv.models import eg3d
  if smoke:
    return eg3d.tiny_eg3d(neural_rendering_resolution=8)
  cfg = eg3d.EG3DConfig.from_init_kwargs(FFHQ512_KWARGS)
  return eg3d.EG3DGenerator(cfg, eg3d.init_params(cfg, jax.random.PRNGKey(0)))


def bench_generator(sz, repeats, smoke):
  import jax
  import numpy as np
  from jaxinv.render import camera
  G0 = _generator(smoke)
  out = {}
  variants = [("xla", "none"), ("pallas", "none"), ("xla", "superresolution"),
              ("pallas", "superresolution")]
  for kernel, bf16 in variants:
    G = G0.replace(render_kernel=kernel, bf16_convs=bf16)
    entry = {}
    for batch in (sz["batch_small"], sz["batch_large"]):
      z = np.random.default_rng(batch).normal(size=(batch, G.z_dim)).astype(np.float32)
      c = np.asarray(camera.Camera.look_at(np.linspace(-0.3, 0.3, batch), 0.0).label)
      fn = jax.jit(lambda G, z, c: G(z, c))
      r = _timeit(lambda: fn(G, z, c), repeats)
      r["images_per_s"] = batch / r["median_s"]
      entry[f"batch_{batch}"] = r
      print(f"G {kernel} bf16={bf16} batch {batch}: {r}", flush=True)
    out[f"{kernel}/{bf16}"] = entry
  return out


TORCH_WORKER = r"""
import json, sys, time, statistics, torch
sys.path.insert(0, sys.argv[1])
from training.triplane import TriPlaneGenerator
kw = json.loads(sys.argv[2]); repeats = int(sys.argv[3]); batches = json.loads(sys.argv[4])
label = torch.tensor(json.loads(sys.argv[5]), dtype=torch.float32, device="cuda")  # one [25] camera
nrr = kw.pop("neural_rendering_resolution")
G = TriPlaneGenerator(**kw).eval().requires_grad_(False).cuda()
G.neural_rendering_resolution = nrr
out = {"version": torch.__version__, "device": torch.cuda.get_device_name()}
for b in batches:
  z = torch.randn(b, 512, device="cuda"); c = label[None].repeat(b, 1)
  def run():
    with torch.no_grad():
      y = G(z, c)["image"]
    torch.cuda.synchronize()
    return y
  t0 = time.perf_counter(); run(); first = time.perf_counter() - t0
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter(); run(); ts.append(time.perf_counter() - t0)
  out[f"batch_{b}"] = dict(first_call_s=first, median_s=statistics.median(ts), min_s=min(ts),
                           images_per_s=b / statistics.median(ts))
print(json.dumps(out))
"""


def bench_torch(eg3d_src, sz, repeats, timeout):
  import numpy as np
  from jaxinv.render import camera
  kw = dict(FFHQ512_KWARGS)
  label = np.asarray(camera.Camera.look_at(0.2, 0.1).label)[0].tolist()
  r = subprocess.run([sys.executable, "-c", TORCH_WORKER, eg3d_src, json.dumps(kw), str(repeats),
                      json.dumps([sz["batch_small"], sz["batch_large"]]), json.dumps(label)],
                     capture_output=True, text=True, timeout=timeout)
  if r.returncode != 0:
    return dict(error=(r.stderr or r.stdout)[-2000:])
  return json.loads(r.stdout.strip().splitlines()[-1])


def _write(results, out_dir, stem):
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
  lines = [f"# Rendering on {results['device']} ({'smoke: tiny sizes, CPU' if results['smoke'] else 'FFHQ-512 settings'})",
           "", results["note"], ""]
  r = results.get("renderer")
  if r:
    lines += ["## Renderer: XLA vs fused Pallas kernel", "",
              "| path | forward median | forward+backward median |", "|---|---|---|"]
    for k in ("xla", "pallas"):
      lines.append(f"| {k} | {r[k]['forward']['median_s'] * 1e3:.2f} ms | "
                   f"{r[k]['forward_backward']['median_s'] * 1e3:.2f} ms |")
    lines += ["", f"Speed-up (xla / pallas): forward {r['speedup_forward']:.2f}x, forward+backward "
              f"{r['speedup_forward_backward']:.2f}x (target >= 2x). Max |rgb diff| "
              f"{r['max_abs_diff_rgb']:.2g}.", ""]
    k = r["kernel_final_pass"]
    frac = k["fraction_of_peak_bandwidth"]
    lines += [f"Kernel alone (final pass): {k['median_s'] * 1e3:.2f} ms, modelled traffic "
              f"{k['modelled_bytes'] / 1e9:.2f} GB -> {k['achieved_bytes_per_s'] / 1e9:.1f} GB/s"
              + (f" = {frac:.1%} of peak" if frac is not None else " (peak unknown for this device)")
              + " (every gather counted as a DRAM read; caches can push this above 100%).", ""]
  g = results.get("generator")
  if g:
    lines += ["## G(z, c)", "", "| render_kernel / bf16_convs | batch | latency median | images/s |",
              "|---|---|---|---|"]
    for name, e in g.items():
      for b, v in e.items():
        lines.append(f"| {name} | {b.split('_')[1]} | {v['median_s'] * 1e3:.1f} ms | "
                     f"{v['images_per_s']:.1f} |")
    lines.append("")
  t = results.get("torch")
  if t:
    lines += ["## Official PyTorch EG3D (same GPU, same run)", ""]
    if "error" in t:
      lines.append(f"Failed: `{t['error'][-300:]}`")
    else:
      for b in (k for k in t if k.startswith("batch_")):
        lines.append(f"- {b}: {t[b]['median_s'] * 1e3:.1f} ms, {t[b]['images_per_s']:.1f} images/s")
    lines.append("")
  (out_dir / f"{stem}.md").write_text("\n".join(lines))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (Pallas interpret mode)")
  p.add_argument("--eg3d-src", default=None, help="official EG3D code (the folder with training/)")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--skip-g", action="store_true", help="only the renderer and the kernel")
  p.add_argument("--torch-timeout", type=int, default=420)
  p.add_argument("--out", default=str(REPO / "bench" / "results"))
  a = p.parse_args()
  if a.smoke:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  on_gpu = jax.default_backend() == "gpu"
  if not on_gpu and not a.smoke:
    sys.exit("render_gpu.py: no GPU backend here; run with --smoke for the CPU check")
  sz = _sizes(a.smoke)
  repeats = 1 if a.smoke else a.repeats
  stem = "render_gpu_smoke" if a.smoke else "render_gpu"
  results = dict(
      smoke=a.smoke, device=jax.devices()[0].device_kind, backend=jax.default_backend(),
      jax=jax.__version__, platform=platform.platform(), sizes=sz,
      note=("CPU smoke run: tiny sizes, Pallas in interpret mode; the times check that the script "
            "runs and mean nothing for performance." if a.smoke else
            "Medians of timed calls after one compiling call; G has random FFHQ-512 weights "
            "(timing only). bf16 = bf16_convs='superresolution' (the only bf16 the parity test "
            "allows)."))
  out_dir = pathlib.Path(a.out)
  results["renderer"] = bench_renderer(sz, repeats, interpret=not on_gpu)
  _write(results, out_dir, stem)
  if not a.skip_g:
    results["generator"] = bench_generator(sz, repeats, a.smoke)
    _write(results, out_dir, stem)
  if a.eg3d_src and on_gpu:
    results["torch"] = bench_torch(a.eg3d_src, sz, repeats, a.torch_timeout)
    _write(results, out_dir, stem)
  print((out_dir / f"{stem}.md").read_text())


if __name__ == "__main__":
  main()
