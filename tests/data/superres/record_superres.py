"""Records the official SuperresolutionHybrid4X / 8X outputs once (for test_superres_parity.py).

The official modules need torch, which is not a test dependency, so their outputs are stored in
``superres_official.npz`` beside this file. The weights and inputs are *not* stored: they are
drawn from seeded numpy generators by :func:`draw_state_dict` and :func:`draw_inputs` below (pure
numpy, imported by the test too), and the recording keeps a checksum of each so the test notices
if a numpy release ever draws different numbers.

How the recording was made (numbers from torch 2.13.0+cpu, numpy 2.4.6, Python 3.11, CPU, float32):

  # 1. the official code at the commit the golden fixtures use (nothing of it enters this repo)
  git clone https://github.com/NVlabs/eg3d /tmp/eg3d_official
  git -C /tmp/eg3d_official checkout 7cf1fd1e99e1061e8b6ba850f91c94fe56e7afe4
  # 2. a throwaway environment with torch (never the test environment)
  python -m venv /work/torchenv
  /work/torchenv/bin/pip install numpy scipy requests torch     # torch 2.13.0+cpu was used
  # 3. record (a few seconds on 2 CPU cores)
  /work/torchenv/bin/python tests/data/superres/record_superres.py /tmp/eg3d_official/eg3d \
      tests/data/superres/superres_official.npz

The modules are built as ``TriPlaneGenerator`` builds them (``channels=32``, ``sr_antialias``,
``sr_kwargs = dict(channel_base, channel_max, fused_modconv_default='inference_only')``), put in
eval mode (so the modulated convolutions run in their fused, grouped form) and called as the
generator calls them: ``sr(rgb, x, ws, noise_mode=...)``. Their block widths (128 and 64) are
hard-coded officially, so the weights are full size (0.57 M parameters per module, plus
0.16 M (4X) or 0.66 M (8X) noise_const buffer values).

Each case stores, as ``<case>.<name>``: the module's image, both blocks' ``(x, img)`` outputs and
the ``rgb`` argument after the call (the in-place quirk of ``SynthesisBlockNoUp``), each reduced
by :func:`views` (strided grid, corner crops, float64 per-channel mean and mean square), plus the
state-dict key order and shapes and the checksums.
"""
from __future__ import annotations

import sys

import numpy as np

W_DIM = 512
NUM_WS = 14          # the backbone's ws count in every EG3D config; the SR modules read ws[:, -1]
FEATURES = 32        # channels of EG3D's feature image

# name -> official class, final resolution, neural-rendering resolution fed in, batch,
# sr_num_fp16_res (> 0 turns on conv_clamp=256; fp16 itself is off on CPU), noise mode,
# bias scale (large biases push activations past the clamp), seed.
CASES = {
    # 128 px input: no resize; block0 (no upsampling) adds its ToRGB to `rgb` in place.
    "4x_native_const": dict(module="SuperresolutionHybrid4X", img_resolution=256, r=128, batch=2,
                            sr_num_fp16_res=0, noise_mode="const", bias_scale=1.0, seed=40),
    # 64 px input: bilinear upsampling to 128 first; conv_clamp=256 active and binding.
    "4x_up64_clamp": dict(module="SuperresolutionHybrid4X", img_resolution=256, r=64, batch=2,
                          sr_num_fp16_res=4, noise_mode="none", bias_scale=1000.0, seed=41),
    # 128 px input: no resize; block0 upsamples, so `rgb` is left alone.
    "8x_native": dict(module="SuperresolutionHybrid8X", img_resolution=512, r=128, batch=1,
                      sr_num_fp16_res=0, noise_mode="none", bias_scale=1.0, seed=80),
    # 256 px input: antialiased bilinear downsampling to 128 first; const noise.
    "8x_down256_const": dict(module="SuperresolutionHybrid8X", img_resolution=512, r=256, batch=1,
                             sr_num_fp16_res=0, noise_mode="const", bias_scale=1.0, seed=81),
}


def standard_filter() -> np.ndarray:
  """EG3D's ``upfirdn2d.setup_filter([1, 3, 3, 1])``: the normalised 4x4 outer product."""
  f = np.array([1, 3, 3, 1], np.float32)
  f = np.outer(f, f)
  return (f / f.sum()).astype(np.float32)


def draw_state_dict(keys, shapes, seed: int, bias_scale: float = 1.0) -> dict:
  """Official-named weights for the SR module, drawn in ``keys`` order from ``default_rng(seed)``.

  Unlike the official initialisation, biases and noise strengths are non-zero so that every
  tensor changes the output. ``resample_filter`` buffers are the standard filter.
  """
  rng = np.random.default_rng(seed)
  sd = {}
  for k, shape in zip(keys, shapes):
    shape = tuple(int(s) for s in shape)
    leaf = k.rsplit(".", 1)[-1]
    if leaf == "resample_filter":
      a = standard_filter()
    elif k.endswith("affine.bias"):
      a = 1.0 + 0.25 * rng.standard_normal(shape)
    elif leaf == "bias":
      a = 0.2 * bias_scale * rng.standard_normal(shape)
    elif leaf == "noise_strength":
      a = 0.3 * rng.standard_normal(shape)
    else:  # weight (affine, conv, torgb), noise_const
      a = rng.standard_normal(shape)
    sd[k] = np.asarray(a, np.float32).reshape(shape)
  return sd


