"""Seconds per image of every ``jaxinv.invert`` method, and GOAE / PTI against the official code.

    python bench/invert.py --preset tiny --steps 10 --torch-python /path/to/torch/python \
        --upstream goae=<jiangyzy/GOAE checkout>/goae \
        --upstream eg3d_projector=<oneThousand1000/EG3D-projector checkout>/eg3d

1. Per method (``--methods``, default all; ``--methods`` alone: none): ``compile_s`` (first call:
   tracing + compilation + one run) and ``seconds_per_image`` (median of ``--runs`` further
   calls / batch) of ``jaxinv.invert`` on ``--preset`` (no torch needed). Presets:
     tiny          the golden fixture's tiny EG3D (``shared/fixtures/eg3d/tiny``: 128 px output,
                   32^2 neural rendering, 12+12 samples) with tiny stand-in encoders.
     ffhq512_slim  the fixture's FFHQ-512 topology (512 px, 8X superresolution, 48+48 samples,
                   128^2 neural rendering, slim backbone widths), the full-size GOAE encoder
                   (Swin-V2, 256 px), AFA at the generator's feature width, full IR-SE-50 pSp
                   family / TriPlaneNet networks.
   Both generators carry the fixture's official weights (``state_dict.npz``, via
   ``jaxinv.convert.eg3d``); encoders are random (timing only). Optimisation baselines run
   ``--steps`` steps (PTI: that many pivot + tuning steps; tri-plane L-BFGS steps/20 steps after a
   W start); their cost per step is linear in the step count (one compiled ``lax.scan``), so the
   papers' budgets (W+ 1000 steps, PTI 450 + 350) extrapolate with the per-step column.
2. ``--upstream goae=``: GOAE's full inversion at ``--goae-preset`` (default ffhq512_slim),
   official vs jaxinv, same weights, same input, same run. Official: ``training/goae.py``
   ``Net.forward`` (Swin encoder + w_avg -> EG3D render of the w+ planes -> AFA on the residual
   -> render of the refined planes -> occlusion-aware mix), then ``infer.py``'s re-render of the
   mixed tri-plane at the input view (``synthesis(..., forward_triplane=True)``), under
   ``torch.no_grad`` with GOAE's own EG3D (``training/triplane.py``). ``Net`` is built by its own
   ``__init__`` with ``set_generator`` returning the fixture G and ``set_afa`` the patched AFA;
   encoder and AFA are random (seed 0) and their state dicts are converted into jaxinv
   (``jaxinv.convert.goae``). jaxinv: ``jaxinv.invert(method='goae')`` then ``Inversion.render()``.
3. ``--upstream eg3d_projector=``: PTI at ``--pti-preset`` (default tiny), official vs jaxinv,
   same G weights, ``--pti-pivot-steps`` pivot + ``--pti-steps`` tuning steps (each default
   ``--steps``; the release's budget is 450 + 350), L2 + LPIPS-alex (the fixture
   ``lpips_alex`` weights on both sides), ``--num-w-samples`` for the W statistics. Official: the
   two EG3D-projector scripts' functions, ``projector/w_projector.project`` (the W pivot, as
   ``run_projector.py --latent_space_type w``) then ``projector/PTI``'s
   ``SingleImageCoach.train`` (as ``run_pti_single_image.py``: ``configs/hyperparameters.py``,
   Adam lr 3e-4, ``pt_l2_lambda = pt_lpips_lambda = 1``, no locality regulariser). The LPIPS
   early stop (release 0.06) is ``--pti-lpips-threshold`` on both sides, default 0 (off): with
   the fixture's random-trunk LPIPS the official loop otherwise stops before its first tuning
   step, so the two sides would not run the same steps. jaxinv: ``jaxinv.invert(method='pti',
   pivot='w', locality_weight=0, lpips_threshold=<same>)``.

Run-time patches of the official code (no upstream file is edited except where said; the
checkouts come from the ``fetch`` tool and are never vendored):
* GOAE ``models/afa.py`` (edited in a copy in the work dir): the AFA's feature width 512 becomes
  a ``feat_dim`` argument (``AFA_PATCH``), because the slim fixture's 32x32 map has fewer channels.
* The checkpoints the scripts load (``legacy.load_network_pkl``, ``load_old_G``, ``E_ckpt`` /
  ``AFA_ckpt``) are replaced by the fixture G and seeded random modules; ``load_old_G``'s
  doubling of the depth samples (``sampling_multiplier=2``) is not applied, so both sides render
  with the fixture's samples.
* ``Tensor.cuda`` is the identity (the scripts call ``.cuda()``); ``wandb``, ``matplotlib`` and
  ``models.e4e.psp`` (only for e4e pivots) are inert stubs.
* The projector's VGG16 TorchScript (a download) is replaced by LPIPS-alex features whose summed
  squared difference, the projector's own ``dist``, equals LPIPS-alex exactly (``_lpips_features``);
  jaxinv's pivot adds an L2 term (negligible cost).
* The coach's ``LPIPS(net='alex')`` is ``lpips.LPIPS(net='alex', pnet_rand=True)`` loaded with
  the fixture weights (no download). Note: the coach's LPIPS runs at the image size, jaxinv's at
  <= 256^2 (the same below 256, e.g. the tiny preset).
* For one sanity call only, the renderer's ``torch.rand`` / ``rand_like`` give jaxinv's
  ``key=None`` draws and GOAE's blur sigmas are 1.5 (``_deterministic``); the outputs of both
  sides are compared (``sanity``). Timed calls use the ordinary random draws on both sides.

torch runs in a child process (``--torch-python``, ``--threads`` threads), before the jaxinv
side of the same comparison, never beside it. Results: bench/results/invert_<device>.{json,md}
with the load average at the start and end of each entry.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("JAXINV_SHARED", REPO.parent / "shared"))
ALL = ("psp", "e4e", "preim3d", "triplanenet", "goae", "nerf3de", "w", "wplus", "pti",
       "triplane_opt")


def _load() -> str:
  try:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
  except OSError:
    return "n/a"


def _fixture(preset):
  d = SHARED / "fixtures" / "eg3d" / preset
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "state_dict.npz") as z:
    sd = {k: z[k] for k in z.files}
  return cfg, sd


def _generator(preset):
  """The golden fixture's generator (official weights ``state_dict.npz``) in jaxinv."""
  from jaxinv.convert import eg3d as eg3d_convert
  cfg, sd = _fixture(preset)
  kw = dict(cfg["constructor_kwargs"])
  kw["neural_rendering_resolution"] = int(cfg.get("neural_rendering_resolution", 128))
  return eg3d_convert.from_state_dict(sd, kw)


