r"""TriPlaneNet (Bhattarai et al., WACV 2024, "TriPlaneNet: An Encoder for EG3D Inversion"): the pSp
branch and the tri-plane offset branch on a frozen EG3D. Task: ``jaxinv/train/tasks/triplanenet.py``.

    python -m jaxinv.train --config configs/triplanenet.py --workdir runs/triplanenet \
        --config.generator.path=ffhqrebalanced512-128.pkl \
        --config.data.pose_labels=FFHQ_512/dataset.json \
        --config.losses.lpips_path=lpips_alex.npz --config.losses.arcface_path=ir_se50.npz
    # the official v2 code's weights and symmetry term instead of the paper's:
    python -m jaxinv.train --config configs/triplanenet.py:code ...
    # CPU smoke run (tiny random EG3D, small encoders, no loss networks):
    python -m jaxinv.train --config configs/triplanenet.py:runlocal --workdir /tmp/triplanenet
    # the built-in toy-world encoder (issue 12) on the toy G, then its asset:
    python -m jaxinv.train --config configs/triplanenet.py:toy --workdir runs/triplanenet_toy
    python -m jaxinv.train.tasks.toy_encoders --workdir runs/triplanenet_toy \
        --out jaxinv/assets/toy_triplanenet.npz

Paper (App. A) recipe: batch 3, Ranger lr 1e-4 for each branch, the second branch switched on at
20K steps, both trained to 500K, then the first branch frozen and the second fine-tuned to 1.5M;
weights L2 1, LPIPS 1, ID 0.1, mirror lambda_m 0.1 with symmetry 1, LPIPS 1, ID 0.1 inside it;
branch 2: the same with smooth-L1 in place of L2. Training pairs are generated on device by the
frozen G at truncation 1 (no truncation) from FFHQ's camera labels and their flips
(``data.pose_labels``; without it EG3D's Gaussian pose sampler stands in, logged), mapping
conditioned on the render camera, instead of 100K images written to disk. ``data.real=True``
trains on real images from ``config.data`` (jaxinv.data.train_iterator) instead.

Paper vs code, each with its switch (default: the paper):

1. LPIPS weights: paper 1.0 everywhere; v2 code 0.8 (``:code`` sets ``losses.lpips_*=0.8``).
2. Symmetry term (eq. 15): paper ``mean(l / sigma)``; v2 code ``mean(l / (sigma + 1))``
   (``losses.symmetry_eps=1``), optionally normalised per sample by ``mean(1 / (sigma + 1))``
   (``losses.normalize_mirror``). ``sigma`` is the unsup3d confidence map in both; no such
   network exists here, so ``sigma = 1`` everywhere (plain symmetry; with the code's ``eps = 1``
   this halves the term, which ``normalize_mirror=True`` undoes).
3. Eq. 8 sums the branch losses; the code stops gradients from the branch-2 loss into phi
   (``requires_grad_(False)``) and steps two optimizers; we follow the code (RECIPES 2.7.1):
   branch 2 sees ``stop_gradient(w+)`` and detached first-pass renders. Both losses use the
   same phi (eq. 8 and the v1 coach's single forward; ``schedule.branch_order='paper'``); the v2
   coach re-runs phi after its update for branch 2 (``'v2'``).
4. Offset-encoder input: paper / v2 code ``[y_hat, x - y_hat, x_m - y_hat_m]`` (9 channels,
   ``model.offset_input='paper'``); the released v1 model ``[y_hat, x - y_hat]`` (6, ``'v1'``, the
   form ``jaxinv.inversion.triplanenet`` runs). The decoder's skip of the first-branch tri-plane
   features ``G(w)`` is not implemented (the v1 U-Net has none either).
5. The v2 code's image discriminator is not in the paper: off by default
   (``discriminator.enabled``); when on, a StyleGAN2-resnet D on the offset render from
   ``discriminator.start`` (600K), adversarial weight 0.005, R1 gamma 10 every 16 steps, Adam 1e-4,
   the code's halved D loss (``discriminator.halve_loss``). Randomly initialised here (the code
   starts it from EG3D's D checkpoint).
6. BatchNorm: both coaches train under ``net.train()`` (batch statistics; the running ones
   updated on every forward, v1 switches phi to ``eval()`` after ``stop_psp``, v2 does not); we
   follow v2 (``model.batchnorm='train'``); ``'frozen'`` keeps the running statistics.
7. The IR-SE-50 trunks start from random weights here (the paper starts both from face
   recognition weights); ``init_from`` can start from another run's params, and
   ``model.psp_init`` branch 1 alone from a native pSp encoder file (``"toy"``: the built-in one).

``runlocal``: tiny random EG3D (``jaxinv.models.eg3d.tiny_eg3d``, neural rendering at 16), small
encoders (``model.size='small'``: a pooled IR-SE pSp stand-in and ``SmallOffsetEncoder``), losses
at 64 px, batch 1 (BatchNorm on running statistics), 50 steps with branch 2 on at 10 and branch 1
frozen at 40, higher lr; LPIPS
and ID are switched off with a logged notice (no weight files).

``toy``: the encoder of the procedural world for the built-in toy generator (issue 12). What
differs from the paper's recipe, and why:

* generator: the toy G (``generator.path='toy'``, 128 px images, tri-planes 256^2);
* data: images the toy G renders on device over the orbit it was trained on (yaw uniform in
  +-1 rad, pitch in +-0.3 rad, half of them mirrored), psi 1;
* encoders (``model.size='toy'``): pSp's branch is the toy pSp encoder's network (the 4-unit
  IR-SE trunk, 64 px input); the offset branch is ``SmallOffsetEncoder`` (width 32) on the v1
  input ``[y_hat, x - y_hat]`` at 64 px (``offset_input='v1'``, the form inference runs); both
  read the 128 px images average-pooled to 64, as ``jaxinv.invert`` does;
* losses at 128 px: L2 (branch 1) and smooth-L1 (branch 2) with the mirror term (lambda_m 0.1,
  symmetry 1: the world's heads are symmetric in shape with occasional asymmetric details);
  LPIPS and ArcFace weights are downloads and identity means nothing for these heads;
* schedule: branch 1 starts as the built-in toy pSp (``model.psp_init='toy'``, trained on the
  same G, orbit and pixel loss) and stays frozen (``stop_psp=0``); branch 2 trains from step 0,
  1000 steps of batch 8, Ranger lr 1e-3. This is the paper's last phase (branch 1 frozen, branch
  2 fine-tuned) with the first two replaced by the already-trained pSp: on this CPU a step with
  both branches learning costs 4.8 s (3000 steps would be 4 h); with branch 1 frozen a step
  skips the backward pass and the mirror render through the first branch.
"""
import ml_collections