def draw_inputs(case: dict) -> dict:
  """``rgb [B, 3, R, R]``, ``x [B, 32, R, R]``, ``ws [B, 14, 512]`` (NCHW, float32).

  ``rgb`` is drawn independently of ``x`` (the generator passes ``x[:, :3]``) so that mixing the
  two up is caught; the ws rows differ so that reading any row but the last is caught.
  """
  rng = np.random.default_rng(1000 + case["seed"])
  b, r = case["batch"], case["r"]
  x = rng.standard_normal((b, FEATURES, r, r)).astype(np.float32)
  rgb = rng.standard_normal((b, 3, r, r)).astype(np.float32)
  ws = rng.standard_normal((b, NUM_WS, W_DIM)).astype(np.float32)
  return dict(rgb=rgb, x=x, ws=ws)


def checksum(arrays) -> np.ndarray:
  """float64 [sum, sum of squares, sum of index-weighted values] over arrays in order."""
  s = np.zeros(3)
  for a in arrays:
    a = np.asarray(a, np.float64).ravel()
    s += [a.sum(), (a * a).sum(), (a * np.arange(1, a.size + 1) / a.size).sum()]
  return s


def views(a: np.ndarray) -> dict:
  """Reduced views of an NCHW map: enough to catch a wrong pixel region, channel or scale.

  ``grid``: a strided grid (odd offsets; 32x32 for images, 16x16 over 16 channels for
  features); ``tl`` / ``br``: 8x8 corner crops (padding and resampling edges) over at most 8
  channels; ``mean`` / ``meansq``: float64 per-channel statistics of the full map.
  """
  a = np.asarray(a)
  c, h = a.shape[1], a.shape[2]
  g = 32 if c <= 3 else 16
  s = max(1, h // g)
  cs = max(1, c // 16)
  return {
      "grid": np.ascontiguousarray(a[:, ::cs, s // 2 + 1::s, s // 2::s][:, :, :g, :g]),
      "tl": np.ascontiguousarray(a[:, :8, :8, :8]),
      "br": np.ascontiguousarray(a[:, :8, -8:, -8:]),
      "mean": a.reshape(a.shape[0], c, -1).mean(-1, dtype=np.float64),
      "meansq": np.square(a, dtype=np.float64).reshape(a.shape[0], c, -1).mean(-1),
  }


def _record_case(name: str, case: dict, classes) -> dict:
  import torch
  cls = classes[case["module"]]
  torch.manual_seed(0)  # only the initial values the state dict below overwrites
  sr = cls(channels=FEATURES, img_resolution=case["img_resolution"],
           sr_num_fp16_res=case["sr_num_fp16_res"], sr_antialias=True,
           channel_base=32768, channel_max=512, fused_modconv_default="inference_only")
  sr = sr.eval().requires_grad_(False)
  ref_sd = sr.state_dict()
  keys = list(ref_sd)
  shapes = [tuple(v.shape) for v in ref_sd.values()]
  sd = draw_state_dict(keys, shapes, case["seed"], case["bias_scale"])
  sr.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  inputs = draw_inputs(case)

  captured = {}
  def hook(block_name):
    def f(_module, _args, out):
      captured[block_name] = tuple(o.detach().clone().numpy() for o in out)
    return f
  sr.block0.register_forward_hook(hook("block0"))
  sr.block1.register_forward_hook(hook("block1"))
  rgb = torch.from_numpy(inputs["rgb"].copy())
  with torch.no_grad():
    image = sr(rgb, torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["ws"]),
               noise_mode=case["noise_mode"]).numpy()
  np.testing.assert_array_equal(captured["block1"][1], image)  # block1's img is the image
  maps = {"image": image, "block0_x": captured["block0"][0], "block0_img": captured["block0"][1],
          "block1_x": captured["block1"][0], "rgb_after": rgb.numpy()}
  out = {}
  for m, a in maps.items():
    for v, arr in views(a).items():
      out[f"{name}.{m}.{v}"] = arr
    out[f"{name}.{m}.shape"] = np.asarray(a.shape, np.int64)
  out[f"{name}.state_dict_keys"] = np.asarray(keys)
  out[f"{name}.state_dict_shapes"] = np.asarray(
      [",".join(str(s) for s in sh) for sh in shapes])
  out[f"{name}.weights_checksum"] = checksum(sd.values())
  out[f"{name}.inputs_checksum"] = checksum(inputs[k] for k in ("rgb", "x", "ws"))
  out[f"{name}.rgb_changed_in_place"] = np.asarray(
      not np.array_equal(maps["rgb_after"], inputs["rgb"]))
  clamp = 256.0 if case["sr_num_fp16_res"] > 0 else np.inf
  out[f"{name}.fraction_at_clamp"] = np.asarray(
      np.mean(np.abs(captured["block1"][0]) >= clamp - 1e-3))
  print(f"{name}: image {image.shape} |max| {np.abs(image).max():.3f}, block1_x |max| "
        f"{np.abs(captured['block1'][0]).max():.3f}, at clamp "
        f"{float(out[f'{name}.fraction_at_clamp']):.3f}, rgb in place "
        f"{bool(out[f'{name}.rgb_changed_in_place'])}")
  return out


def main(eg3d_root: str, out_path: str) -> None:
  import subprocess

  import torch
  sys.path.insert(0, eg3d_root)
  from training import superresolution as official
  classes = {"SuperresolutionHybrid4X": official.SuperresolutionHybrid4X,
             "SuperresolutionHybrid8X": official.SuperresolutionHybrid8X}
  try:
    commit = subprocess.run(["git", "-C", eg3d_root, "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown (not a git checkout)"
  out = {}
  for name, case in CASES.items():
    out.update(_record_case(name, case, classes))
  out["meta.eg3d_commit"] = np.asarray(commit)
  out["meta.torch"] = np.asarray(torch.__version__)
  out["meta.numpy"] = np.asarray(np.__version__)
  np.savez_compressed(out_path, **out)
  print(f"wrote {out_path} (eg3d {commit}, torch {torch.__version__})")


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2])
