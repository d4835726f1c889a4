"""The evaluation protocol behind ``jaxinv eval``: invert a test set, score it, write the table.

Per item (one test image):

* input view: MSE, PSNR, SSIM, MS-SSIM (shorter side >= 161), LPIPS (with LPIPS weights) and ID
  similarity (with ArcFace weights) of the reconstruction against the input at the generator's
  resolution (the input is resized to it, as ``jaxinv.invert`` does);
* novel views at each of ``yaws`` (TriPlaneNet's protocol: +-0.3, +-0.6, +-0.8 rad): ID
  similarity of the render against the input (datasets: absolute yaws on the generator's look-at
  orbit; the world: offsets from the input yaw on the world's orbit);
* the world only: PSNR / SSIM / foreground depth error of every view against the world's exact
  render (``jaxinv.eval.world_views``, shared with ``bench/world_novel_view.py``);
* seconds per image: the wall time of its ``invert`` call divided by the batch size.

Batches are sharded over every available device (a "data" mesh: each device inverts and scores
``batch / devices`` items) when the batch is a multiple of the device count; a batch that is not
(the last one, or ``--batch`` not a multiple) runs unsharded, with the same numbers.

Items are processed in batches; each finished item is appended to ``OUT/items.jsonl`` and a rerun
with the same settings skips it (a rerun with other settings is refused). The summary
(``results.json``, ``results.md``, ``per_yaw.png``, ``grid.png``) is rebuilt from the jsonl.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.data import world
from jaxinv.eval import metrics, report, world_views
from jaxinv.parallel import sharding
from jaxinv.inversion import invert as _invert
from jaxinv.inversion.result import orbit_label

DEFAULT_YAWS = (-0.8, -0.6, -0.3, 0.3, 0.6, 0.8)
ITEMS = "items.jsonl"
RUN = "run.json"
FEATURES = "features"   # OUT/features/<id>.npz: Inception features of each finished item (FID/KID)


@dataclasses.dataclass(frozen=True)
class EvalWeights:
  """Loaded networks: what ``jaxinv.invert`` takes, plus the metric networks.

  Attributes:
    invert: ``jaxinv.inversion.invert.Weights`` with loaded objects (an ``EG3DGenerator``...).
    lpips: ``(net, variables)`` for the LPIPS metric, or None (metric left out).
    arcface: ``(module, variables)`` / callable for ID similarity, or None (left out).
    inception: FID Inception-v3 parameters (``jaxinv.convert.inception.load``) for FID / KID, or
      None (left out).
    names: ``{key: file name or description}`` written into the protocol.
  """
  invert: Any
  lpips: Any = None
  arcface: Any = None
  inception: Any = None
  names: dict = dataclasses.field(default_factory=dict)


def _world_items(num: int, input_yaw: float, G):
  z = np.asarray(world.sample_z(jax.random.PRNGKey(world_views.SEED), num))
  c = np.asarray(world.orbit_label(np.full(num, input_yaw)))
  ids = [f"world-{i:05d}" for i in range(num)]
  return ids, z, c


def _load_dataset(path, num):
  from jaxinv.data.eg3d_dataset import EG3DDataset
  return EG3DDataset(path, max_size=num)


def _finite_mean(v):
  v = [x for x in v if x is not None and np.isfinite(x)]
  return float(np.mean(v)) if v else None


def _read_items(path):
  done = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        line = line.strip()
        if not line:
          continue
        try:
          r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: that item is redone
          continue
        done[r["id"]] = r
  return done


def _check_run(outdir, settings):
  path = os.path.join(outdir, RUN)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != settings:
      diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
      raise ValueError(f"{outdir} holds an evaluation with other settings ({', '.join(diff)}); "
                       "use another --outdir or the same settings to resume")
  else:
    with open(path, "w") as f:
      json.dump(settings, f, indent=1)


def _scalar(x):
  x = float(x)
  return x if math.isfinite(x) else None


def score_batch(inv, target, yaws, w: EvalWeights, *, id_crop="psp", world_z=None,
                input_yaw=0.0) -> list[dict]:
  """Scores of one inverted batch: a list of per-item dicts (see the module docstring).

  Args:
    inv: the ``Inversion`` of the batch.
    target: ``[B, S, S, 3]`` the inputs at the generator's resolution in [-1, 1].
    yaws: novel-view yaws (radians).
    world_z: ``[B, Z_DIM]`` the true scenes (world data) or None.
  Returns:
    per item: ``dict(input={metric: v}, views={"%+.2f" % yaw: {metric: v}})`` and, as
    ``_images``, the renders for the grid (dropped before writing).
  """
  G = inv.G
  b = inv.batch_size
  rec = inv.render()
  img = jnp.clip(rec["image"], -1, 1)
  inp = dict(mse=metrics.mse(img, target), psnr=metrics.psnr(img, target),
             ssim=metrics.ssim(img, target))
  if min(target.shape[1:3]) >= metrics.ms_ssim_min_side():
    inp["ms_ssim"] = metrics.ms_ssim(img, target)
  if w.lpips is not None:
    net, variables = w.lpips
    inp["lpips"] = metrics.lpips(variables, img, target, net)
  if w.arcface is not None:
    inp["id"] = metrics.id_similarity(w.arcface, img, target, id_crop)
  views, images = {}, {}
  all_yaws = sorted(set([0.0] + [float(y) for y in yaws])) if world_z is not None else list(yaws)
  for yaw in all_yaws:
    if world_z is not None:
      c = world.orbit_label(np.full(b, input_yaw + yaw))
    else:
      c = np.repeat(orbit_label(G, yaw), b, axis=0)
    out = inv.render(c)
    v = {}
    if w.arcface is not None:
      v["id"] = metrics.id_similarity(w.arcface, out["image"], target, id_crop)
    if world_z is not None:
      scores, truth = world_views.score_view(out, world_z, c, G, return_truth=True)
      v.update(scores)
      images[yaw] = (np.asarray(out["image"]), truth)
    else:
      images[yaw] = (np.asarray(out["image"]), None)
    views[f"{yaw:+.2f}"] = v
  feats = None
  if w.inception is not None:
    from jaxinv.models import inception as _inception
    f = lambda x: np.asarray(_inception.features_jit(w.inception, jnp.clip(x, -1, 1)))
    feats = dict(input=f(target), reconstruction=f(img),
                 **{f"view{y:+.2f}": f(images[y][0]) for y in all_yaws})
  rows = []
  for i in range(b):
    rows.append(dict(
        input={k: _scalar(np.asarray(v)[i]) for k, v in inp.items()},
        views={y: {k: _scalar(np.asarray(m)[i]) for k, m in v.items()} for y, v in views.items()},
        _images=dict(input=np.asarray(target[i]), reconstruction=np.asarray(img[i]),
                     views={y: (p[i], None if t is None else t[i]) for y, (p, t) in images.items()})))
    if feats is not None:
      rows[-1]["_features"] = {k: v[i] for k, v in feats.items()}
  return rows


def evaluate(method: str, data: str, outdir, weights: EvalWeights, *, num: int | None = None,
             batch: int = 4, yaws: Sequence[float] = DEFAULT_YAWS, input_yaw: float = 0.0,
             seed: int = 0, options: dict | None = None, id_crop: str = "psp",
             grid_items: int = 4, progress: bool = True,
             invert_fn: Callable | None = None) -> dict:
  """Runs the protocol (module docstring) and writes ``OUT/{results.json, results.md, per_yaw.png,
  grid.png, items.jsonl, run.json}``. Returns the ``results.json`` content.

  Args:
    method: a ``jaxinv.invert`` method.
    data: ``"world"`` (the procedural world's held-out scenes) or an EG3D dataset folder / zip.
    weights: :class:`EvalWeights` (loaded networks; ``jaxinv eval`` loads files).
    num: items to evaluate (world: required; dataset: the first ``num`` in sorted order).
    batch: images per ``invert`` call.
    yaws: novel-view yaws (radians).
    input_yaw: the world's input camera yaw.
    seed: ``jax.random.PRNGKey(seed)`` is the key of every ``invert`` call.
    options: method options for ``invert`` (``steps=``...).
  """
  from tqdm import tqdm
  options = dict(options or {})
  if method not in _invert.INVERT_METHODS:
    raise ValueError(f"method: unknown {method!r}; one of {', '.join(_invert.INVERT_METHODS)}")
  if batch < 1:
    raise ValueError(f"batch must be >= 1, got {batch}")
  if num is not None and num < 1:
    raise ValueError(f"num must be >= 1, got {num}")
  if id_crop not in metrics.ID_CROPS:
    raise ValueError(f"id crop must be one of {metrics.ID_CROPS}, got {id_crop!r}")
  yaws = [float(y) for y in yaws]
  G = _invert._generator(weights.invert)
  invert_fn = invert_fn or _invert.invert
  is_world = data == "world"
  if is_world:
    if num is None:
      raise ValueError("data=world needs num (how many held-out scenes)")
    ids, zs, cs = _world_items(num, input_yaw, G)
    dataset = None
  else:
    if not os.path.exists(data):
      raise FileNotFoundError(f"data: expected 'world' or an EG3D dataset folder / zip, no such "
                              f"file or folder: {data}")
    dataset = _load_dataset(data, num)
    ids = list(dataset.names)
  os.makedirs(outdir, exist_ok=True)
  settings = dict(method=method, data="world" if is_world else os.path.abspath(data),
                  num=num, yaws=yaws, input_yaw=input_yaw if is_world else None, seed=seed,
                  options=options, id_crop=id_crop, weights=weights.names,
                  resolution=int(G.config.img_resolution))
  _check_run(outdir, settings)
  items_path = os.path.join(outdir, ITEMS)
  done = _read_items(items_path)
  todo = [i for i, n in enumerate(ids) if done.get(n, {}).get("status") != "ok"]
  key = jax.random.PRNGKey(seed)
  mesh = sharding.make_mesh() if jax.device_count() > 1 else None
  bar = tqdm(total=len(ids), initial=len(ids) - len(todo), disable=not progress,
             desc=f"eval ({method})", file=sys.stderr)
  with open(items_path, "a") as log:
    for s in range(0, len(todo), batch):
      idx = todo[s:s + batch]
      try:
        if is_world:
          c = cs[idx]
          image = world.render(zs[idx], c, resolution=G.config.img_resolution)["image"]
        else:
          recs = [dataset[i] for i in idx]
          image = np.stack([r["image"] for r in recs])
          c = np.stack([r["c"] for r in recs])
        image, c = _place(image, c, mesh)
        t0 = time.perf_counter()
        inv = invert_fn(image, pose=c, method=method, weights=weights.invert, key=key, **options)
        jax.block_until_ready(inv.ws)
        secs = (time.perf_counter() - t0) / len(idx)
        target = inv.target if inv.target is not None else jnp.asarray(image)
        rows = score_batch(inv, target, yaws, weights, id_crop=id_crop,
                           world_z=zs[idx] if is_world else None, input_yaw=input_yaw)
      except (ValueError, OSError, TypeError, FloatingPointError) as e:
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        rows = [dict(error=msg) for _ in idx]
        print(f"jaxinv eval: {', '.join(ids[i] for i in idx)}: {msg}", file=sys.stderr)
        secs = None
      for i, r in zip(idx, rows):
        images = r.pop("_images", None)
        feats = r.pop("_features", None)
        if feats is not None:
          os.makedirs(os.path.join(outdir, FEATURES), exist_ok=True)
          np.savez(os.path.join(outdir, FEATURES, f"{report._safe(ids[i])}.npz"), **feats)
        r = dict(id=ids[i], status="error" if "error" in r else "ok", seconds=secs, **r)
        if images is not None and i < grid_items:
          report.save_preview(outdir, ids[i], images)
        log.write(json.dumps(r) + "\n")
        done[ids[i]] = r
      log.flush()
      bar.update(len(idx))
  bar.close()
  results = summarize([done[n] for n in ids if n in done], settings, weights, G, is_world,
                      outdir=outdir)
  report.write(outdir, results, [n for n in ids[:grid_items]])
  return results


def set_metrics(outdir, ids) -> dict:
  """FID and KID of the finished items' features (``OUT/features``): the reconstructions and each
  novel view against the inputs. ``{'input': {fid, kid}, '<yaw>': {fid, kid}}``; {} when fewer
  than 2 items have features."""
  from jaxinv.eval import metrics as m
  sets = {}
  for n in ids:
    path = os.path.join(outdir, FEATURES, f"{report._safe(n)}.npz")
    if not os.path.exists(path):
      continue
    with np.load(path) as f:
      for k in f.files:
        sets.setdefault(k, []).append(f[k])
  if len(sets.get("input", [])) < 2:
    return {}
  real = np.stack(sets["input"])
  out = {}
  for k, v in sets.items():
    if k == "input" or len(v) != len(real):
      continue
    fake = np.stack(v)
    out["input" if k == "reconstruction" else k[len("view"):]] = dict(
        fid=m.fid(real, fake), kid=m.kid(real, fake))
  return out


def _place(image, c, mesh):
  """The batch split over the mesh's devices (float images in [-1, 1], as ``invert`` converts
  uint8), or unchanged without a mesh or when the batch does not divide."""
  if mesh is None or np.shape(image)[0] % sharding.batch_divisor(mesh):
    return image, c
  x = np.asarray(image)
  x = x.astype(np.float32) / 127.5 - 1.0 if x.dtype == np.uint8 else x.astype(np.float32)
  return (jax.device_put(x, sharding.batch_sharding(mesh, 4)),
          jax.device_put(np.asarray(c, np.float32), sharding.batch_sharding(mesh, 2)))


def summarize(rows, settings, weights: EvalWeights, G, is_world, outdir=None) -> dict:
  ok = [r for r in rows if r["status"] == "ok"]
  skipped = [dict(id=r["id"], error=r.get("error")) for r in rows if r["status"] != "ok"]
  inp_keys = sorted({k for r in ok for k in r["input"]})
  view_keys = sorted({y for r in ok for y in r["views"]}, key=float)
  inp = {k: _finite_mean([r["input"].get(k) for r in ok]) for k in inp_keys}
  per_yaw = {y: {m: _finite_mean([r["views"][y].get(m) for r in ok if y in r["views"]])
                 for m in sorted({m for r in ok for m in r["views"].get(y, {})})}
             for y in view_keys}
  secs = [r["seconds"] for r in ok if r.get("seconds") is not None]
  notes = []
  if weights.lpips is None:
    notes.append("LPIPS: not computed (no LPIPS weights given: --weights lpips=FILE)")
  if weights.arcface is None:
    notes.append("ID: not computed (no ArcFace weights given: --weights arcface=FILE)")
  if "ms_ssim" not in inp_keys:
    notes.append(f"MS-SSIM: not computed ({G.config.img_resolution} px images; MS-SSIM needs a "
                 f"shorter side of at least {metrics.ms_ssim_min_side()})")
  if weights.inception is None:
    notes.append("FID/KID: not computed (no Inception weights given: --weights inception=FILE, "
                 "pytorch-fid's pt_inception-2015-12-05 .pth or `jaxinv convert inception`)")
  elif outdir is not None:
    sm = set_metrics(outdir, [r["id"] for r in ok])
    if sm:
      inp.update(sm.get("input", {}))
      for y, v in sm.items():
        if y != "input":
          per_yaw.setdefault(y, {}).update(v)
      notes.append(f"FID/KID: Inception-v3 pool3 features (pytorch-fid weights, images resized to "
                   f"299) of the {len(ok)} reconstructions / renders at each yaw against the "
                   f"{len(ok)} inputs; with fewer than 2048 items FID is biased upwards, KID is "
                   "not (StyleGAN-ADA's estimator: 100 subsets of up to 1000)")
    else:
      notes.append("FID/KID: not computed (fewer than 2 items)")
  return dict(settings=settings, items=len(ok), skipped=skipped, input_view=inp, per_yaw=per_yaw,
              seconds_per_image=float(np.median(secs)) if secs else None,
              protocol=dict(
                  resolution=int(G.config.img_resolution),
                  neural_rendering_resolution=int(G.neural_rendering_resolution),
                  id_network=weights.names.get("arcface"), id_crop=settings["id_crop"],
                  lpips_network=weights.names.get("lpips"),
                  generator=weights.names.get("generator"),
                  views=("world orbit, yaw offsets from the input yaw" if is_world else
                         "generator look-at orbit, absolute yaws")),
              notes=notes, jax=jax.__version__, backend=jax.default_backend())
