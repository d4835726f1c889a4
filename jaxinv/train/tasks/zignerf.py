"""``zignerf``: ZIGNeRF's two stages on the procedural world (``configs/zignerf.py``).

**Stage ``generator``** (paper stage A): the GIRAFFE-style generator G (``jaxinv.models.giraffe``)
and the residual discriminator D, trained adversarially on world renders: the non-saturating GAN
loss plus R1 on the reals (eq. 7, read as StyleGAN's ``gamma / 2 * E||grad D(x_real)||^2`` with
gamma = ``loss.r1_gamma`` = 10, lazily every ``loss.r1_every`` steps and scaled by it). Every
step draws codes ``z ~ N(0, I)``, object turns ``theta ~ U(rotation_range * 2 pi)``, camera pitch
``xi ~ U(+-pitch_range)`` on device; the reals are ``world.render`` of the same codes (read as the
world's latent, see below) at the same pose, so besides the paper's loss G can be pulled to the
world with ``loss.world_image`` (MSE of the images), ``loss.world_depth`` (L1 of the depth on the
world's foreground, at the feature resolution) and ``loss.world_mask`` (L1 of the object mask).
With those three at 0 the stage is the paper's pure GAN; the reasons for using them are in the
config.

The codes ARE the world's latent, split into ZIGNeRF's four parts (:func:`world_codes`):
object shape = the world's 14 shape numbers, object appearance = its 5 appearance numbers,
background shape = ``bg_horizon``, background appearance = the other 4 background numbers. Object
turn theta about the vertical axis is the world seen from ``rotate_label(c, theta)`` (its backdrop
depends only on height, so it turns with nothing; its light turns with the object).

**Stage ``inverter``** (paper stage B): G and D frozen (``generator.path``: a stage-A workdir, an
exported ``.npz``, or "toy"), the inverter I (``jaxinv.models.encoders.zignerf``) trained on G's
images only, with eq. 10: ``L_real + 10 L1(z) + 100 L1(image) + 1 (LPIPS + (1 - SSIM))``, the
source pose reused for the re-render (eq. 9), plus ``loss.pose`` x L1 of jaxinv's pose head on
(cos theta, sin theta, pitch). L_real = softplus(-D(I_pred)) (non-saturating, D frozen).

Groups: stage generator ``G`` (and ``D``); stage inverter ``I``. ``model_state`` holds the
spectral-norm vectors (``G``, ``D``).
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.data import world
from jaxinv.losses import adversarial as adv
from jaxinv.losses.ssim import ssim
from jaxinv.models import giraffe as gm
from jaxinv.models.encoders import zignerf as zenc
from jaxinv.nn.giraffe import ResidualDiscriminator
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks.base import Phase, Task, TaskInit
from jaxinv.train.tasks.psp_family import LossNets, cfg_get

EVAL_SEED = 20261202


def world_codes(z) -> dict:
  """World latents ``[B, 24]`` -> GIRAFFE codes (one object)."""
  b = z.shape[0]
  return dict(obj_shape=z[:, world.Z_SHAPE].reshape(b, 1, -1),
              obj_app=z[:, world.Z_APPEARANCE].reshape(b, 1, -1),
              bg_shape=z[:, 23:24], bg_app=z[:, 19:23])


def codes_to_world(codes) -> jax.Array:
  """Inverse of :func:`world_codes` (one object)."""
  b = codes["bg_app"].shape[0]
  return jnp.concatenate([codes["obj_shape"].reshape(b, -1), codes["obj_app"].reshape(b, -1),
                          codes["bg_app"], codes["bg_shape"]], axis=-1)


WORLD_CONFIG = dict(obj_shape_dim=14, obj_app_dim=5, bg_shape_dim=1, bg_app_dim=4, n_objects=1)


def generator_config(model) -> gm.GiraffeConfig:
  fields = {f: cfg_get(model, f, getattr(gm.GiraffeConfig, f)) for f in (
      "hidden", "num_layers", "skip", "bg_hidden", "bg_num_layers", "feature_dim", "freq_points",
      "freq_dirs", "samples", "feature_resolution", "img_resolution", "renderer_channels",
      "renderer_min_channels", "spectral_norm", "object_scale")}
  fields["skip"] = None if int(fields["skip"]) < 0 else int(fields["skip"])
  return gm.GiraffeConfig(**WORLD_CONFIG, **fields)


def discriminator(model) -> ResidualDiscriminator:
  return ResidualDiscriminator(tuple(cfg_get(model, "d_channels", (32, 64, 128, 128))),
                               bool(cfg_get(model, "spectral_norm", True)))


def sample_pose(key, batch: int, scene):
  """(theta [B, 1] radians, pitch [B], c [B, 25] at yaw 0 and that pitch)."""
  kr, kp = jax.random.split(key)
  lo, hi = (float(x) for x in cfg_get(scene, "rotation_range", (0.0, 1.0)))
  theta = 2 * math.pi * jax.random.uniform(kr, (batch, 1), minval=lo, maxval=hi)
  pr = float(cfg_get(scene, "pitch_range", 0.2))
  pitch = jax.random.uniform(kp, (batch,), minval=-pr, maxval=pr)
  return theta, pitch, world.orbit_label(jnp.zeros((batch,)), pitch)


def world_targets(z, theta, c, img_res: int, feat_res: int) -> dict:
  """The world's render of scenes ``z`` turned by ``theta [B, 1]``, seen from ``c``."""
  cw = gm.rotate_label(c, theta[:, 0])
  hi = world.render_jit(z, cw, img_res)
  lo = world.render_jit(z, cw, feat_res)
  return dict(image=hi["image"], depth=jnp.where(lo["mask"] > 0, lo["depth"], 0.0), mask=lo["mask"])