from jaxinv.train.config import base_config


def _parse(arg):
  out = {}
  for part in filter(None, (arg or "").split(",")):
    k, _, v = part.partition("=")
    out[k.strip()] = v.strip() if v else True
  unknown = set(out) - {"runlocal", "code", "toy"}
  if unknown:
    raise ValueError(f"configs/triplanenet.py: unknown args {sorted(unknown)}; "
                     "use [runlocal|toy][,code]")
  if out.get("runlocal") and out.get("toy"):
    raise ValueError("configs/triplanenet.py: runlocal and toy are different runs; pick one")
  return out


def get_config(arg=None):
  args = _parse(arg)
  c = base_config("triplanenet", total_steps=1_500_000, batch_size=3, seed=0, log_every=100,
                  checkpoint_every=10_000, preview_every=5000)
  c.runlocal = bool(args.get("runlocal", False))
  c.generator = ml_collections.ConfigDict(dict(path="", tiny_seed=0, neural_rendering_resolution=0))
  c.model = ml_collections.ConfigDict(dict(size="release", offset_input="paper",
                                           small_widths=(16, 32), batchnorm="train",
                                           input_size=0, psp_init=""))
  c.data = ml_collections.ConfigDict(dict(real=False, path="", pose_labels=""))
  c.data.synthetic = ml_collections.ConfigDict(dict(
      truncation_psi=1.0, flip_prob=0.5, yaw_std=0.25, pitch_std=0.12, conditioning="render",
      random_render=True, kind="gaussian", yaw_range=0.0, pitch_range=0.0))
  c.schedule = ml_collections.ConfigDict(dict(add_triplanenet=20_000, stop_psp=500_000,
                                              branch_order="paper"))
  c.losses = ml_collections.ConfigDict(dict(
      l2_psp=1.0, lpips_psp=1.0, id_psp=0.1,
      smooth_l1_triplane=1.0, lpips_triplane=1.0, id_triplane=0.1,
      mirror=0.1,
      symmetry_psp=1.0, lpips_psp_mirror=1.0, id_psp_mirror=0.1,
      symmetry_triplane=1.0, lpips_triplane_mirror=1.0, id_triplane_mirror=0.1,
      symmetry_eps=1e-7, normalize_mirror=False,
      loss_resolution=256, lpips_path="", lpips_net="alex", arcface_path="", id_crop="psp"))
  c.discriminator = ml_collections.ConfigDict(dict(
      enabled=False, start=600_000, adv_lambda=0.005, r1_gamma=10.0, r1_every=16, halve_loss=True,
      channel_base=32768, channel_max=512, mbstd_group_size=4))
  c.optim = ml_collections.ConfigDict(dict(
      psp=dict(name="ranger", lr=1e-4), triplane=dict(name="ranger", lr=1e-4),
      discriminator=dict(name="adam", lr=1e-4)))

  if args.get("code"):
    for k in ("lpips_psp", "lpips_triplane", "lpips_psp_mirror", "lpips_triplane_mirror"):
      c.losses[k] = 0.8
    c.losses.symmetry_eps = 1.0

  if c.runlocal:
    c.total_steps = 50
    c.batch_size = 1
    c.log_every = 1
    c.checkpoint_every = 10
    c.keep_checkpoints = 10
    c.preview_every = 0
    c.generator.neural_rendering_resolution = 16
    c.model.size = "small"
    c.model.batchnorm = "frozen"
    c.losses.loss_resolution = 64
    c.schedule.add_triplanenet = 10
    c.schedule.stop_psp = 40
    c.discriminator.start = 20
    c.discriminator.r1_every = 4
    c.discriminator.channel_base = 256
    c.discriminator.channel_max = 32
    c.optim.psp.lr = 1e-3
    c.optim.triplane.lr = 1e-3
    c.optim.discriminator.lr = 1e-3
  if args.get("toy"):
    c.generator.path = "toy"
    c.model.size = "toy"
    c.model.input_size = 64
    c.model.offset_input = "v1"
    c.model.small_widths = (32, 64)
    c.data.synthetic.update(kind="uniform", yaw_range=1.0, pitch_range=0.3)   # radians
    for k in ("lpips_psp", "lpips_triplane", "lpips_psp_mirror", "lpips_triplane_mirror",
              "id_psp", "id_triplane", "id_psp_mirror", "id_triplane_mirror"):
      c.losses[k] = 0.0
    c.losses.loss_resolution = 128
    c.model.psp_init = "toy"          # branch 1 is the built-in toy pSp, frozen from the start
    c.schedule.add_triplanenet = 0
    c.schedule.stop_psp = 0
    c.optim.psp.lr = 1e-3
    c.optim.triplane.lr = 1e-3
    c.total_steps = 1000
    c.batch_size = 8
    c.log_every = 25
    c.checkpoint_every = 250
    c.preview_every = 500
  return c
