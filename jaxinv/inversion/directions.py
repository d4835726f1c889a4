"""Latent editing directions: InterfaceGAN, PREIM3D's inversion-manifold variant, GANSpace.

* **InterfaceGAN** (Shen et al.): a linear SVM separating latents by a binary attribute; the
  direction is the unit normal of its hyperplane (pointing to the positive class). The SVM is
  LinearSVC's primal problem (L2-regularised squared hinge,
  ``0.5 |n|^2 + C sum max(0, 1 - y (n.x + b))^2``) solved with L-BFGS in one compiled loop
  (``optax.lbfgs``); no scikit-learn needed. InterfaceGAN's recipe of keeping only the most
  confident ``ratio`` of each class when the labels are scores is ``select_extremes``.
* **PREIM3D** (its section 3.4): the same SVM fitted on the codes of *inverted* images (the
  inversion manifold W+_inv), so the direction matches where an encoder puts real photos;
  ``distortion`` is its ``d(dw) = dw_inv - dw_origin`` (Eq. 8).
* **GANSpace** (Harkonen et al.): PCA of ``w = mapping(z, c)`` for sampled z; components are unit
  directions, ``scale`` their standard deviation (edits are usually given in sigmas).

Directions are ``EditDirection`` values (``vector [512]`` for every layer, or ``[num_ws, 512]``)
saved as ``.npz`` (``save`` / ``load``); ``Inversion.edit`` takes them directly.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv import checks

KINDS = ("interfacegan", "preim3d", "ganspace", "custom")


@dataclasses.dataclass(frozen=True)
class EditDirection:
  """A latent direction.

  Attributes:
    vector: ``[512]`` (added to every w) or ``[num_ws, 512]``; unit norm for fitted directions.
    kind: one of ``KINDS``. name: e.g. the attribute. scale: a natural step (GANSpace: the
    component's standard deviation; 1 otherwise). bias: the SVM offset (``n.x + b = 0``).
  """
  vector: np.ndarray
  kind: str = "custom"
  name: str = ""
  scale: float = 1.0
  bias: Optional[float] = None

  def __post_init__(self):
    v = np.asarray(self.vector, np.float32)
    if v.ndim not in (1, 2) or v.size == 0:
      raise ValueError(f"vector: expected [w_dim] or [num_ws, w_dim], got shape {v.shape}")
    if not np.all(np.isfinite(v)):
      raise ValueError("vector: contains NaN or inf")
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    object.__setattr__(self, "vector", v)

  def save(self, path) -> str:
    """Writes ``path`` (``.npz``): the vector plus a JSON header (kind, name, scale, bias)."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
      raise ValueError(f"path: direction files end in .npz, got {path!r}")
    meta = {"format": "jaxinv-direction", "version": 1, "kind": self.kind, "name": self.name,
            "scale": float(self.scale), "bias": None if self.bias is None else float(self.bias)}
    np.savez(path, vector=self.vector, meta=np.asarray(json.dumps(meta)))
    return path


def load(path) -> EditDirection:
  """Reads a direction: a ``.npz`` from :meth:`EditDirection.save`, or a bare ``.npy`` vector
  (``[512]``, ``[1, 512]`` or ``[num_ws, 512]``, e.g. InterfaceGAN's boundary files)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"direction: no such file: {path}")
  if path.endswith(".npy"):
    v = np.load(path, allow_pickle=False)
    if v.ndim == 2 and v.shape[0] == 1:
      v = v[0]
    return EditDirection(v, "custom", os.path.splitext(os.path.basename(path))[0])
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(str(f["meta"]))
      vector = f["vector"]
  except (KeyError, ValueError, OSError) as e:
    raise ValueError(f"direction: {path} is not a jaxinv direction file (.npz from "
                     f"EditDirection.save, or a .npy vector): {e}") from None
  if meta.get("format") != "jaxinv-direction":
    raise ValueError(f"direction: {path} is not a jaxinv direction file")
  return EditDirection(vector, meta["kind"], meta.get("name", ""), meta.get("scale", 1.0),
                       meta.get("bias"))


# ------------------------------------------------------------------------------- linear SVM

@jax.jit
def _svm(x, y, c_reg, steps_arr):
  """LinearSVC primal (squared hinge) by L-BFGS; ``steps_arr``'s length is the step count."""
  d = x.shape[1]
  opt = optax.lbfgs()

  def f(p):
    w, b = p[:d], p[d]
    margin = 1.0 - y * (x @ w + b)
    return 0.5 * jnp.sum(w * w) + c_reg * jnp.sum(jnp.square(jnp.maximum(margin, 0.0)))

  vg = optax.value_and_grad_from_state(f)

  def step(carry, _):
    p, state = carry
    value, g = vg(p, state=state)
    updates, state = opt.update(g, state, p, value=value, grad=g, value_fn=f)
    return (optax.apply_updates(p, updates), state), value

  p0 = jnp.zeros((d + 1,), jnp.float32)
  (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), steps_arr)
  return p