def _l1(a, b):
  return jnp.mean(jnp.abs(a - b))


def _codes_l1(a: dict, b: dict):
  return sum(jnp.sum(jnp.abs(a[k] - b[k])) for k in a) / (
      a["bg_app"].shape[0] * sum(int(np.prod(a[k].shape[1:])) for k in a))


def _d_apply(D, dvars, x, update: bool):
  if update:
    logits, new = D.apply(dvars, x, update_stats=True, mutable=["batch_stats"])
    return logits, dict(dvars, batch_stats=new["batch_stats"])
  return D.apply(dvars, x, update_stats=False), dvars


def build(config) -> Task:
  stage = str(cfg_get(config, "stage", "generator"))
  if stage == "generator":
    return _build_generator(config)
  if stage == "inverter":
    return _build_inverter(config)
  raise ValueError(f"config.stage must be 'generator' or 'inverter', got {stage!r}")


# ------------------------------------------------------------------ stage A: G and D

def _build_generator(config) -> Task:
  gcfg = generator_config(config.model)
  D = discriminator(config.model)
  batch = int(config.batch_size)
  L = config.loss
  w_adv = float(cfg_get(L, "adversarial", 1.0))
  w_img, w_depth = float(cfg_get(L, "world_image", 0.0)), float(cfg_get(L, "world_depth", 0.0))
  w_mask = float(cfg_get(L, "world_mask", 0.0))
  gamma, r1_every = float(cfg_get(L, "r1_gamma", 10.0)), int(cfg_get(L, "r1_every", 4))
  res = gcfg.img_resolution

  def init(key):
    kg, kd = jax.random.split(key)
    gv = gm.init(gcfg, kg)
    dv = D.init(kd, jnp.zeros((1, res, res, 3)), update_stats=True)
    return TaskInit(params=dict(G=gv["params"], D=dv["params"]),
                    model_state=dict(G=gv["batch_stats"], D=dv["batch_stats"]), frozen={})

  def make_batch(frozen, key, step, host_batch):
    kz, kp, ku = jax.random.split(key, 3)
    z = world.sample_z(kz, batch)
    theta, pitch, c = sample_pose(kp, batch, config.scene)
    t = world_targets(z, theta, c, res, gcfg.feature_resolution)
    return dict(z=z, theta=theta, pitch=pitch, c=c, u=gm.stratified_draws(ku, batch, gcfg), **t)

  def fake(params, model_state, b, update):
    return gm.generate(gcfg, dict(params=params["G"], batch_stats=model_state["G"]),
                       world_codes(b["z"]), b["c"], b["theta"], u=b["u"], update_stats=update)

  def d_loss(params, model_state, frozen, b, key, step):
    out, _ = fake(params, model_state, b, False)
    dv = dict(params=params["D"], batch_stats=model_state["D"])
    x_fake = jax.lax.stop_gradient(out["image"])
    both, dv_new = _d_apply(D, dv, jnp.concatenate([b["image"], x_fake]), True)
    real_l, fake_l = both[:batch], both[batch:]
    loss = adv.d_logistic_loss(real_l, fake_l)
    ms = dict(model_state, D=dv_new["batch_stats"])
    return loss, dict(metrics=dict(d_real=jnp.mean(jax.nn.softplus(-real_l)),
                                   d_fake=jnp.mean(jax.nn.softplus(fake_l)),
                                   d_real_logit=jnp.mean(real_l), d_fake_logit=jnp.mean(fake_l)),
                      model_state=ms)

  def d_r1(params, model_state, frozen, b, key, step):
    dv = dict(params=params["D"], batch_stats=model_state["D"])
    r1 = adv.r1_penalty(lambda x: D.apply(dv, x, update_stats=False), b["image"])
    return 0.5 * gamma * r1 * r1_every, dict(metrics=dict(d_r1=r1))

  def g_loss(params, model_state, frozen, b, key, step):
    out, g_stats = fake(params, model_state, b, True)
    dv = dict(params=params["D"], batch_stats=model_state["D"])
    logits = D.apply(dv, out["image"], update_stats=False)
    terms = dict(g_adv=adv.g_nonsaturating_loss(logits),
                 world_image=jnp.mean(jnp.square(out["image"] - b["image"])))
    fg = jnp.maximum(jnp.sum(b["mask"]), 1.0)
    terms["world_depth"] = jnp.sum(jnp.abs(out["depth"] - b["depth"]) * b["mask"]) / fg
    terms["world_mask"] = _l1(out["masks"][..., :1], b["mask"])
    loss = (w_adv * terms["g_adv"] + w_img * terms["world_image"] + w_depth * terms["world_depth"]
            + w_mask * terms["world_mask"])
    mse = jnp.mean(jnp.square(out["image"] - b["image"]), axis=(1, 2, 3))
    terms["psnr"] = jnp.mean(10 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12)))
    return loss, dict(metrics=terms, model_state=dict(model_state, G=g_stats))

  def preview(params, model_state, frozen, b):
    out, _ = fake(params, model_state, b, False)
    return dict(world=b["image"], generator=jnp.clip(out["image"], -1, 1))

  phases = (Phase("D", d_loss), Phase("D", d_r1, every=r1_every, name="D_r1"), Phase("G", g_loss))
  return Task(name="zignerf", init=init, phases=phases,
              optimizers=dict(G=make_optimizer(config.optimizer_g),
                              D=make_optimizer(config.optimizer_d)),
              make_batch=make_batch, preview=preview, in_domain_metric="world_image")


