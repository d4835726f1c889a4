"""Config builders for the pSp-family tasks (used by ``configs/{psp,e4e,preim3d}.py``).

``psp_family_config(task, arg)``: ``arg`` is the text after the colon of
``--config configs/METHOD.py:ARG`` -- comma-separated words / key=value pairs:
``runlocal`` (tiny models, no files), ``toy`` (an encoder of the procedural world: the built-in
toy generator, images it renders on device over its training orbit, pixel losses only),
``preset=paper|release`` (PREIM3D's ramps).
"""
from __future__ import annotations

import ml_collections

from jaxinv.train.config import base_config

WEIGHTS = "weights"  # where the full configs expect converted files (override per field)


def parse_arg(arg) -> dict:
  out = {}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    k, _, v = part.partition("=")
    out[k.strip()] = v.strip() if v else True
  return out


def psp_family_config(task: str, arg=None) -> ml_collections.ConfigDict:
  a = parse_arg(arg)
  unknown = set(a) - {"runlocal", "toy", "preset"}
  if unknown:
    raise ValueError(f"configs/{task}.py: unknown argument(s) {sorted(unknown)}; "
                     "known: runlocal, toy, preset=paper|release")
  runlocal = bool(a.get("runlocal", False))
  toy = bool(a.get("toy", False))
  if toy and runlocal:
    raise ValueError(f"configs/{task}.py: toy and runlocal are two different variants; pick one")
  c = base_config(task, total_steps=500_000, batch_size=8, seed=0, log_every=100,
                  checkpoint_every=5000, preview_every=2500)
  c.runlocal = runlocal
  c.generator = ml_collections.ConfigDict(dict(path=f"{WEIGHTS}/ffhqrebalanced512-128.pkl",
                                               tiny_seed=0))
  c.encoder = ml_collections.ConfigDict(dict(
      tiny=False, input_size=256, backbone_path=f"{WEIGHTS}/model_ir_se50.npz"))
  c.losses = ml_collections.ConfigDict(dict(
      l2=1.0, lpips=0.8, id=0.1, w_norm=0.0, lpips_net="alex",
      lpips_path=f"{WEIGHTS}/lpips_alex.npz", arcface_path=f"{WEIGHTS}/model_ir_se50.npz",
      id_crop="none", resolution=256))
  c.optimizer = ml_collections.ConfigDict(dict(name="ranger", lr=1e-4))
  # In-domain generated batches (PREIM3D's sampler: uniform yaw +-30, pitch +-20 degrees).
  c.synthetic = ml_collections.ConfigDict(dict(
      kind="uniform", yaw_range=30.0, pitch_range=20.0, yaw_std=0.25, pitch_std=0.12,
      per_batch=False, truncation_psi=1.0, truncation_cutoff=0, conditioning="render"))
  c.data = ml_collections.ConfigDict(dict(path="", format="eg3d", mirror=True, resolution=0,
                                          shuffle=True, stand_in_size=64))

  if task == "e4e":
    # e4e defaults: progressive deltas, delta reg 2e-4, latent D (Adam 2e-5) weight 0.1, R1 10/16,
    # LatentCodesPool of 50 for real and fake codes. disc_fake_w_avg=False is the official coach
    # (D's fake codes are the encoder's output without latent_avg); True adds w_avg to them.
    c.e4e = ml_collections.ConfigDict(dict(
        progressive_start=20_000, progressive_step_every=2_000, delta_norm=2e-4,
        w_discriminator=0.1, r1_gamma=10.0, d_reg_every=16, w_pool_size=50,
        disc_fake_w_avg=False, disc_layers=4, disc_lr=2e-5))
    c.total_steps = 500_000
  if task == "preim3d":
    preset = str(a.get("preset", "paper"))
    if preset not in ("paper", "release"):
      raise ValueError(f"configs/preim3d.py: preset must be 'paper' or 'release', got {preset!r}")
    c.preset = preset
    c.losses.id = 0.4            # lambda_ori (ID at the input view)
    c.losses.id_crop = "none"
    c.synthetic.truncation_psi = 0.7   # PREIM3D code; truncation_cutoff 14 = all rows
    c.synthetic.truncation_cutoff = 14
    c.synthetic.per_batch = True       # code: one yaw/pitch per batch
    # The stand-in for real (out-of-domain) images under runlocal: images of the same generator
    # from a second pose distribution (EG3D's Gaussian yaw/pitch) at psi = 1.
    c.stand_in = ml_collections.ConfigDict(dict(
        kind="gaussian", yaw_range=0.0, pitch_range=0.0, yaw_std=0.3, pitch_std=0.15,
        per_batch=False, truncation_psi=1.0, truncation_cutoff=0, conditioning="render"))
    ramps = dict(
        paper=dict(w_start=20_000, w_every=5_000, w_delta=1e-4, w_max_increments=1_000_000,
                   sur_start=100_000, sur_every=5_000, sur_delta=1e-4, sur_constant=0.0,
                   views=4, sur_yaw=20.0, sur_pitch=5.0, center="input", real=""),
        release=dict(w_start=5_000, w_every=5_000, w_delta=0.1, w_max_increments=100,
                     sur_start=100_000, sur_every=5_000, sur_delta=0.0, sur_constant=0.1,
                     views=3, sur_yaw=20.0, sur_pitch=5.0, center="input", real=""))[preset]
    c.preim3d = ml_collections.ConfigDict(ramps)
    c.batch_size = 2 if preset == "release" else 8
    c.total_steps = 2_000_000 if preset == "release" else 500_000

  if runlocal:
    c.total_steps = 60
    c.batch_size = 2
    c.log_every = 5
    c.checkpoint_every = 20
    c.preview_every = 30
    c.generator.path = ""
    c.encoder.tiny = True
    c.encoder.input_size = 64
    c.encoder.backbone_path = ""
    c.losses.lpips_path = "random"
    c.losses.arcface_path = "tiny"
    c.losses.resolution = 64
    c.optimizer.lr = 1e-3
    if task == "e4e":
      c.e4e.progressive_start = 10
      c.e4e.progressive_step_every = 5
      c.e4e.d_reg_every = 4
    if task == "preim3d":
      # Ramps compressed so every term is on within a short run.
      c.preim3d.w_start = 0
      c.preim3d.w_every = 10
      c.preim3d.w_delta = 0.1 if c.preset == "release" else 0.05
      c.preim3d.sur_start = 20
      c.preim3d.sur_every = 10
      c.preim3d.sur_delta = 0.0 if c.preset == "release" else 0.05
      c.preim3d.views = 4 if c.preset == "paper" else 3
  if toy:
    _toy(c, task)
  return c


