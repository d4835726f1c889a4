r"""NeRF-3DE (Li et al., "3D-Aware Encoding for Style-based Neural Radiance Fields") on EG3D: the
base encoder into W trained with the triplet loss on multi-view renders of one latent, then the
ReStyle-like refining encoder predicting a W+ residual. Task: ``jaxinv/train/tasks/nerf3de.py``
(its docstring gives every decision the paper leaves open; RECIPES 4.6). Inference:
``jaxinv.inversion.nerf3de.invert``.

    python -m jaxinv.train --config configs/nerf3de.py --workdir runs/nerf3de \
        --config.generator.path=ffhqrebalanced512-128.pkl \
        --config.losses.lpips_path=lpips_alex.npz --config.losses.arcface_path=ir_se50.npz
    # CPU smoke run (tiny random EG3D, small encoders, no loss networks):
    python -m jaxinv.train --config configs/nerf3de.py:runlocal --workdir /tmp/nerf3de
    # the built-in toy-world encoder (issue 12) on the toy G, then its asset:
    python -m jaxinv.train --config configs/nerf3de.py:toy --workdir runs/nerf3de_toy
    python -m jaxinv.train.tasks.toy_encoders --workdir runs/nerf3de_toy \
        --out jaxinv/assets/toy_nerf3de.npz

Paper vs this implementation (the paper is on StyleNeRF and gives no optimiser, schedule, margin,
weights, resolution or batch composition):

1. Generator: EG3D instead of StyleNeRF; base code one w repeated to the 14 rows of w+; the
   mapping is conditioned on the canonical camera for every view of an identity.
2. Schedule: eq. 12 is a single sum but the text says "two-stage": default two stages (the base
   alone until ``schedule.refiner_start``, then the refiner with the base frozen);
   ``schedule.freeze_base=False`` trains both jointly from the start step on (eq. 12 literally,
   with ``stop_gradient`` on the refiner's inputs either way).
3. Margin: ``losses.margin`` (paper: "m > 0", no value); 0 = measured at start as
   ``losses.margin_scale`` (0.1) x the median inter-identity distance of ``losses.margin_samples``
   generated w. ``losses.normalize_codes=True`` with ``margin=0.2`` is the alternative.
4. Negatives: the other identities of the batch, batch-hard (``losses.mining='hard'``) or all
   triples (``'all'``); the paper samples one negative per anchor.
5. Weights: lambda_feat = lambda_img = 1 for both stages, image terms with pSp's weights (L2 1,
   LPIPS 0.8, ID 0.1), triplet and L1 weight 1 (``losses.*``).
6. Data: synthetic only (B identities x V views, default 4 x 2, truncation ``data.truncation_psi``
   0.7, cameras uniform in yaw +-35 deg / pitch +-20 deg); the paper's real FFHQ images (image terms
   only) are not mixed in.
7. Encoders: ``model.backbone='irse50'``: pSp's W encoder (IR-SE-50, pooled, 512-d) and
   ReStyle-pSp's 6-channel GradualStyleEncoder at 256 px, from random weights; Ranger lr 1e-4
   for both (pSp's optimiser; not stated in the paper). One refinement step in training and at
   inference (``schedule.refiner_iterations``; the paper finds more give little).

``runlocal``: tiny random EG3D (neural rendering at 16), ``model.backbone='small'``, losses at
64 px, batch 2 identities x 2 views, 50 steps with the refiner from step 25, higher lr; LPIPS and
ID switched off with a logged notice (no weight files); margin from 64 samples at
``margin_scale=1.0``: a random tiny G's identities differ far more than its views (a random base
encoder's codes: 0.1-0.4 apart across views, 2.5-13 across identities, measured), so the
0.1-scale margin never binds there and the triplet term would be 0 at every step.

``toy``: the encoder of the procedural world for the built-in toy generator (issue 12). What
differs from the defaults, and why:

* generator: the toy G (``generator.path='toy'``, 128 px images); identities drawn at psi 1 (the
  world's scenes are z ~ N(0, I), rendered at psi 1), 4 identities x 2 views a batch, cameras
  uniform over the orbit the toy G was trained on (yaw +-57.3 deg = 1 rad, pitch +-17.2 deg);
* encoders: ``model.backbone='small'`` (three IR-SE units, widths 16 / 32 / 64) on 64 px inputs
  (``model.input_size``; images and the render fed back to the refiner are pooled to it, as
  inference does), losses at 128 px;
* losses: L2 only among the image terms -- LPIPS and ArcFace weights are downloads and identity
  means nothing for these heads; the triplet margin measured at start (0.1 x the median
  inter-identity distance, the default);
* schedule: 3000 steps, the base alone to 1500, then the refiner (base frozen); Ranger lr 1e-3.
"""
import ml_collections

