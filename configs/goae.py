r"""GOAE (Yuan et al., ICCV 2023, "Make Encoder Great Again in 3D GAN Inversion through Geometry
and Occlusion-Aware Encoding"): stage 1 (Swin encoder + canonical latent discriminator) and
stage 2 (AFA on the frozen encoder). Task: ``jaxinv/train/tasks/goae.py``.

    python -m jaxinv.train --config configs/goae.py:stage=1 --workdir runs/goae1 \
        --config.generator.path=ffhqrebalanced512-128.pkl --config.data.path=FFHQ_512.zip \
        --config.losses.lpips_path=lpips_alex.npz --config.losses.arcface_path=ir_se50.npz
    python -m jaxinv.train --config configs/goae.py:stage=2 --workdir runs/goae2 \
        --config.encoder.checkpoint=runs/goae1  ...(same generator / data / loss files)
    # CPU smoke runs (tiny random EG3D, tiny Swin / AFA, images generated on device):
    python -m jaxinv.train --config configs/goae.py:stage=1,runlocal --workdir /tmp/goae1
    python -m jaxinv.train --config configs/goae.py:stage=2,runlocal --workdir /tmp/goae2 \
        --config.encoder.checkpoint=/tmp/goae1
    # the built-in toy-world GOAE (issue 12) on the toy G, each stage then its asset:
    python -m jaxinv.train --config configs/goae.py:stage=1,toy --workdir runs/goae_toy1
    python -m jaxinv.train.tasks.toy_encoders --workdir runs/goae_toy1 \
        --out jaxinv/assets/toy_goae_encoder.npz
    python -m jaxinv.train --config configs/goae.py:stage=2,toy --workdir runs/goae_toy2
    python -m jaxinv.train.tasks.toy_encoders --workdir runs/goae_toy2 \
        --out jaxinv/assets/toy_goae_afa.npz

Paper weights (§4.5): L2 1.0, LPIPS 0.8, ID 0.25, L_adv^E 0.05, L_BG 5.0, L_w+ 0.001, R1 gamma 10,
L_dF 1e-4. Where the paper is silent, the released code or e4e decides (``RECIPES.md`` 1.8).

Paper vs code (and vs this implementation), each with its switch:

1. R1 (eq. 2) is printed as ``gamma/2 E||grad D||``; we use the standard squared norm (R1 as
   cited), lazily every ``latent_d.r1_every`` = 16 steps with weight x16 (e4e).
2. The latent D sees every entry ``w_i`` of ``w+`` (paper, ``latent_d.rows='all'``); e4e's code
   only the first row of each delta group (``latent_d.rows='group_starts'``). Real codes:
   ``mapping(z, c_front)`` at ``latent_d.real_truncation_psi`` = 1.
3. Eq. 11 sums D and E losses; we alternate in every step: the E update against the current D,
   then a D update on that step's detached w+ (e4e runs the D update first; the order here
   lets both use one encoder pass).
4. L_BG's mask comes from a face parser in the paper; we use opacity, the only background
   signal a generic EG3D provides without extra networks: ``weights_sum <
   bg_depth.mask_threshold`` on the front-view render (``bg_depth.mask='own'``; an encoder can
   lower that term by filling the background with density instead of fixing its depth), on the
   average canonical sample (``'average'``; fixed), or either
   (``'union'``, the default: the average head's background is always penalised, the render's
   own empty rays too). ``D_avg`` is the pixel-weighted mean background depth of
   ``bg_depth.num_samples`` (paper: 100k) canonical samples, computed on device at start
   (``bg_depth.value`` > 0 replaces it; the same pass still runs for the average mask unless
   ``bg_depth.mask='own'``). The norm is not squared (``bg_depth.squared=True`` for
   a masked MSE instead).
5. L_w+ (undefined in the supplement, GOAE issue #24): e4e's ``sum_i E||w_i - w_0||_2``.
6. Progressive stages (code only): coarse / mid / fine deltas switch on at
   ``progressive.stage_list`` = (10000, 20000, 30000); before that those rows are ``ws_base``.
7. Optimisers (not in the paper): encoder and AFA Ranger lr 1e-4, latent D Adam lr 2e-5 (e4e).
8. Stage 2: the paper drops the latent D, L_adv^E and L_w+ (§4.5); the released
   ``train_stage2.py`` keeps the latent-D loss at 0.1 (issue #22):
   ``losses.stage2_latent_d=0.1`` reproduces that (the D keeps training, L_adv^E is added; with
   the encoder frozen it has no gradient to the AFA).
9. Stage 2's L_rec: on the input-view render of the refined tri-plane (``stage2.render=
   'refined'``, RECIPES 1.8.10), or of the occlusion-mixed one (``'mixed'``); L_BG on the front
   view of the same tri-plane.
10. The AFA's BatchNorms run in inference mode with fixed statistics (upstream trains them in
    train mode); the encoder has none (LayerNorms).
11. ID loss: pSp's ArcFace IR-SE50 ``IDLoss`` (psp crop) on the 256x256-pooled images, as L2 and
    LPIPS (``losses.loss_resolution``).

``runlocal``: tiny random EG3D (``jaxinv.models.eg3d.tiny_eg3d``), tiny Swin / AFA, and no
dataset: the "real" images are rendered on device by the frozen generator from random z at
FFHQ-like poses (``jaxinv.data.synthetic``; a fixed bank of 32 made at start, so the CPU step
has no generator forward); LPIPS / ID are off (logged) unless their weight
files are given; ``D_avg`` from 8 samples; progressive stages at steps 4 / 8 / 12.

``toy``: GOAE of the procedural world for the built-in toy generator (issue 12). What differs,
and why:

* generator: the toy G (``generator.path='toy'``, 128 px images); the "real" images are the toy
  G's own, generated on device (``data.generated``; the world's scenes are z ~ N(0, I) at psi 1)
  over the orbit it was trained on (yaw uniform in +-1 rad, pitch in +-0.3 rad);
* networks (``model.encoder/afa='toy'``): the Swin-V2 trunk on 64 px inputs, 16 wide
  (stages of 2 blocks), cross-attention heads 4 x 64; the AFA with 32 / 32 / 64-channel IR-SE units;
* losses at 128 px: L2 and the paper's other weights but two: LPIPS and ArcFace weights are
  downloads and identity means nothing for these heads; L_BG is off (``losses.bg_depth=0``): the
  world's backdrop is a real surface inside the box, so the toy G renders every ray opaque and
  opacity finds no background (no pixel of 8 canonical samples has weights_sum < 0.5);
* schedule: stage 1 1500 steps (the coarse / mid / fine deltas on at 150 / 300 / 450, the
  paper's 10K / 20K / 30K scaled), stage 2 1000 steps on the stage-1 run ``runs/goae_toy1``;
  batch 8; Ranger lr 1e-3 for the encoder and the AFA, the latent D's Adam 2e-5.
"""
import ml_collections