def _stand_ins():
  import flax.linen as nn
  from jaxinv.models.encoders.triplanenet import offsets_to_planes
  from jaxinv.ops.pooling import adaptive_avg_pool2d

  class Codes(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.relu(nn.Conv(16, (3, 3), strides=(4, 4))(x))
      h = adaptive_avg_pool2d(h, 4).reshape(x.shape[0], -1)
      return nn.Dense(14 * 512)(h).reshape(-1, 14, 512) * 0.05

  class Offsets(nn.Module):
    @nn.compact
    def __call__(self, x):
      return offsets_to_planes(nn.Conv(96, (3, 3))(x) * 0.01)
  return Codes(), Offsets()


def _weights(preset, method, G):
  import jax
  import jax.numpy as jnp
  from jaxinv.convert.psp import EncoderCheckpoint, build_encoder
  from jaxinv.convert.triplanenet import TriPlaneNetCheckpoint
  from jaxinv.inversion import goae as gi
  key = jax.random.PRNGKey(1)
  w = {"generator": G}
  x3, x6 = jnp.zeros((1, 256, 256, 3)), jnp.zeros((1, 256, 256, 6))
  if preset == "tiny":
    codes, offsets = _stand_ins()
    if method in ("psp", "e4e", "preim3d", "triplanenet"):
      ck = EncoderCheckpoint("GradualStyleEncoder", codes, jax.jit(codes.init)(key, x3), None, {})
      w["encoder"] = ck
      if method == "triplanenet":
        w["encoder"] = TriPlaneNetCheckpoint(codes, ck.variables, offsets,
                                             jax.jit(offsets.init)(key, x6), {}, {})
  elif method in ("psp", "e4e", "preim3d", "triplanenet"):
    from jaxinv.models.encoders.triplanenet import TriPlaneEncoder
    kind = {"psp": "GradualStyleEncoder", "e4e": "Encoder4Editing",
            "preim3d": "BackboneEncoderUsingLastLayerIntoWPlus", "triplanenet": "GradualStyleEncoder"}
    m = build_encoder(kind[method], 14)
    ck = EncoderCheckpoint(kind[method], m, jax.jit(m.init)(key, x3), None, {})
    w["encoder"] = ck
    if method == "triplanenet":
      t = TriPlaneEncoder()
      w["encoder"] = TriPlaneNetCheckpoint(m, ck.variables, t, jax.jit(t.init)(key, x6), {}, {})
  if method == "goae":
    from jaxinv.models.encoders.goae import AFAConfig, GOAEncoderConfig
    feat = gi._feature_channels(G)
    if preset == "tiny":
      sys.path.insert(0, str(REPO / "tests"))
      from _goae_helpers import tiny_afa_config, tiny_encoder_config
      ecfg, acfg = tiny_encoder_config(w_dim=512, ws_split=(1, 3, 3, 7)), tiny_afa_config(feat)
    else:
      ecfg, acfg = GOAEncoderConfig(), AFAConfig(feat_dim=feat)
    w["encoder"] = gi.init_goae(key, ecfg, acfg, image_size=G.config.img_resolution)
  if method == "nerf3de":
    from jaxinv.inversion import nerf3de as n3
    from jaxinv.models.encoders.nerf3de import NeRF3DEConfig
    cfg = NeRF3DEConfig(backbone="small", input_size=64) if preset == "tiny" else NeRF3DEConfig()
    model = n3.NeRF3DE.build(cfg)
    w["encoder"] = (model, jax.jit(model.init)(key))
  return w


def _options(method, steps):
  small = {"num_w_samples": 1000}
  if method in ("w", "wplus"):
    return dict(small, steps=steps)
  if method == "pti":
    return dict(small, pivot_steps=steps, steps=steps)
  if method == "triplane_opt":
    return dict(small, start="w", start_steps=steps, steps=max(1, steps // 20),
                max_linesearch_steps=20)
  return {}


def bench(preset, method, G, batch, runs, steps) -> dict:
  import jax
  import jax.numpy as jnp
  import jaxinv
  from jaxinv.render.camera import Camera
  w = _weights(preset, method, G)
  c = jnp.broadcast_to(Camera.look_at(0.2, 0.0).label, (batch, 25))
  ws = G.mapping(jax.random.normal(jax.random.PRNGKey(2), (batch, G.z_dim)), c)
  image = jnp.clip(G.synthesis(ws, c)["image"], -1, 1)
  opts = _options(method, steps)
  load0 = _load()

  def once():
    inv = jaxinv.invert(image, c, method=method, weights=w, key=jax.random.PRNGKey(3), **opts)
    jax.block_until_ready(jax.tree_util.tree_leaves(inv.replace(G=None)))
    return inv

  t = time.perf_counter()
  once()
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    once()
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  out = {"method": method, "batch": batch, "compile_s": compile_s, "median_s": med,
         "seconds_per_image": med / batch, "runs": runs, "options": opts,
         "load_start": load0, "load_end": _load()}
  if method in ("w", "wplus", "pti"):
    n = steps * (2 if method == "pti" else 1)
    out["seconds_per_step_per_image"] = med / batch / n
  return out


# --------------------------------------------------------------------- official side (torch)
# Everything below ``_worker_*`` runs in the torch interpreter (``--torch-python``), in a child
# process, before the jaxinv side of the same comparison (never at the same time).

TOP_LEVEL = ("training", "torch_utils", "dnnlib", "camera_utils", "models", "criteria", "utils",
             "configs", "legacy", "projector", "metrics", "wandb", "matplotlib")

# GOAE's AFA hard-codes the released generator's 512-channel 32x32 feature map; the slim fixture's
# is narrower. The one patch of an upstream file (a copy in the work dir): the width as a
# constructor argument. (old, new, count) in models/afa.py.
AFA_PATCH = (("def __init__(self,  **unused):", "def __init__(self, feat_dim=512, **unused):", 1),
             ("EqualConv2d(256, 512, 3", "EqualConv2d(256, feat_dim, 3", 1),
             ("EqualConv2d(512, 512, 3", "EqualConv2d(feat_dim, feat_dim, 3", 1),
             ("nn.LayerNorm(512,", "nn.LayerNorm(feat_dim,", 2),
             ("CrossAttention(512, 4, 1024", "CrossAttention(feat_dim, 4, 1024", 2))


def _purge():
  for name in [m for m in sys.modules if m.split(".")[0] in TOP_LEVEL]:
    del sys.modules[name]


def _official_G(checkout, preset):
  """``training.triplane.TriPlaneGenerator`` of ``checkout`` with the fixture's weights."""
  import torch
  cfg, sd = _fixture(preset)
  tri = importlib.import_module("training.triplane")
  G = tri.TriPlaneGenerator(**cfg["constructor_kwargs"])
  G.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  G.eval().requires_grad_(False)
  G.neural_rendering_resolution = int(cfg["neural_rendering_resolution"])
  return G


@contextlib.contextmanager
def _deterministic():
  """jaxinv's ``key=None`` draws in the official code: stratified jitter 0.5 (``rand_like``),
  importance ``u = linspace(0, 1, Ni)`` (``rand``, only called by ``sample_pdf``), GOAE's two
  blur sigmas 1.5."""
  import torch
  from torchvision import transforms
  rand, rand_like = torch.rand, torch.rand_like
  gp = transforms.GaussianBlur.__dict__["get_params"]  # the staticmethod object itself

  def linspace(*size, device=None, dtype=None, **_):
    if len(size) == 1 and isinstance(size[0], (list, tuple, torch.Size)):
      size = tuple(size[0])
    return torch.linspace(0.0, 1.0, size[-1], device=device).expand(size).contiguous()
  torch.rand = linspace
  torch.rand_like = lambda t, **_: torch.full_like(t, 0.5)
  transforms.GaussianBlur.get_params = staticmethod(lambda lo, hi: 1.5)
  try:
    yield
  finally:
    torch.rand, torch.rand_like, transforms.GaussianBlur.get_params = rand, rand_like, gp


def _target(G, inputs):
  """The benchmark input: the official G's image of ``z`` under ``c`` (deterministic draws)."""
  import torch
  z, c = torch.from_numpy(inputs["z"]), torch.from_numpy(inputs["c"])
  with torch.no_grad(), _deterministic():
    ws = G.mapping(z, c)
    out = G.synthesis(ws, c, noise_mode="const", **({"forward": True} if _is_goae(G) else {}))
  return ws, out["image"]


def _is_goae(G):
  import inspect
  return "train_forward_1" in inspect.signature(type(G).synthesis).parameters


def _swin_config():
  """GOAE ``configs/swinv2.yaml`` over the ``swin_config.py`` defaults (as bench/encoders.py)."""
  ns = types.SimpleNamespace
  return ns(DATA=ns(IMG_SIZE=256),
            MODEL=ns(NUM_CLASSES=1000, DROP_RATE=0.0, DROP_PATH_RATE=0.2,
                     SWINV2=ns(PATCH_SIZE=4, IN_CHANS=3, EMBED_DIM=128, DEPTHS=[2, 2, 18, 2],
                               NUM_HEADS=[4, 8, 16, 32], WINDOW_SIZE=16, MLP_RATIO=4.0,
                               QKV_BIAS=True, APE=False, PATCH_NORM=True,
                               PRETRAINED_WINDOW_SIZES=[12, 12, 12, 6])),
            TRAIN=ns(USE_CHECKPOINT=False))


def _worker_goae(a, wd: pathlib.Path) -> dict:
  """Official GOAE inference: ``Net.forward`` (encoder -> EG3D render -> AFA -> refined render ->
  occlusion-aware mix) and the mixed tri-plane's re-render at the input view (``infer.py``'s
  ``synthesis(..., forward_triplane=True)``), torch.no_grad, as ``infer.py``."""
  import torch
  import torch.nn.functional as F
  src = wd / "goae_src"
  shutil.copytree(a.upstream["goae"], src)
  afa_py = src / "models" / "afa.py"
  text = afa_py.read_text()
  for old, new, n in AFA_PATCH:
    assert text.count(old) == n, (old, text.count(old))
    text = text.replace(old, new)
  afa_py.write_text(text)
  _purge()
  sys.path.insert(0, str(src))
  goae_mod = importlib.import_module("training.goae")
  afa_mod = importlib.import_module("models.afa")
  G = _official_G(src, a.goae_preset)
  feat = int(G.backbone.synthesis.b32.conv1.weight.shape[0])
  inputs = dict(np.load(wd / "inputs.npz"))
  ws, image = _target(G, inputs)
  torch.manual_seed(0)

  class BenchNet(goae_mod.Net):  # the released checkpoints -> the fixture G, random E / AFA
    def set_generator(self, device, opts):
      return G

    def set_afa(self, device, opts):
      return afa_mod.AFA(feat_dim=feat).to(device)
  opts = argparse.Namespace(mlp_layer=2, E_ckpt=None, AFA_ckpt=None, start_from_latent_avg=True)
  net = BenchNet(torch.device("cpu"), opts, _swin_config()).eval()
  c = torch.from_numpy(inputs["c"])
  x_512 = image.clamp(-1, 1)
  x = F.adaptive_avg_pool2d(x_512, (256, 256))

  def once():
    t0 = time.perf_counter()
    rec, _ = net(x, c, x_512, return_latents=True)
    t1 = time.perf_counter()
    re = G.synthesis(ws=rec["rec_ws"], c=c, triplane=rec["mix_triplane"], forward_triplane=True,
                     noise_mode="const")
    return rec, re, t1 - t0, time.perf_counter() - t1

  with torch.no_grad():
    with _deterministic():
      rec, re, f0, r0 = once()
    np.savez(wd / "official.npz", ws=ws.numpy(), image=image.numpy(),
             rec_ws=rec["rec_ws"].numpy(), rec_image=rec["image"].numpy(),
             mix_triplane=rec["mix_triplane"].numpy(), rerender=re["image"].numpy())
    np.savez(wd / "encoder_sd.npz", **{k: v.numpy() for k, v in net.encoder.state_dict().items()})
    np.savez(wd / "afa_sd.npz", **{k: v.numpy() for k, v in net.afa.state_dict().items()})
    fwd, rer = [], []
    for _ in range(a.runs):
      _, _, f, r = once()
      fwd.append(f)
      rer.append(r)
  return {"forward_s": statistics.median(fwd), "rerender_s": statistics.median(rer),
          "forward_runs_s": fwd, "rerender_runs_s": rer, "first_forward_s": f0,
          "first_rerender_s": r0, "feat_dim": feat}


def _official_lpips():
  """``lpips.LPIPS(net='alex', version='0.1')`` with the fixture ``lpips_alex`` weights."""
  import lpips
  import torch
  sd = _lpips_sd()
  m = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
  m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
  return m.eval()


def _lpips_sd():
  spec = importlib.util.spec_from_file_location("fixture_weights",
                                                SHARED / "fixtures" / "fixture_weights.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.load_state_dict(str(SHARED / "fixtures" / "lpips_alex"))


def _lpips_features(lp):
  """Stands in for the projector's VGG16 ``vgg16(img, resize_images=False, return_lpips=True)``:
  features whose squared distance summed is exactly LPIPS-alex (each layer's unit-normalised
  activations times sqrt(lin weight / H W)), so the projector's own ``dist`` is LPIPS."""
  import lpips
  import torch

  class Features(torch.nn.Module):
    def forward(self, img, resize_images=False, return_lpips=True):
      outs = lp.net.forward(lp.scaling_layer(img / 127.5 - 1))
      feats = []
      for k in range(lp.L):
        f = lpips.normalize_tensor(outs[k])
        w = lp.lins[k].model[-1].weight.clamp(min=0)
        feats.append((f * torch.sqrt(w / (f.shape[2] * f.shape[3]))).flatten(1))
      return torch.cat(feats, 1)
  return Features().eval()


def _stub(name, **attrs):
  mod = types.ModuleType(name)
  mod.__dict__.update(attrs)
  sys.modules[name] = mod
  return mod


def _worker_pti(a, wd: pathlib.Path) -> dict:
  """EG3D-projector's two scripts: ``projector/w_projector.project`` (the pivot, as
  ``run_projector.py --latent_space_type w``) then ``PTI``'s ``SingleImageCoach.train`` (as
  ``run_pti_single_image.py``), same steps as jaxinv."""
  import torch
  from PIL import Image
  from torchvision.transforms import transforms
  root = pathlib.Path(a.upstream["eg3d_projector"])
  inputs = dict(np.load(wd / "inputs.npz"))
  lp = _official_lpips()
  torch.Tensor.cuda = lambda self, *_, **__: self  # the scripts call .cuda() on CPU tensors
  # ---- pivot: projector/w_projector.py with the eg3d/ tree first on the path
  _purge()
  sys.path.insert(0, str(root))
  G = _official_G(root, a.pti_preset)
  ws, image = _target(G, inputs)
  target = image.clamp(-1, 1)
  wproj = importlib.import_module("projector.w_projector")
  wproj.dnnlib.util.open_url = lambda *_, **__: contextlib.nullcontext(None)
  jit_load = torch.jit.load
  torch.jit.load = lambda *_, **__: _lpips_features(_official_lpips().requires_grad_(False))
  proj_dir = wd / "proj"
  proj_dir.mkdir()
  cwd = os.getcwd()
  os.chdir(proj_dir)  # the projector refuses to run where a ./w_avg.npy exists
  np.random.seed(0)
  torch.manual_seed(0)
  c = torch.from_numpy(inputs["c"])
  try:
    t0 = time.perf_counter()
    w = wproj.project(G, c, str(proj_dir), ((target[0] + 1) * 127.5).clamp(0, 255),
                      num_steps=a.pti_pivot_steps, w_avg_samples=a.num_w_samples, device=torch.device("cpu"),
                      w_name="bench")
    pivot_s = time.perf_counter() - t0
  finally:
    os.chdir(cwd)
    torch.jit.load = jit_load
  sys.path.remove(str(root))
  # ---- tuning: projector/PTI (its own training/ tree), run_pti_single_image.py's transform
  _purge()
  pti_root = root / "projector" / "PTI"
  sys.path.insert(0, str(pti_root))
  _stub("wandb", log=lambda *_, **__: None, Image=lambda *_, **__: None)
  _stub("matplotlib")
  _stub("matplotlib.pyplot")
  _stub("models.e4e.psp", pSp=None)  # e4e pivots only (first_inv_type 'w+'); we give the W pivot
  gc = importlib.import_module("configs.global_config")
  hp = importlib.import_module("configs.hyperparameters")
  paths = importlib.import_module("configs.paths_config")
  gc.device = "cpu"
  hp.max_pti_steps = a.pti_steps
  hp.LPIPS_value_threshold = a.pti_lpips_threshold
  paths.checkpoints_dir = str(wd / "checkpoints")
  G2 = _official_G(pti_root, a.pti_preset)
  base = importlib.import_module("training.coaches.base_coach")
  base.load_old_G = lambda *_, **__: copy.deepcopy(G2)  # the fixture G, samples not doubled
  base.LPIPS = lambda *_, **__: lp
  sic = importlib.import_module("training.coaches.single_image_coach")
  img_path, w_path, c_path = wd / "target.png", wd / "bench.npy", wd / "c.npy"
  u8 = ((target[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
  Image.fromarray(u8).save(img_path)
  np.save(w_path, w.detach().numpy())
  np.save(c_path, inputs["c"])
  trans = transforms.Compose([transforms.ToTensor(),
                              transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
  torch.manual_seed(0)
  coach = sic.SingleImageCoach(trans)
  gc.training_step = 1
  t0 = time.perf_counter()
  coach.train(str(img_path), str(w_path), str(c_path))
  tune_s = time.perf_counter() - t0
  np.savez(wd / "official.npz", ws=ws.numpy(), image=image.numpy())
  return {"pivot_s": pivot_s, "tune_s": tune_s, "total_s": pivot_s + tune_s,
          "pivot_steps": a.pti_pivot_steps, "tune_steps_run": gc.training_step - 1,
          "num_w_samples": a.num_w_samples}


def _run_worker(a, kind: str, wd: pathlib.Path) -> dict:
  cmd = [a.torch_python, str(pathlib.Path(__file__).resolve()), "--_worker", kind,
         "--_workdir", str(wd), "--goae-preset", a.goae_preset, "--pti-preset", a.pti_preset,
         "--runs", str(a.runs), "--steps", str(a.steps), "--threads", str(a.threads),
         "--pti-pivot-steps", str(a.pti_pivot_steps), "--pti-steps", str(a.pti_steps),
         "--num-w-samples", str(a.num_w_samples), "--pti-lpips-threshold",
         str(a.pti_lpips_threshold)]
  for k, v in a.upstream.items():
    cmd += ["--upstream", f"{k}={v}"]
  load0 = _load()
  t = time.perf_counter()
  p = subprocess.run(cmd, capture_output=True, text=True)
  if p.returncode:
    raise RuntimeError(f"official {kind} worker failed:\n{p.stderr[-4000:]}")
  out = json.loads(p.stdout.strip().splitlines()[-1])
  out.update(wall_s=time.perf_counter() - t, load_start=load0, load_end=_load())
  return out


def _worker_main(a):
  import torch
  torch.set_num_threads(a.threads)
  wd = pathlib.Path(a._workdir)
  out = {"goae": _worker_goae, "pti": _worker_pti}[a._worker](a, wd)
  out["torch"] = torch.__version__
  out["threads"] = torch.get_num_threads()
  print(json.dumps(out), flush=True)


# ------------------------------------------------------------ jaxinv side of the comparisons

def _inputs(G, wd: pathlib.Path):
  import jax.numpy as jnp
  from jaxinv.render.camera import Camera
  c = np.asarray(jnp.reshape(Camera.look_at(0.2, 0.0).label, (1, 25)), np.float32)
  z = np.random.RandomState(0).randn(1, G.z_dim).astype(np.float32)
  np.savez(wd / "inputs.npz", z=z, c=c)
  return z, c


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _sanity_G(G, z, c, ref) -> dict:
  """The same generator on both sides: mapping and image with the 0.5 draws."""
  import jax
  ws = jax.jit(G.mapping)(z, c)
  img = jax.jit(lambda ws, c: G.synthesis(ws, c)["image"])(ref["ws"], c)
  return {"ws_max_diff": _max_diff(ws, ref["ws"]),
          "image_max_diff": _max_diff(np.transpose(img, (0, 3, 1, 2)), ref["image"]),
          "image_abs_max": float(np.max(np.abs(ref["image"])))}


def compare_goae(a) -> dict:
  import jax
  import jaxinv
  from jaxinv.convert import goae as goae_convert
  from jaxinv.inversion import goae as gi
  from jaxinv.models.encoders.goae import AFAConfig, GOAEncoderConfig
  wd = pathlib.Path(tempfile.mkdtemp(prefix="jaxinv_bench_invert_goae_"))
  G = _generator(a.goae_preset)
  z, c = _inputs(G, wd)
  off = _run_worker(a, "goae", wd)
  ref = dict(np.load(wd / "official.npz"))
  row = {"comparison": "goae", "preset": a.goae_preset, "batch": 1, "official": off,
         "sanity": _sanity_G(G, z, c, ref)}
  feat = gi._feature_channels(G)
  enc = goae_convert.convert_encoder(dict(np.load(wd / "encoder_sd.npz")), GOAEncoderConfig())
  acfg = AFAConfig(feat_dim=feat)
  afa = goae_convert.convert_afa(dict(np.load(wd / "afa_sd.npz")), acfg)
  w = {"generator": G, "encoder": gi.GOAE(GOAEncoderConfig(), acfg, enc, afa)}
  image = np.clip(np.transpose(ref["image"], (0, 2, 3, 1)), -1, 1)
  load0 = _load()

  def once(key):
    t0 = time.perf_counter()
    inv = jaxinv.invert(image, c, method="goae", weights=w, key=key)
    jax.block_until_ready((inv.ws, inv.planes))
    t1 = time.perf_counter()
    re = inv.render(key=key)["image"]
    jax.block_until_ready(re)
    return inv, re, t1 - t0, time.perf_counter() - t1

  inv, re, f0, r0 = once(None)  # compile + run, deterministic draws (sigmas 1.5): the check
  row["sanity"].update(
      rec_ws_max_diff=_max_diff(inv.ws, ref["rec_ws"]),
      mix_triplane_max_diff=_max_diff(np.transpose(inv.planes, (0, 1, 4, 2, 3)),
                                      ref["mix_triplane"]),
      mix_triplane_abs_max=float(np.max(np.abs(ref["mix_triplane"]))),
      # Plane 0 is mixed by the visibility mask, a threshold of splatted surface texels: a texel
      # whose surface point moves across a texel border flips; planes 1-2 are not mixed.
      plane0_frac_over_1e3=float(np.mean(np.abs(np.transpose(inv.planes, (0, 1, 4, 2, 3))[:, 0]
                                                - ref["mix_triplane"][:, 0]) > 1e-3)),
      planes12_max_diff=_max_diff(np.transpose(inv.planes, (0, 1, 4, 2, 3))[:, 1:],
                                  ref["mix_triplane"][:, 1:]),
      rerender_max_diff=_max_diff(np.transpose(re, (0, 3, 1, 2)), ref["rerender"]))
  # A key traces the random draws: a second compile, kept out of the timed calls.
  _, _, wf, wr = once(jax.random.PRNGKey(2))
  fwd, rer = [], []
  for i in range(a.runs):
    _, _, f, r = once(jax.random.PRNGKey(3 + i))  # the renderer's and the blurs' random draws
    fwd.append(f)
    rer.append(r)
  row["jaxinv"] = {"forward_s": statistics.median(fwd), "rerender_s": statistics.median(rer),
                   "forward_runs_s": fwd, "rerender_runs_s": rer,
                   "compile_forward_s": f0, "compile_rerender_s": r0,
                   "compile_keyed_forward_s": wf, "compile_keyed_rerender_s": wr,
                   "load_start": load0, "load_end": _load()}
  row["ratio_forward"] = row["jaxinv"]["forward_s"] / off["forward_s"]
  row["ratio_forward_rerender"] = ((row["jaxinv"]["forward_s"] + row["jaxinv"]["rerender_s"])
                                   / (off["forward_s"] + off["rerender_s"]))
  shutil.rmtree(wd, ignore_errors=True)
  return row


def compare_pti(a) -> dict:
  import jax
  import jaxinv
  from jaxinv.convert import lpips as lpips_convert
  wd = pathlib.Path(tempfile.mkdtemp(prefix="jaxinv_bench_invert_pti_"))
  G = _generator(a.pti_preset)
  z, c = _inputs(G, wd)
  off = _run_worker(a, "pti", wd)
  ref = dict(np.load(wd / "official.npz"))
  row = {"comparison": "pti", "preset": a.pti_preset, "batch": 1, "official": off,
         "sanity": _sanity_G(G, z, c, ref)}
  lp = lpips_convert.convert_lpips_module(_lpips_sd(), "alex")
  w = {"generator": G, "lpips": ("alex", lp)}
  image = np.clip(np.transpose(ref["image"], (0, 2, 3, 1)), -1, 1)
  opts = dict(pivot_steps=a.pti_pivot_steps, steps=a.pti_steps, num_w_samples=a.num_w_samples,
              locality_weight=0.0, lpips_threshold=a.pti_lpips_threshold)
  load0 = _load()

  def once():
    t0 = time.perf_counter()
    inv = jaxinv.invert(image, c, method="pti", weights=w, key=jax.random.PRNGKey(3), **opts)
    jax.block_until_ready(jax.tree_util.tree_leaves((inv.ws, inv.G.params)))
    return inv, time.perf_counter() - t0

  inv, first = once()
  times = [once()[1] for _ in range(max(1, a.pti_runs))]
  row["jaxinv"] = {"total_s": statistics.median(times), "runs_s": times,
                   "compile_s": first, "options": opts, "lpips": bool(inv.extra.get("lpips")),
                   "load_start": load0, "load_end": _load()}
  row["ratio"] = row["jaxinv"]["total_s"] / off["total_s"]
  shutil.rmtree(wd, ignore_errors=True)
  return row


def _f(x, fmt=".2f"):
  return "" if x is None else format(x, fmt)


def _markdown(meta, rows, comps) -> str:
  lines = [f"# jaxinv.invert seconds per image ({meta['device']}, preset {meta['preset']})", "",
           f"jax {meta['jax']}, {meta['cpus']} CPU(s) shared with other jobs; load average "
           "(1/5/15 min) at the start and end of each entry. Fixture EG3D weights, random "
           f"encoders (timing only). Started {meta['started']}, finished {meta.get('finished', '(running)')}.",
           "", f"Command: `{meta['command']}`", ""]
  if rows:
    lines += ["| method | batch | s / image | first call (compile) s | s / step / image | load start -> end |",
              "|---|---|---|---|---|---|"]
    for r in rows:
      if "error" in r:
        lines.append(f"| {r['method']} | | error: {r['error'][:100]} | | | |")
        continue
      sps = r.get("seconds_per_step_per_image")
      lines.append(f"| {r['method']} | {r['batch']} | {r['seconds_per_image']:.3f} | "
                   f"{r['compile_s']:.1f} | {_f(sps, '.3f')} | "
                   f"{r['load_start']} -> {r['load_end']} |")
    lines += ["", f"Optimisation baselines ran {meta['steps']} steps (PTI: {meta['steps']} pivot + "
              f"{meta['steps']} tuning steps; tri-plane L-BFGS {max(1, meta['steps'] // 20)} "
              "step(s) after a W start); the per-step column scales to the papers' budgets.", ""]
  for c in comps:
    if "error" in c:
      lines += [f"## {c['comparison']}: not measured", "", "```", c["error"][-1500:], "```", ""]
      continue
    o, j, sa = c["official"], c["jaxinv"], c["sanity"]
    if c["comparison"] == "goae":
      lines += [f"## GOAE full inversion, official vs jaxinv ({c['preset']}, batch 1)", "",
                f"Official: torch {o['torch']} ({o['threads']} threads), median of "
                f"{len(o['forward_runs_s'])} runs after one deterministic call; jaxinv: median of "
                f"{len(j['forward_runs_s'])} runs after the first (compiling) call. AFA feature "
                f"width {o['feat_dim']}.", "",
                "| | official s | jaxinv s | ratio jaxinv / official |", "|---|---|---|---|",
                f"| Net.forward (encoder, render, AFA, render, mix) | {o['forward_s']:.2f} | "
                f"{j['forward_s']:.2f} | **{c['ratio_forward']:.2f}** |",
                f"| + re-render of the mixed tri-plane | {o['forward_s'] + o['rerender_s']:.2f} | "
                f"{j['forward_s'] + j['rerender_s']:.2f} | **{c['ratio_forward_rerender']:.2f}** |",
                "", f"jaxinv first call: forward {j['compile_forward_s']:.1f} s, re-render "
                f"{j['compile_rerender_s']:.1f} s (compile + run). Official first (deterministic) "
                f"call: forward {o['first_forward_s']:.2f} s, re-render {o['first_rerender_s']:.2f} s. "
                f"Load: official {o['load_start']} -> {o['load_end']}; jaxinv {j['load_start']} -> "
                f"{j['load_end']}.", "",
                "Sanity (same weights, deterministic draws), max |official - jaxinv|: "
                f"mapping ws {sa['ws_max_diff']:.1e}, G image {sa['image_max_diff']:.1e} "
                f"(|image| <= {sa['image_abs_max']:.2f}), GOAE w+ {sa['rec_ws_max_diff']:.1e}, "
                f"mixed tri-plane {sa['mix_triplane_max_diff']:.1e} (|planes| <= "
                f"{sa['mix_triplane_abs_max']:.1f}; unmixed planes 1-2 {sa['planes12_max_diff']:.1e}; "
                f"plane 0 differs by > 1e-3 on {100 * sa['plane0_frac_over_1e3']:.2f} % of its "
                "values, the texels where the thresholded visibility mask flips), re-rendered image "
                f"{sa['rerender_max_diff']:.1e}.", "",
                f"jaxinv's first keyed call (random draws trace a second program): forward "
                f"{j['compile_keyed_forward_s']:.1f} s, re-render {j['compile_keyed_rerender_s']:.1f} s.", ""]
    else:
      lines += [f"## PTI, official EG3D-projector vs jaxinv ({c['preset']}, batch 1)", "",
                f"{o['pivot_steps']} W-pivot steps + {j['options']['steps']} tuning steps (official ran "
                f"{o['tune_steps_run']} tuning steps; LPIPS early stop "
                f"{j['options']['lpips_threshold']}), {o['num_w_samples']} w samples, L2 + "
                f"LPIPS-alex both sides (jaxinv lpips={j['lpips']}), no locality regulariser. "
                f"Official: torch {o['torch']} ({o['threads']} threads), one run; jaxinv: median of "
                f"{len(j['runs_s'])} run(s) after the first (compiling) call.", "",
                "| | official s | jaxinv s | ratio jaxinv / official |", "|---|---|---|---|",
                f"| pivot + tuning | {o['total_s']:.2f} (pivot {o['pivot_s']:.2f}, tuning "
                f"{o['tune_s']:.2f}) | {j['total_s']:.2f} | **{c['ratio']:.2f}** |",
                f"| per step | {o['total_s'] / (o['pivot_steps'] + max(1, o['tune_steps_run'])):.3f} | "
                f"{j['total_s'] / (j['options']['pivot_steps'] + j['options']['steps']):.3f} | |", "",
                f"jaxinv first call {j['compile_s']:.1f} s (compile + run). Load: official "
                f"{o['load_start']} -> {o['load_end']}; jaxinv {j['load_start']} -> {j['load_end']}.",
                "", "Sanity (same weights, deterministic draws), max |official - jaxinv|: mapping ws "
                f"{sa['ws_max_diff']:.1e}, G image {sa['image_max_diff']:.1e} "
                f"(|image| <= {sa['image_abs_max']:.2f}).", ""]
  lines += meta.get("notes", [])
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="tiny", choices=("tiny", "ffhq512_slim"))
  p.add_argument("--methods", nargs="*", default=list(ALL), choices=ALL)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--upstream", action="append", default=[],
                 help="NAME=PATH of an official checkout: goae (GOAE's goae/ folder), "
                      "eg3d_projector (EG3D-projector's eg3d/ folder)")
  p.add_argument("--torch-python", default=os.environ.get("JAXINV_TORCH_PYTHON"),
                 help="python with torch, torchvision, timm, lpips (for the official side)")
  p.add_argument("--goae-preset", default="ffhq512_slim", choices=("tiny", "ffhq512_slim"))
  p.add_argument("--pti-preset", default="tiny", choices=("tiny", "ffhq512_slim"))
  p.add_argument("--pti-runs", type=int, default=1, help="timed jaxinv PTI calls after the first")
  p.add_argument("--pti-pivot-steps", type=int, default=None,
                 help="PTI comparison: W-pivot steps (default --steps; the release: 450)")
  p.add_argument("--pti-steps", type=int, default=None,
                 help="PTI comparison: tuning steps (default --steps; the release: 350)")
  p.add_argument("--threads", type=int, default=2, help="torch threads")
  p.add_argument("--num-w-samples", type=int, default=1000)
  p.add_argument("--pti-lpips-threshold", type=float, default=0.0,
                 help="PTI's LPIPS early stop on both sides (release: 0.06; 0: off, same steps)")
  p.add_argument("--out", default=None, help="results path stem (default bench/results/invert_<device>)")
  p.add_argument("--_worker", choices=("goae", "pti"), help=argparse.SUPPRESS)
  p.add_argument("--_workdir", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.pti_pivot_steps = args.steps if args.pti_pivot_steps is None else args.pti_pivot_steps
  args.pti_steps = args.steps if args.pti_steps is None else args.pti_steps
  args.upstream = dict(u.split("=", 1) for u in args.upstream)
  if args._worker:
    return _worker_main(args)
  if args.upstream and not args.torch_python:
    p.error("--upstream needs --torch-python (an interpreter with torch)")
  import jax
  device = jax.devices()[0].platform
  cmd = "python bench/invert.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
  meta = {"preset": args.preset, "device": device, "jax": jax.__version__, "steps": args.steps,
          "cpus": os.cpu_count(), "command": cmd,
          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
  stem = pathlib.Path(args.out or REPO / "bench" / "results" / f"invert_{device}")
  rows, comps = [], []

  def save():
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows,
                                                     "official": comps}, indent=1))
    stem.with_suffix(".md").write_text(_markdown(meta, rows, comps))

  # The comparisons first: they are the point of the run and the slowest to redo.
  for name, fn in (("goae", compare_goae), ("eg3d_projector", compare_pti)):
    if name in args.upstream:
      try:
        comps.append(fn(args))
      except Exception as e:
        import traceback
        comps.append({"comparison": "goae" if name == "goae" else "pti",
                      "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"})
      print(json.dumps(comps[-1])[:3000], flush=True)
      save()
  G = _generator(args.preset) if args.methods else None
  for m in args.methods:
    try:
      rows.append(bench(args.preset, m, G, args.batch, args.runs, args.steps))
    except Exception as e:  # one method's failure must not lose the others' numbers
      rows.append({"method": m, "error": f"{type(e).__name__}: {e}"})
    print(json.dumps(rows[-1]), flush=True)
    save()
  meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  save()


if __name__ == "__main__":
  main()