# ------------------------------------------------------------------ stage B: the inverter

def load_generator(path: str, runlocal: bool, gcfg: gm.GiraffeConfig, D, key):
  """``(G, D variables)`` from a stage-A workdir, an exported ``.npz``, "toy", or (runlocal, "")
  freshly initialised ones."""
  if path == "toy":
    from jaxinv.inversion.zignerf import toy_path
    path = toy_path("generator")
  if not path:
    if not runlocal:
      raise FileNotFoundError("config.generator.path is empty: the stage-A generator is needed "
                              "(a stage-A workdir, an exported .npz, or 'toy')")
    kg, kd = jax.random.split(key)
    gv = gm.init(gcfg, kg)
    return gm.Giraffe(gcfg, gv), D.init(kd, jnp.zeros((1, gcfg.img_resolution,
                                                       gcfg.img_resolution, 3)), update_stats=True)
  if os.path.isdir(path):
    from jaxinv.train.checkpoint import load_checkpoint
    ck = load_checkpoint(path)
    p, s = ck["params"], ck["model_state"]
    return (gm.Giraffe(gcfg, dict(params=p["G"], batch_stats=s["G"])),
            dict(params=p["D"], batch_stats=s["D"]))
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.generator.path: {path} does not exist")
  G, dvars = gm.load_with_discriminator(path)
  if G.config != gcfg:
    raise ValueError(f"config.generator.path: {path} holds a generator of another config "
                     f"({G.config}) than config.model ({gcfg})")
  return G, dvars