def fit_svm(latents, labels, *, C: float = 1.0, steps: int = 200):
  """Linear SVM on ``latents [N, D]`` with binary ``labels [N]`` (bool or 0/1).

  Returns ``(unit normal [D] towards the positive class, bias of the unit-normal hyperplane)``.
  """
  x = np.asarray(latents, np.float32)
  y = np.asarray(labels)
  checks.check_rank(x, "latents", 2, "[N, D]")
  if y.shape != (x.shape[0],):
    raise ValueError(f"labels: expected shape ({x.shape[0]},) (one per latent), got {y.shape}")
  vals = set(np.unique(y).tolist())
  if not vals <= {0, 1, False, True}:
    raise ValueError(f"labels: expected binary labels (bool or 0/1), got values {sorted(vals)[:5]}")
  if len(vals) < 2:
    raise ValueError("labels: both classes are needed to fit a boundary")
  checks.check_finite(x, "latents")
  # Centre and scale for conditioning; the hyperplane is mapped back afterwards.
  mu, sd = x.mean(0), x.std() + 1e-8
  xs = (x - mu) / sd
  p = np.asarray(_svm(jnp.asarray(xs), jnp.asarray(np.where(y.astype(bool), 1.0, -1.0), jnp.float32),
                      jnp.float32(C), jnp.zeros((int(steps),))))
  w, b = p[:-1] / sd, p[-1] - float(p[:-1] @ mu) / sd
  norm = float(np.linalg.norm(w))
  if not norm > 0:
    raise ValueError("the SVM found no separating direction (all weights zero); check the labels")
  return (w / norm).astype(np.float32), float(b / norm)


def select_extremes(scores, ratio: float = 0.02):
  """InterfaceGAN's sample selection: indices of the top and bottom ``ratio`` of ``scores`` and
  their labels ``(indices [M], labels [M] bool)``."""
  s = np.asarray(scores, np.float64).reshape(-1)
  if not 0 < ratio <= 0.5:
    raise ValueError(f"ratio must lie in (0, 0.5], got {ratio}")
  k = max(1, int(round(ratio * s.size)))
  order = np.argsort(s)
  idx = np.concatenate([order[-k:], order[:k]])
  return idx, np.concatenate([np.ones(k, bool), np.zeros(k, bool)])


def _codes_2d(latents, name):
  a = np.asarray(latents, np.float32)
  if a.ndim == 2:
    return a, a.shape[1:]
  if a.ndim == 3:
    return a.reshape(a.shape[0], -1), a.shape[1:]
  raise ValueError(f"{name}: expected [N, 512] (W) or [N, num_ws, 512] (W+), got shape {a.shape}")


def interfacegan(latents, labels, *, name: str = "", C: float = 1.0, steps: int = 200,
                 kind: str = "interfacegan") -> EditDirection:
  """InterfaceGAN direction from ``latents [N, 512]`` (or ``[N, num_ws, 512]``) and labels."""
  x, shape = _codes_2d(latents, "latents")
  n, b = fit_svm(x, labels, C=C, steps=steps)
  return EditDirection(n.reshape(shape), kind, name, 1.0, b)


def preim3d(inverted, labels, *, name: str = "", per_layer: bool = False, C: float = 1.0,
            steps: int = 200) -> EditDirection:
  """PREIM3D's direction on the inversion manifold.

  Args:
    inverted: the codes of inverted, labelled images: ``[N, num_ws, 512]``, or a batched
      ``Inversion`` (its ``ws``).
    per_layer: fit in W+ (flattened, ``[num_ws, 512]`` result); default fits the layer mean in W
      (one ``[512]`` direction for every layer).
  """
  ws = np.asarray(getattr(inverted, "ws", inverted), np.float32)
  if ws.ndim != 3:
    raise ValueError(f"inverted: expected codes [N, num_ws, 512] or an Inversion, got {ws.shape}")
  x = ws if per_layer else ws.mean(axis=1)
  return interfacegan(x, labels, name=name, C=C, steps=steps, kind="preim3d")


def distortion(d_inversion, d_original) -> np.ndarray:
  """PREIM3D Eq. 8: ``dw_inv - dw_origin`` (vectors or ``EditDirection``s)."""
  a = np.asarray(getattr(d_inversion, "vector", d_inversion), np.float32)
  b = np.asarray(getattr(d_original, "vector", d_original), np.float32)
  if a.shape != b.shape:
    raise ValueError(f"directions have different shapes {a.shape} and {b.shape}")
  return a - b


# ------------------------------------------------------------------------------------ GANSpace

def pca_directions(w, num_components: int = 10):
  """Principal directions of ``w [N, D]``: ``(components [k, D] unit rows, stdevs [k])``."""
  w = np.asarray(w, np.float64)
  checks.check_rank(w, "w", 2, "[N, D]")
  k = int(num_components)
  if not 1 <= k <= min(w.shape):
    raise ValueError(f"num_components must lie in [1, {min(w.shape)}], got {num_components}")
  x = w - w.mean(0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  comps = vt[:k]
  # Sign convention: the largest-magnitude coefficient of each component is positive.
  signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
  return (comps * signs[:, None]).astype(np.float32), (s[:k] / np.sqrt(max(len(w) - 1, 1))).astype(np.float32)


def ganspace(G, key, *, num_samples: int = 10000, num_components: int = 10, c=None,
             truncation_psi: float = 1.0) -> list[EditDirection]:
  """GANSpace: PCA of ``G.mapping(z, c)[:, 0]`` for ``num_samples`` z ~ N(0, I).

  ``c``: the pose condition (``[25]``; default the generator's frontal look-at camera).
  """
  from jaxinv.inversion.result import orbit_label
  c = orbit_label(G, 0.0, 0.0)[0] if c is None else np.asarray(c, np.float32).reshape(25)
  ws = []
  chunk = min(int(num_samples), 2048)
  keys = jax.random.split(key, -(-int(num_samples) // chunk))
  for k in keys:
    z = jax.random.normal(k, (chunk, G.z_dim))
    ws.append(np.asarray(G.mapping(z, jnp.broadcast_to(jnp.asarray(c), (chunk, 25)),
                                   truncation_psi=truncation_psi)[:, 0]))
  comps, sd = pca_directions(np.concatenate(ws)[:int(num_samples)], num_components)
  return [EditDirection(v, "ganspace", f"pc{i}", float(s)) for i, (v, s) in enumerate(zip(comps, sd))]
