"""The built-in encoders of the procedural world (issue 12): held-out evaluation and export.

A run of an encoder method's ``:toy`` config on the toy generator (``configs/psp.py:toy``, ...)
becomes ``jaxinv/assets/toy_<method>.npz`` (the native file of ``jaxinv.load_encoder``; GOAE: its
encoder and AFA files, one per stage) plus a
``.json`` manifest: the run's config, the training command, the commit, the steps trained, the
first and last logged losses and the metrics measured here on held-out world scenes.
``jaxinv.invert(image, pose, method=<method>)`` with ``weights=None`` then uses it with the toy G.

    python -m jaxinv.train --config configs/psp.py:toy --workdir runs/psp_toy
    python -m jaxinv.train.tasks.toy_encoders --workdir runs/psp_toy --out jaxinv/assets/toy_psp.npz \
        --overwrite

Held-out metrics (:func:`evaluate`): scenes of ``jaxinv.eval.world_views.SEED`` (never drawn in
training), seen at yaw 0 and pitch 0; the inversion is rendered at yaw offsets and scored against
the world's exact render at that camera (``world_views.score_view``: PSNR, SSIM, foreground depth
L1), beside the generator at its mean latent (the baseline the issue's targets are relative to).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.convert.psp import TOY_ENCODERS as FILES
from jaxinv.convert.psp import TOY_GOAE_ENCODER as GOAE_ENCODER

OFFSETS = (-0.6, 0.0, 0.6)


def evaluate(method: str, encoder, num_scenes: int = 16, batch: int = 8,
             offsets=OFFSETS, afa=None) -> dict:
  """``encoder`` (path or loaded checkpoint) with the toy G on held-out scenes: per yaw offset
  ``{psnr, ssim, depth_l1}`` of the inversion and of the mean latent, plus their input-view gap.

  ``method='goae'``: with ``afa`` (a file) the full GOAE; without, its stage-1 encoder alone
  (the w+ it predicts, rendered by G)."""
  import jaxinv
  from jaxinv.data import world
  from jaxinv.eval import world_views
  G = jaxinv.load_generator("toy")
  zs = np.asarray(world.sample_z(jax.random.PRNGKey(world_views.SEED), num_scenes))
  zbig = world.sample_z(jax.random.PRNGKey(world_views.SEED + 1), 1000)
  ws_avg = jnp.mean(G.mapping(zbig, world.orbit_label(np.zeros(1000))), axis=0, keepdims=True)
  sums = {k: {f"{o:+.1f}": {} for o in offsets} for k in ("inversion", "mean_latent")}
  for i in range(0, num_scenes, batch):
    z = zs[i:i + batch]
    c_in = world.orbit_label(np.zeros(len(z)))
    image = world.render(z, c_in, resolution=G.config.img_resolution)["image"]
    if method == "goae" and afa is None:
      inv = _goae_encoder_only(encoder, G, image, c_in)
    else:
      w = dict(encoder=encoder, **({"afa": afa} if afa is not None else {}))
      inv = jaxinv.invert(image, pose=c_in, method=method, weights=w)
    for o in offsets:
      c = world.orbit_label(np.full(len(z), o))
      for k, pred in (("inversion", inv.render(c)),
                      ("mean_latent", G.synthesis(jnp.repeat(ws_avg, len(z), 0), c))):
        for m, v in world_views.score_view(pred, z, c, G).items():
          sums[k][f"{o:+.1f}"][m] = sums[k][f"{o:+.1f}"].get(m, 0.0) + float(np.sum(v))
  out = {k: {o: {m: v / num_scenes for m, v in d.items()} for o, d in per.items()}
         for k, per in sums.items()}
  out["psnr_above_mean_latent_input_view"] = (out["inversion"]["+0.0"]["psnr"]
                                              - out["mean_latent"]["+0.0"]["psnr"])
  out.update(num_scenes=num_scenes, seed=world_views.SEED, input_yaw=0.0, pitch=0.0)
  return out


def _goae_encoder_only(path, G, image, c):
  """GOAE's stage-1 encoder alone: its w+ (``inversion.goae.encode``, which reads no AFA)."""
  from jaxinv.convert import goae as convert_goae
  from jaxinv.inversion import goae as gi
  from jaxinv.inversion.result import Inversion
  from jaxinv.ops.pooling import adaptive_avg_pool2d
  ecfg, variables = convert_goae.load_any(path, convert_goae.ENCODER_KIND)
  s = ecfg.swin.img_size
  ws = gi.encode(gi.GOAE(ecfg, None, variables, None), G, adaptive_avg_pool2d(image, (s, s)))
  return Inversion(G, ws, c, "goae")