def _build_inverter(config) -> Task:
  gcfg = generator_config(config.model)
  D = discriminator(config.model)
  inv = zenc.for_generator(gcfg, tuple(cfg_get(config.inverter, "channels", (32, 64, 128, 128))),
                           int(cfg_get(config.inverter, "hidden", 256)))
  batch = int(config.batch_size)
  L = config.loss
  w = {k: float(cfg_get(L, k, d)) for k, d in (("realism", 1.0), ("latent", 10.0),
                                               ("image", 100.0), ("lpips", 1.0), ("ssim", 1.0),
                                               ("pose", 10.0))}
  nets = None
  if w["lpips"]:
    import ml_collections
    lcfg = cfg_get(config, "losses", {})
    nets = LossNets(ml_collections.ConfigDict(dict(losses=dict(
        lpips=w["lpips"], lpips_net=str(cfg_get(lcfg, "lpips_net", "alex")),
        lpips_path=str(cfg_get(lcfg, "lpips_path", ""))))), any_id=False)
  runlocal = bool(cfg_get(config, "runlocal", False))
  path = str(cfg_get(config.generator, "path", ""))
  res = gcfg.img_resolution

  def init(key):
    kg, ki, kl = jax.random.split(key, 3)
    G, dvars = load_generator(path, runlocal, gcfg, D, kg)
    params = inv.init(ki, jnp.zeros((1, res, res, 3)))["params"]
    frozen = dict(G=G.variables, D=dvars)
    if nets is not None:
      frozen["nets"] = nets.init(kl, res)
    return TaskInit(params=dict(I=params), model_state={}, frozen=frozen)

  def make_batch(frozen, key, step, host_batch):
    kz, kp = jax.random.split(key)
    codes = gm.sample_codes(kz, batch, gcfg)
    theta, pitch, c = sample_pose(kp, batch, config.scene)
    out, _ = gm.generate(gcfg, frozen["G"], codes, c, theta)
    return dict(codes=codes, theta=theta, pitch=pitch, c=c, image=out["image"])

  def pose_target(b):
    return jnp.stack([jnp.cos(b["theta"]), jnp.sin(b["theta"]),
                      jnp.broadcast_to(b["pitch"][:, None], b["theta"].shape)], -1)

  def i_loss(params, model_state, frozen, b, key, step):
    pred = inv.apply({"params": params["I"]}, b["image"])
    codes = {k: pred[k] for k in gcfg.code_dims}
    out, _ = gm.generate(gcfg, frozen["G"], codes, b["c"], b["theta"])
    y = out["image"]
    terms = dict(latent_l1=_codes_l1(codes, b["codes"]), image_l1=_l1(y, b["image"]),
                 pose_l1=_l1(pred["pose"], pose_target(b)))
    terms["realism"] = adv.g_nonsaturating_loss(D.apply(frozen["D"], y, update_stats=False))
    terms["ssim"] = jnp.mean(ssim(jnp.clip(y, -1, 1), b["image"]))
    loss = (w["realism"] * terms["realism"] + w["latent"] * terms["latent_l1"]
            + w["image"] * terms["image_l1"] + w["ssim"] * (1.0 - terms["ssim"])
            + w["pose"] * terms["pose_l1"])
    if nets is not None:
      terms["lpips"] = nets.lpips(frozen["nets"], y, b["image"])
      loss = loss + w["lpips"] * terms["lpips"]
    return loss, dict(metrics=terms)

  def preview(params, model_state, frozen, b):
    pred = inv.apply({"params": params["I"]}, b["image"])
    out, _ = gm.generate(gcfg, frozen["G"], {k: pred[k] for k in gcfg.code_dims}, b["c"],
                         b["theta"])
    return dict(source=b["image"], inverted=jnp.clip(out["image"], -1, 1))

  return Task(name="zignerf", init=init, phases=(Phase("I", i_loss),),
              optimizers=dict(I=make_optimizer(config.optimizer_i)), make_batch=make_batch,
              preview=preview, in_domain_metric="image_l1")