def _toy(c, task: str) -> None:
  """The toy-world encoder (issue 12): what differs from the paper's recipe, and why.

  * generator: the built-in toy G (``generator.path='toy'``), 128 px images;
  * data: images the toy G renders on device (``synthetic``) over the orbit it was trained on
    (yaw +-1 rad, pitch +-0.3 rad, uniform), psi 1; PREIM3D's out-of-domain half (real photos
    in the paper) is the world's own renders at the same cameras (``preim3d.real='world'``: the
    images it is evaluated on, of scenes drawn fresh each step);
  * encoder: the small 4-unit IR-SE trunk on 64 px inputs (the world is flat-shaded colour);
  * losses: pixel L2 on the full 128 px image only -- LPIPS and ArcFace weights are downloads and
    identity means nothing for these heads; PREIM3D keeps its latent regression on generated
    pairs, e4e its delta regulariser and latent discriminator;
  * schedule: 2000 steps of batch 8, Ranger lr 1e-3, the paper's ramps scaled to the run (e4e's
    last delta switches on at step 1700).
  """
  c.generator.path = "toy"
  c.encoder.tiny = True
  c.encoder.input_size = 64
  c.encoder.backbone_path = ""
  c.losses.lpips = 0.0
  c.losses.id = 0.0
  c.losses.lpips_path = ""
  c.losses.arcface_path = ""
  c.losses.resolution = 128
  c.synthetic.kind = "uniform"
  c.synthetic.yaw_range = 57.3      # degrees: the toy G's training orbit, +-1 rad
  c.synthetic.pitch_range = 17.2    # +-0.3 rad
  c.synthetic.truncation_psi = 1.0
  c.synthetic.truncation_cutoff = 0
  c.optimizer.lr = 1e-3
  c.total_steps = 2000
  c.batch_size = 8
  c.log_every = 25
  c.checkpoint_every = 250
  c.preview_every = 500
  if task == "e4e":
    c.e4e.progressive_start = 500
    c.e4e.progressive_step_every = 100
  if task == "preim3d":
    # The world's photos are its real images: the out-of-domain batches, at the same cameras.
    c.stand_in = c.synthetic.copy_and_resolve_references()
    c.preim3d.real = "world"
    c.preim3d.w_start = 0
    c.preim3d.w_every = 100
    c.preim3d.w_delta = 0.1
    c.preim3d.w_max_increments = 10
    c.preim3d.sur_start = c.total_steps + 1   # the surrounding-view terms are identity losses
    c.preim3d.sur_delta = 0.0
    c.preim3d.sur_constant = 0.0
    c.batch_size = 8