from jaxinv.train.config import base_config


def _parse(arg):
  out = {}
  for part in filter(None, (arg or "").split(",")):
    k, _, v = part.partition("=")
    out[k.strip()] = v.strip() if v else True
  unknown = set(out) - {"runlocal", "toy"}
  if unknown:
    raise ValueError(f"configs/nerf3de.py: unknown args {sorted(unknown)}; use [runlocal|toy]")
  if out.get("runlocal") and out.get("toy"):
    raise ValueError("configs/nerf3de.py: runlocal and toy are different runs; pick one")
  return out


def get_config(arg=None):
  args = _parse(arg)
  c = base_config("nerf3de", total_steps=500_000, batch_size=8, seed=0, log_every=100,
                  checkpoint_every=10_000, preview_every=5000)
  c.runlocal = bool(args.get("runlocal", False))
  c.generator = ml_collections.ConfigDict(dict(path="", tiny_seed=0, neural_rendering_resolution=0))
  c.model = ml_collections.ConfigDict(dict(backbone="irse50", small_widths=(16, 32),
                                           input_size=0))   # 0: losses.loss_resolution
  c.data = ml_collections.ConfigDict(dict(identities=4, views=2, truncation_psi=0.7,
                                          random_render=True))
  c.data.poses = ml_collections.ConfigDict(dict(kind="uniform", yaw_deg=35.0, pitch_deg=20.0,
                                                yaw_std=0.25, pitch_std=0.12, flip_prob=0.0))
  c.schedule = ml_collections.ConfigDict(dict(refiner_start=250_000, freeze_base=True,
                                              refiner_iterations=1))
  c.losses = ml_collections.ConfigDict(dict(
      margin=0.0, margin_scale=0.1, margin_samples=1000, mining="hard", normalize_codes=False,
      triplet=1.0, l1_base=1.0, l1_ref=1.0, feat_base=1.0, feat_ref=1.0, img_base=1.0, img_ref=1.0,
      l2=1.0, lpips=0.8, id=0.1,
      loss_resolution=256, lpips_path="", lpips_net="alex", arcface_path="", id_crop="psp"))
  c.optim = ml_collections.ConfigDict(dict(base=dict(name="ranger", lr=1e-4),
                                           refiner=dict(name="ranger", lr=1e-4)))
  if c.runlocal:
    c.total_steps = 50
    c.batch_size = 4
    c.data.identities = 2
    c.data.views = 2
    c.log_every = 1
    c.checkpoint_every = 25
    c.keep_checkpoints = 10
    c.preview_every = 0
    c.generator.neural_rendering_resolution = 16
    c.model.backbone = "small"
    c.losses.loss_resolution = 64
    c.losses.margin_samples = 64
    c.losses.margin_scale = 1.0
    c.schedule.refiner_start = 25
    c.optim.base.lr = 1e-3
    c.optim.refiner.lr = 1e-3
  if args.get("toy"):
    c.generator.path = "toy"
    c.model.backbone = "small"
    c.model.small_widths = (16, 32, 64)
    c.model.input_size = 64
    c.data.truncation_psi = 1.0
    c.data.poses.update(yaw_deg=57.3, pitch_deg=17.2)
    c.losses.lpips = 0.0
    c.losses.id = 0.0
    c.losses.loss_resolution = 128
    c.schedule.refiner_start = 1500
    c.optim.base.lr = 1e-3
    c.optim.refiner.lr = 1e-3
    c.total_steps = 3000
    c.batch_size = 8
    c.log_every = 25
    c.checkpoint_every = 250
    c.preview_every = 500
  return c