# ------------------------------------------------------------------ evaluation of an inverter

VISIBLE = 0.01   # a unit change of a code number moves the world's image by >= 0.5 % of its range


def code_visibility(z, c_world, resolution: int = 64) -> np.ndarray:
  """Per world number j: mean |world.render(z + e_j) - world.render(z)| at the cameras
  ``c_world`` (images in [-1, 1]). Numbers below :data:`VISIBLE` barely show in an image (the
  world's small shape details, seen from the front), so no image encoder can read them."""
  base = world.render(z, c_world, resolution)["image"]
  out = []
  for j in range(world.Z_DIM):
    img = world.render(z.at[:, j].add(1.0), c_world, resolution)["image"]
    out.append(float(jnp.mean(jnp.abs(img - base))))
  return np.asarray(out)


def evaluate_inverter(G, inverter, num: int = 64, seed: int = 11, world_num: int = 16,
                      batch: int = 16) -> dict:
  """An inverter on held-out scenes (never drawn in training: own keys).

  ``generated_scenes``: ``num`` scenes of G at codes ~ N(0, I), turns ~ U(0, 2 pi), pitch 0:
  code L1 overall and per part, beside the prior's spread E|z| = sqrt(2 / pi) (the error of
  guessing the mean), L1 over the numbers the world shows (:func:`code_visibility` >=
  :data:`VISIBLE`, on the first 8 scenes at their cameras), and the input-view PSNR.
  ``world_scenes``: ``world_num`` world scenes at turn 0, pitch 0 (key ``EVAL_SEED + 7``):
  input-view and quarter-turn PSNR beside the prior mean's (codes, turn and pitch 0)."""
  from jaxinv.eval import metrics
  from jaxinv.inversion import zignerf as zi
  key = jax.random.PRNGKey(seed)
  codes = gm.sample_codes(key, num, G.config)
  theta = jax.random.uniform(jax.random.fold_in(key, 1), (num, 1), minval=0, maxval=2 * math.pi)
  c = zi.canonical_label(jnp.zeros(num))
  err = {k: [] for k in zi.CODE_PARTS}
  psnr = []
  for i in range(0, num, batch):
    part = {k: v[i:i + batch] for k, v in codes.items()}
    image = G(part, c[i:i + batch], theta[i:i + batch])["image"]
    res = zi.invert(G, inverter, image)
    for k in zi.CODE_PARTS:
      err[k].append(np.abs(np.asarray(res.codes[k]) - np.asarray(part[k])))
    psnr += list(np.asarray(metrics.psnr(res.render()["image"], image)))
  err = {k: np.concatenate(v) for k, v in err.items()}
  per_number = np.asarray(codes_to_world({k: jnp.asarray(v.mean(0, keepdims=True))
                                          for k, v in err.items()}))[0]
  k8 = min(8, num)
  vis = code_visibility(codes_to_world({k: v[:k8] for k, v in codes.items()}),
                        gm.rotate_label(c[:k8], theta[:k8, 0]), G.config.img_resolution)
  shown = vis >= VISIBLE
  generated = dict(
      num=num, seed=seed, prior_spread_l1=math.sqrt(2 / math.pi),
      latent_l1=float(np.mean([v.mean() for v in err.values()])),
      latent_l1_parts={k: float(v.mean()) for k, v in err.items()},
      latent_l1_visible=float(per_number[shown].mean()), visible_numbers=int(shown.sum()),
      visible_names=[n for n, s in zip(world.Z_NAMES, shown) if s],
      input_view_psnr=float(np.mean(psnr)))
  z = world.sample_z(jax.random.PRNGKey(EVAL_SEED + 7), world_num)
  cw = zi.canonical_label(jnp.zeros(world_num))
  image = world.render(z, cw, G.config.img_resolution)["image"]
  res = zi.invert(G, inverter, image)
  zero = res.replace(codes={k: jnp.zeros_like(v) for k, v in res.codes.items()},
                     rotation=jnp.zeros_like(res.rotation), pitch=jnp.zeros_like(res.pitch))
  quarter = world.render(z, gm.rotate_label(cw, jnp.full((world_num,), -math.pi / 2)),
                         G.config.img_resolution)["image"]
  mean_psnr = lambda a, b: float(np.mean(metrics.psnr(a, b)))  # noqa: E731
  world_rows = dict(
      num=world_num, seed="EVAL_SEED+7",
      input_view_psnr=mean_psnr(res.render()["image"], image),
      prior_mean_psnr=mean_psnr(zero.render()["image"], image),
      quarter_turn_psnr=mean_psnr(res.render(yaw=math.pi / 2)["image"], quarter),
      quarter_turn_prior_mean_psnr=mean_psnr(zero.render(yaw=math.pi / 2)["image"], quarter))
  return dict(generated_scenes=generated, world_scenes=world_rows)