def export(workdir: str, out_path: str, command: str = "", commit: str = "",
           num_scenes: int = 16, step: int | None = None, half: bool = True,
           goae_encoder: str | None = None) -> dict:
  """Writes the encoder of ``workdir`` (its checkpoint at ``step``, default the latest) as
  ``out_path`` and its ``.json`` manifest. ``half``: weights stored as float16 (half the bytes of
  the 40 MB asset budget; the held-out metrics are measured on the file as stored).

  GOAE: a stage-1 run writes the encoder, a stage-2 run the AFA, measured with the encoder file
  ``goae_encoder`` (default: ``toy_goae_encoder.npz`` beside ``out_path``)."""
  from jaxinv.train import checkpoint as ckpt
  from jaxinv.train.metrics import first_and_last_logged
  from jaxinv.train.tasks import psp_family
  config = psp_family.read_config(workdir)
  method = str(psp_family.cfg_get(config, "task", ""))
  if method not in FILES and method != "goae":
    raise ValueError(f"{workdir}: a {method!r} run; toy encoders exist for {sorted(FILES)}")
  step = int(ckpt.load_checkpoint(workdir, step)["step"])
  extra, enc = {}, None
  if method == "goae" and int(config.stage) == 2:   # checked before anything is written
    enc = goae_encoder or os.path.join(os.path.dirname(out_path), GOAE_ENCODER)
    if not os.path.isfile(enc):
      raise FileNotFoundError(f"a GOAE stage-2 run is measured with its stage-1 encoder file: no "
                              f"such file {enc} (export the stage-1 run first)")
  if method in ("triplanenet", "nerf3de", "goae"):
    import importlib
    task = importlib.import_module(f"jaxinv.train.tasks.{method}")
    task.export(workdir, out_path, config, step=step, half=half)
  else:
    psp_family.export_encoder(workdir, out_path, config, step=step, half=half)
  if enc is not None:
    metrics = evaluate(method, enc, num_scenes=num_scenes, afa=out_path)
    extra = dict(stage=2, encoder_file=os.path.basename(enc))
  else:
    metrics = evaluate(method, out_path, num_scenes=num_scenes)
    if method == "goae":
      extra = dict(stage=1)
  first, _ = first_and_last_logged(workdir)
  last = _logged_at_or_before(workdir, step)
  manifest = dict(
      name=f"toy_{method}", kind="encoder", method=method, file=os.path.basename(out_path),
      config=config.to_dict(), training_command=command, commit=commit, steps=step,
      scheduled_steps=int(psp_family.cfg_get(config, "total_steps", 0)), first_logged=first,
      last_logged=last, heldout_metrics=metrics, size_bytes=os.path.getsize(out_path),
      stored="float16" if half else "float32", **extra)
  with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
    json.dump(manifest, f, indent=1, default=float)
  return manifest


def _logged_at_or_before(workdir: str, step: int):
  """The last ``metrics.jsonl`` line of the exported checkpoint's step or earlier (a run may have
  logged past the checkpoint it was stopped after)."""
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(x) for x in f if x.strip()]
  rows = [r for r in rows if int(r.get("step", 0)) <= step]
  return rows[-1] if rows else None


def _main(argv=None):
  import argparse
  import subprocess
  import sys
  p = argparse.ArgumentParser(description="Export a toy-world encoder run to jaxinv/assets.")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True, help="e.g. jaxinv/assets/toy_psp.npz")
  p.add_argument("--command", default=None,
                 help="the training command recorded (default: configs/<task>.py:toy)")
  p.add_argument("--num_scenes", type=int, default=16)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  p.add_argument("--goae-encoder", default=None,
                 help="GOAE stage 2: the stage-1 encoder file (default: beside --out)")
  p.add_argument("--float32", action="store_true",
                 help="store float32 weights (default: float16, half the bytes)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  a = p.parse_args(argv)
  try:
    if os.path.exists(a.out) and not a.overwrite:
      raise FileExistsError(f"--out {a.out} already exists (pass --overwrite to replace it)")
    if not os.path.isdir(a.workdir):
      raise FileNotFoundError(f"--workdir: no such folder: {a.workdir}")
    if not a.out.endswith(".npz"):
      raise ValueError(f"--out: expected a .npz path, got {a.out!r}")
    from jaxinv.train.tasks import psp_family
    task = psp_family.cfg_get(psp_family.read_config(a.workdir), "task", "")
    cfg = psp_family.read_config(a.workdir)
    arg = f"stage={psp_family.cfg_get(cfg, 'stage', 1)},toy" if task == "goae" else "toy"
    command = a.command or (f"python -m jaxinv.train --config configs/{task}.py:{arg} "
                            f"--workdir {a.workdir}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    m = export(a.workdir, os.path.abspath(a.out), command=command, commit=commit,
               num_scenes=a.num_scenes, step=a.step, half=not a.float32,
               goae_encoder=a.goae_encoder)
  except (OSError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(m["heldout_metrics"], indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(_main())