def _parse(arg):
  out = {}
  for part in filter(None, (arg or "").split(",")):
    k, _, v = part.partition("=")
    out[k.strip()] = v.strip() if v else True
  unknown = set(out) - {"stage", "runlocal", "toy"}
  if unknown:
    raise ValueError(f"configs/goae.py: unknown args {sorted(unknown)}; "
                     "use stage=1|2[,runlocal|,toy]")
  if out.get("runlocal") and out.get("toy"):
    raise ValueError("configs/goae.py: runlocal and toy are different runs; pick one")
  return out


def get_config(arg=None):
  args = _parse(arg)
  stage = int(args.get("stage", 1))
  if stage not in (1, 2):
    raise ValueError(f"configs/goae.py: stage must be 1 or 2, got {stage}")
  runlocal = bool(args.get("runlocal", False))

  c = ml_collections.ConfigDict()
  c.task = "goae"
  c.stage = stage
  c.runlocal = runlocal
  c.total_steps = 500_000 if stage == 1 else 200_000   # "until converged": a fixed budget
  c.batch_size = 8
  c.seed = 0
  c.log_every = 100
  c.checkpoint_every = 5000
  c.preview_every = 2000

  c.generator = ml_collections.ConfigDict(dict(
      path="", tiny_seed=0, neural_rendering_resolution=0))   # 0: the generator's own value
  c.model = ml_collections.ConfigDict(dict(encoder="release", afa="release", fast_init=False))
  c.encoder = ml_collections.ConfigDict(dict(checkpoint="", step=0, path=""))   # stage 2

  c.data = ml_collections.ConfigDict()
  c.data.path = ""
  c.data.generated = False   # True: the "real" images are the frozen G's (the toy world)
  c.data.synthetic = ml_collections.ConfigDict(dict(
      yaw_std=0.25, pitch_std=0.12, flip_prob=0.0, truncation_psi=1.0, conditioning="render",
      bank=0,   # > 0: a fixed bank of that many generated images instead of fresh ones
      kind="gaussian", yaw_range=0.0, pitch_range=0.0))   # 'uniform': half widths in radians

  c.losses = ml_collections.ConfigDict(dict(
      l2=1.0, lpips=0.8, id=0.25, adv=0.05, bg_depth=5.0, w_delta=0.001, delta_f=1e-4,
      stage2_latent_d=0.0, lpips_path="", lpips_net="alex", arcface_path="", id_crop="psp",
      loss_resolution=256))
  c.latent_d = ml_collections.ConfigDict(dict(
      n_mlp=4, r1_gamma=10.0, r1_every=16, rows="all", real_truncation_psi=1.0))
  c.bg_depth = ml_collections.ConfigDict(dict(
      value=0.0, num_samples=100_000, batch_size=8, mask_threshold=0.5, truncation_psi=1.0,
      squared=False, mask="union"))
  c.progressive = ml_collections.ConfigDict(dict(stage_list=(10_000, 20_000, 30_000)))
  c.stage2 = ml_collections.ConfigDict(dict(render="refined"))
  c.optim = ml_collections.ConfigDict(dict(
      encoder=dict(name="ranger", lr=1e-4),
      afa=dict(name="ranger", lr=1e-4),
      latent_d=dict(name="adam", lr=2e-5)))

  if runlocal:
    c.total_steps = 50
    c.batch_size = 1
    c.log_every = 5
    c.checkpoint_every = 25
    c.preview_every = 0
    c.generator.neural_rendering_resolution = 16
    c.model.encoder = "tiny"
    c.model.afa = "tiny"
    c.model.fast_init = True   # numpy draws: no per-leaf initialiser compiles
    c.losses.loss_resolution = 64
    c.data.synthetic.bank = 32
    c.bg_depth.num_samples = 8
    c.bg_depth.batch_size = 4
    c.latent_d.r1_every = 4
    c.progressive.stage_list = (4, 8, 12)
    # Adam, not Ranger: RAdam's first steps are un-normalised momentum SGD, which the tiny random
    # models' large gradients blow up at a smoke-test learning rate.
    c.optim.encoder = ml_collections.ConfigDict(dict(name="adam", lr=1e-3))
    c.optim.afa = ml_collections.ConfigDict(dict(name="adam", lr=1e-3))
    c.optim.latent_d.lr = 2e-4
  if args.get("toy"):
    c.generator.path = "toy"
    c.model.encoder = "toy"
    c.model.afa = "toy"
    c.data.generated = True
    c.data.synthetic.update(kind="uniform", yaw_range=1.0, pitch_range=0.3)
    c.losses.lpips = 0.0
    c.losses.id = 0.0
    c.losses.loss_resolution = 128
    c.losses.bg_depth = 0.0
    c.progressive.stage_list = (150, 300, 450)
    c.optim.encoder.lr = 1e-3
    c.optim.afa.lr = 1e-3
    c.total_steps = 1500 if stage == 1 else 1000
    c.log_every = 25
    c.checkpoint_every = 250
    c.preview_every = 500
    if stage == 2:
      c.encoder.checkpoint = "runs/goae_toy1"
  return c