# ------------------------------------------------------------------ export

def export(workdir: str, out_path: str, command: str = "", commit: str = "",
           evaluate: bool = True) -> dict:
  """A stage's run -> the shipped ``.npz`` (+ ``.json`` manifest): stage generator writes G and D,
  stage inverter writes I (its generator's config inside) and, with ``evaluate``, its
  :func:`evaluate_inverter` figures as the manifest's ``heldout_metrics``."""
  import json
  from jaxinv.train import checkpoint as ckpt
  from jaxinv.train.metrics import first_and_last_logged
  from jaxinv.train.tasks.psp_family import read_config
  heldout = None
  config = read_config(workdir)
  gcfg = generator_config(config.model)
  ck = ckpt.load_checkpoint(workdir)
  np32 = lambda t: jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), t)  # noqa: E731
  stage = str(cfg_get(config, "stage", "generator"))
  if stage == "generator":
    G = gm.Giraffe(gcfg, np32(dict(params=ck["params"]["G"], batch_stats=ck["model_state"]["G"])))
    gm.save(G, out_path, discriminator=np32(dict(params=ck["params"]["D"],
                                                 batch_stats=ck["model_state"]["D"])))
  else:
    from jaxinv.inversion import zignerf as zi
    zi.save_inverter(out_path, np32(ck["params"]["I"]), gcfg,
                     tuple(cfg_get(config.inverter, "channels", (32, 64, 128, 128))),
                     int(cfg_get(config.inverter, "hidden", 256)))
    if evaluate:
      G, _ = load_generator(str(config.generator.path), False, gcfg, discriminator(config.model),
                            jax.random.PRNGKey(0))
      inverter, _ = zi.load_inverter(out_path)
      heldout = evaluate_inverter(G, inverter)
  first, last = first_and_last_logged(workdir)
  manifest = dict(name=f"zignerf_{stage}", kind=f"zignerf_{stage}",
                  file=os.path.basename(out_path), config=config.to_dict(),
                  generator_config=gcfg.to_json(), training_command=command, commit=commit,
                  steps=int(ck["step"]), first_logged=first, last_logged=last,
                  size_bytes=os.path.getsize(out_path))
  if heldout is not None:
    manifest["heldout_metrics"] = heldout
  with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
    json.dump(manifest, f, indent=1, default=float)
  return manifest
