"""``toy_eg3d``: an EG3D-architecture generator of the procedural world, by multi-view regression.

``G(z, c)`` must reproduce ``jaxinv.data.world.render(z, c)`` for the same ``z`` at any orbit
camera, so the world itself is the teacher: every step draws ``z ~ N(0, I)`` and
``config.views`` cameras per scene on device, renders the exact targets with the world's sphere
tracer (inside the jitted step) and regresses the generator onto them. The objective and why it
is chosen are in ``configs/toy_eg3d.py``.

Parameter group ``G`` (the whole ``EG3DGenerator`` params pytree, Adam). Config fields read
here (besides the loop's): ``model.*`` (the ``EG3DConfig`` init kwargs, see :func:`generator_config`),
``views``, ``yaw_range``, ``pitch_range``, ``loss.{image, image_raw, depth, opacity}``, ``optimizer``.

Also here: :func:`generator_config`, :func:`evaluate` (PSNR / depth error against the world on
held-out z over orbit cameras) and :func:`export` (checkpoint -> the shipped ``.npz`` + manifest).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.data import world
from jaxinv.models import eg3d
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks.base import Phase, Task, TaskInit

# Held-out scenes: never drawn by training (training keys come from fold_in(seed, step)).
EVAL_SEED = 20261201
EVAL_YAWS = (-0.8, -0.4, 0.0, 0.4, 0.8)


def _get(cfg, name, default):
  try:
    v = cfg.get(name, default)
  except AttributeError:
    v = getattr(cfg, name, default)
  return default if v is None else v


def generator_config(model) -> eg3d.EG3DConfig:
  """The toy ``EG3DConfig`` from ``config.model`` (channel_base, channel_max, mapping_layers,
  neural_rendering_resolution, depth_resolution, depth_resolution_importance)."""
  nrr = int(_get(model, "neural_rendering_resolution", 32))
  rk = dict(eg3d.TINY_INIT_KWARGS["rendering_kwargs"])
  rk.update(depth_resolution=int(_get(model, "depth_resolution", 24)),
            depth_resolution_importance=int(_get(model, "depth_resolution_importance", 24)),
            # The world does not depend on the camera: no pose conditioning, so G(z, .) is one
            # 3D scene seen from every camera.
            c_gen_conditioning_zero=True, c_scale=0.0)
  cb, cm = int(_get(model, "channel_base", 2048)), int(_get(model, "channel_max", 64))
  kw = dict(eg3d.TINY_INIT_KWARGS, z_dim=world.Z_DIM, channel_base=cb, channel_max=cm,
            mapping_kwargs={"num_layers": int(_get(model, "mapping_layers", 4)),
                            "lr_multiplier": float(_get(model, "mapping_lr_multiplier", 0.1))},
            sr_kwargs={"channel_base": cb, "channel_max": cm,
                       "fused_modconv_default": "inference_only"},
            rendering_kwargs=rk, neural_rendering_resolution=nrr)
  return eg3d.EG3DConfig.from_init_kwargs(kw)


def sample_cameras(key, n, yaw_range, pitch_range):
  """Orbit cameras ``c [n, 25]``: yaw ~ U(-yaw_range, yaw_range), pitch ~ U(-pitch_range, ...)."""
  ky, kp = jax.random.split(key)
  yaw = jax.random.uniform(ky, (n,), minval=-yaw_range, maxval=yaw_range)
  pitch = jax.random.uniform(kp, (n,), minval=-pitch_range, maxval=pitch_range)
  return world.orbit_label(yaw, pitch)


def _psnr(a, b):
  """PSNR in dB of images in [-1, 1] (peak-to-peak 2), per image."""
  mse = jnp.mean((a - b) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))


def build(config) -> Task:
  gcfg = generator_config(config.model)
  batch = int(config.batch_size)
  views = int(_get(config, "views", 2))
  if batch % views:
    raise ValueError(f"batch_size {batch} must be a multiple of views {views}")
  scenes = batch // views
  yaw_range = float(_get(config, "yaw_range", 1.0))
  pitch_range = float(_get(config, "pitch_range", 0.3))
  lw = config.loss
  w_img, w_raw = float(_get(lw, "image", 1.0)), float(_get(lw, "image_raw", 1.0))
  w_depth, w_opacity = float(_get(lw, "depth", 1.0)), float(_get(lw, "opacity", 0.1))
  r_raw, r_img = gcfg.neural_rendering_resolution, gcfg.img_resolution

  def init(key):
    return TaskInit(params=dict(G=eg3d.init_params(gcfg, key)), model_state={}, frozen={})

  def make_batch(frozen, key, step, host_batch):
    kz, kc = jax.random.split(key)
    z = jnp.repeat(world.sample_z(kz, scenes), views, axis=0)      # [batch, Z]: scene-major
    c = sample_cameras(kc, batch, yaw_range, pitch_range)
    raw = world.render_jit(z, c, r_raw)
    img = world.render_jit(z, c, r_img)
    return dict(z=z, c=c, image=img["image"], image_raw=raw["image"],
                depth=jnp.where(raw["mask"] > 0, raw["depth"], 0.0), mask=raw["mask"])

  def forward(params, batch):
    G = eg3d.EG3DGenerator(gcfg, params)
    # One set of planes per scene, rendered from its `views` cameras.
    z = batch["z"][::views]
    ws = G.mapping(z, batch["c"][::views])
    planes = G.planes(ws)
    rep = lambda x: jnp.repeat(x, views, axis=0)  # noqa: E731
    return G.render_planes(rep(planes), rep(ws), batch["c"])

  def loss_fn(params, model_state, frozen, batch, key, step):
    out = forward(params["G"], batch)
    mask = batch["mask"]
    l_img = jnp.mean((out["image"] - batch["image"]) ** 2)
    l_raw = jnp.mean((out["image_raw"] - batch["image_raw"]) ** 2)
    fg = jnp.maximum(jnp.sum(mask), 1.0)
    l_depth = jnp.sum(jnp.abs(out["image_depth"] - batch["depth"]) * mask) / fg
    # The world is opaque everywhere (object or backdrop): every ray's weights should sum to 1.
    l_opacity = jnp.mean(jnp.abs(1.0 - out["weights_sum"]))
    loss = w_img * l_img + w_raw * l_raw + w_depth * l_depth + w_opacity * l_opacity
    metrics = dict(image_mse=l_img, image_raw_mse=l_raw, depth_l1=l_depth, opacity_l1=l_opacity,
                   psnr=jnp.mean(_psnr(out["image"], batch["image"])))
    return loss, dict(metrics=metrics)

  def preview(params, model_state, frozen, batch):
    out = forward(params["G"], batch)
    return dict(world=batch["image"], generator=jnp.clip(out["image"], -1, 1))

  return Task(name="toy_eg3d", init=init, phases=(Phase("G", loss_fn),),
              optimizers=dict(G=make_optimizer(config.optimizer)), make_batch=make_batch,
              preview=preview, in_domain_metric="image_mse")


# ------------------------------------------------------------------ evaluation and export

def evaluate(G, num_scenes: int = 16, yaws=EVAL_YAWS, pitch: float = 0.0, seed: int = EVAL_SEED,
             batch: int = 4) -> dict:
  """G against the world on held-out z: PSNR (dB, G's ``image`` at its resolution) and foreground
  depth error (mean |G depth - true depth| at the neural resolution, absolute and in % of the
  orbit radius 2.7), per yaw and overall; foreground = the world's mask."""
  z_all = np.asarray(world.sample_z(jax.random.PRNGKey(seed), num_scenes))
  per_yaw = {}
  for yaw in yaws:
    psnr, derr, nfg = [], 0.0, 0.0
    for i in range(0, num_scenes, batch):
      z = z_all[i:i + batch]
      c = world.orbit_label(np.full(len(z), yaw), pitch)
      out = G(z, c)
      img = world.render(z, c, resolution=G.config.img_resolution)["image"]
      raw = world.render(z, c, resolution=G.neural_rendering_resolution)
      psnr += list(np.asarray(_psnr(out["image"], img)))
      m = np.asarray(raw["mask"]) > 0
      derr += float(np.abs(np.asarray(out["image_depth"]) - np.asarray(raw["depth"]))[m].sum())
      nfg += float(m.sum())
    per_yaw[f"{yaw:+.1f}"] = dict(psnr=float(np.mean(psnr)), depth_l1=derr / max(nfg, 1.0))
  psnr = float(np.mean([v["psnr"] for v in per_yaw.values()]))
  depth = float(np.mean([v["depth_l1"] for v in per_yaw.values()]))
  return dict(psnr=psnr, psnr_min_yaw=float(min(v["psnr"] for v in per_yaw.values())),
              depth_l1=depth, depth_pct_radius=100.0 * depth / 2.7, per_yaw=per_yaw,
              num_scenes=num_scenes, seed=seed, pitch=pitch)


W_AVG_SAMPLES = 100_000


def measure_w_avg(G, num: int = W_AVG_SAMPLES, seed: int = 0, chunk: int = 10_000) -> np.ndarray:
  """The mean of ``G.mapping(z)`` (first row, psi 1) over ``num`` draws of ``z ~ N(0, I)``.

  EG3D tracks ``w_avg`` while training (an EMA of the mapping's outputs, beta 0.995): the truncation
  trick, the mean-latent start of the optimisation baselines and the encoders' ``latent_avg``
  use it. The toy task trains without that tracker, so its export measures the mean instead.
  """
  fn = jax.jit(lambda z: G.mapping(z, jnp.zeros((z.shape[0], G.config.c_dim)))[:, 0])
  total = np.zeros((G.config.w_dim,), np.float64)
  key = jax.random.PRNGKey(seed)
  for i in range(0, num, chunk):
    n = min(chunk, num - i)
    z = jax.random.normal(jax.random.fold_in(key, i), (n, G.config.z_dim))
    total += np.asarray(jnp.sum(fn(z), axis=0), np.float64)
  return (total / num).astype(np.float32)


def with_w_avg(G, w_avg) -> "eg3d.EG3DGenerator":
  """``G`` with its tracked ``w_avg`` replaced."""
  params = jax.tree_util.tree_map(lambda x: x, G.params)
  mapping = params["params"]["backbone"]["mapping"]
  if mapping["w_avg"].shape != np.shape(w_avg):
    raise ValueError(f"w_avg: expected shape {mapping['w_avg'].shape}, got {np.shape(w_avg)}")
  mapping["w_avg"] = np.asarray(w_avg, np.float32)
  return type(G)(G.config, params)


def export(workdir: str, out_path: str, config=None, command: str = "", commit: str = "",
           num_scenes: int = 16) -> dict:
  """Writes the trained G of ``workdir`` as a native ``.npz`` and ``<out>.json`` manifest."""
  from jaxinv.convert import eg3d as eg3d_convert
  from jaxinv.train import checkpoint as ckpt
  from jaxinv.train.metrics import first_and_last_logged
  if config is None:
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "toy_cfg", os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs",
                                "toy_eg3d.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config()
  loaded = ckpt.load_checkpoint(workdir)
  gcfg = generator_config(config.model)
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), loaded["params"]["G"])
  G = eg3d.EG3DGenerator(gcfg, params)
  G = with_w_avg(G, measure_w_avg(G))
  metrics = evaluate(G, num_scenes=num_scenes)
  eg3d_convert.save(G, out_path)
  first, last = first_and_last_logged(workdir)
  manifest = dict(
      name="toy", kind="eg3d", file=os.path.basename(out_path), config=config.to_dict(),
      generator_config=gcfg.to_json(), training_command=command, commit=commit,
      steps=int(loaded["step"]), first_logged=first, last_logged=last,
      heldout_metrics=metrics, size_bytes=os.path.getsize(out_path))
  with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
    json.dump(manifest, f, indent=1, default=float)
  return manifest


def _main(argv=None):
  import argparse
  import subprocess
  p = argparse.ArgumentParser(description="Export a trained toy EG3D run to jaxinv/assets.")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "assets",
                                               "toy_eg3d.npz"))
  p.add_argument("--command", default="python -m jaxinv.train --config configs/toy_eg3d.py "
                                      "--workdir runs/toy_eg3d")
  p.add_argument("--num_scenes", type=int, default=16)
  a = p.parse_args(argv)
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(__file__)).stdout.strip()
  except OSError:
    commit = ""
  m = export(a.workdir, os.path.abspath(a.out), command=a.command, commit=commit,
             num_scenes=a.num_scenes)
  print(json.dumps(m["heldout_metrics"], indent=1))


if __name__ == "__main__":
  _main()

