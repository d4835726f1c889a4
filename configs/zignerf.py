r"""ZIGNeRF on the procedural world: a GIRAFFE-style compositional generator, then its zero-shot
inverter. Task: ``jaxinv/train/tasks/zignerf.py``; recipe: ``RECIPES.md`` sec. 5.

    python -m jaxinv.train --config configs/zignerf.py:stage=generator --workdir runs/zignerf_g
    python -m jaxinv.train --config configs/zignerf.py:stage=inverter \
        --config.generator.path runs/zignerf_g --workdir runs/zignerf_i
    python -m jaxinv.train.export --workdir runs/zignerf_g --out jaxinv/assets/zignerf_generator.npz
    python -m jaxinv.train.export --workdir runs/zignerf_i --out jaxinv/assets/zignerf_inverter.npz
    python -m jaxinv.train --config configs/zignerf.py:stage=generator,runlocal --workdir /tmp/zg

Stage ``generator`` (paper stage A). The paper's objective is there as written: the vanilla GAN
loss and R1 (gamma 10, read as gamma / 2 * E||grad D||^2, lazily every 4 steps and scaled by 4),
spectral-norm residual renderer and discriminator, RMSprop for D at the paper's 7e-5. The data
are world renders at random object turns over the full circle and camera pitch +-0.2 rad (the
GIRAFFE cars range: ZIGNeRF's 360 degrees), at 64 px (GIRAFFE's 64 px configs: a 16 px feature
image, two upsampling blocks).

What differs from the paper, and why:
* **A world term.** The generator's codes are the world's own latent split into ZIGNeRF's four
  parts (object shape 14, object appearance 5, background shape 1, background appearance 4), so a
  real render of the same codes and pose exists and G is also pulled onto it: 1.0 x MSE(image)
  + 1.0 x L1(depth on the world's foreground) + 0.5 x L1(object mask). The paper trains 100,000
  iterations at batch 32 on a GPU; this machine affords about 1,500 at batch 8, in which a pure
  GAN gives blobs. Set ``loss.world_image = loss.world_depth = loss.world_mask = 0`` for the
  paper's objective (the adversarial weight stays 0.05 so the world term leads).
* **G with Adam** (lr 1e-3, warm-up 50 steps, cosine to 1e-4) instead of RMSprop 1e-4: the world
  term is a regression and Adam reaches it in the steps this CPU has. ``optimizer_g.name =
  "rmsprop", lr = 1e-4`` is the paper's.
* Sizes are GIRAFFE's structure, smaller: object field 4 x 64 (skip at 2), 6 / 2 frequencies,
  background field 2 x 32, 32 features, 24 samples per ray, renderer 64 channels halving to 16.

Stage ``inverter`` (paper stage B). G and D frozen (``generator.path``: the stage-A workdir, an
exported ``.npz`` or "toy"); the inverter sees G's images only, with eq. 10's weights: realism 1,
latent L1 10, image L1 100, LPIPS + (1 - SSIM) 1, plus 10 x L1 of the pose head (jaxinv's answer
to the paper's open question, see ``jaxinv.inversion.zignerf``). LPIPS needs downloaded weights,
so it is off by default here (``loss.lpips = 1`` with ``losses.lpips_path`` turns it on; runlocal
uses a random-init one to exercise the code). RMSprop at the paper's 1e-4 is slow in our step
budget; the default is Adam 1e-3 (warm-up, cosine), ``optimizer_i.name = "rmsprop"`` is the
paper's. Batch 8 (paper 32).

``runlocal``: the same maths at 32 px from an 8 px feature image, 8 samples per ray, narrow nets,
batch 2, 4 steps: seconds.
"""
import ml_collections


def _parse(arg):
  out = {}
  for part in filter(None, (arg or "").split(",")):
    k, _, v = part.partition("=")
    out[k.strip()] = v.strip() if v else True
  unknown = set(out) - {"runlocal", "stage"}
  if unknown:
    raise ValueError(f"configs/zignerf.py: unknown args {sorted(unknown)}; use stage=generator|"
                     "inverter and runlocal")
  stage = out.get("stage", "generator")
  if stage not in ("generator", "inverter"):
    raise ValueError(f"configs/zignerf.py: stage must be generator or inverter, got {stage!r}")
  out["stage"] = stage
  return out


def _adam(lr, steps, warmup, end_lr):
  return ml_collections.ConfigDict(dict(
      name="adam", lr=lr, b1=0.9, b2=0.99, eps=1e-8, schedule="warmup_cosine",
      warmup_steps=warmup, decay_steps=steps, end_lr=end_lr, clip_norm=None))


def get_config(arg=None):
  args = _parse(arg)
  runlocal = bool(args.get("runlocal", False))
  stage = args["stage"]
  c = ml_collections.ConfigDict()
  c.task = "zignerf"
  c.stage = stage
  c.runlocal = runlocal
  gen = stage == "generator"
  c.total_steps = 4 if runlocal else (1000 if gen else 1500)
  c.batch_size = 2 if runlocal else 8
  c.seed = 0 if gen else 1
  c.log_every = 1 if runlocal else 5
  c.checkpoint_every = 2 if runlocal else 50
  c.preview_every = 0 if runlocal else 500
  c.progress = False
  c.model = ml_collections.ConfigDict(dict(
      hidden=16 if runlocal else 64, num_layers=2 if runlocal else 4, skip=1 if runlocal else 2,
      bg_hidden=8 if runlocal else 32, bg_num_layers=2, feature_dim=8 if runlocal else 32,
      freq_points=4 if runlocal else 6, freq_dirs=2, samples=8 if runlocal else 16,
      feature_resolution=8 if runlocal else 16, img_resolution=32 if runlocal else 64,
      renderer_channels=16 if runlocal else 64, renderer_min_channels=8 if runlocal else 16,
      spectral_norm=True, object_scale=0.5,
      d_channels=(8, 16, 16) if runlocal else (16, 32, 64, 64)))
  c.scene = ml_collections.ConfigDict(dict(rotation_range=(0.0, 1.0), pitch_range=0.2))
  if gen:
    c.loss = ml_collections.ConfigDict(dict(
        adversarial=0.05, r1_gamma=10.0, r1_every=2 if runlocal else 4,
        world_image=1.0, world_depth=1.0, world_mask=0.5))
    c.optimizer_g = _adam(1e-3, c.total_steps, 1 if runlocal else 50, 1e-4)
    c.optimizer_d = ml_collections.ConfigDict(dict(name="rmsprop", lr=7e-5, decay=0.99, eps=1e-8))
  else:
    c.generator = ml_collections.ConfigDict(dict(path="" if runlocal else "toy"))
    c.inverter = ml_collections.ConfigDict(dict(
        channels=(8, 16, 16) if runlocal else (32, 64, 128, 128), hidden=32 if runlocal else 256))
    c.loss = ml_collections.ConfigDict(dict(
        realism=1.0, latent=10.0, image=100.0, lpips=1.0 if runlocal else 0.0, ssim=1.0,
        pose=10.0))
    c.losses = ml_collections.ConfigDict(dict(lpips_net="alex",
                                              lpips_path="random" if runlocal else ""))
    c.optimizer_i = _adam(1e-3, c.total_steps, 1 if runlocal else 50, 1e-5)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  return c
