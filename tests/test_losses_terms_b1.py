"""Hand-computed values of the TriPlaneNet / NeRF-3DE loss terms (triplet, uncertainty-weighted
symmetry, the smooth-L1 branch loss)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.losses import symmetry, triplet
from jaxinv.losses.triplanenet import BranchWeights, branch_loss, pixel_loss


def _arr(*rows):
  return jnp.asarray(rows, jnp.float32)


# ------------------------------------------------------------------------------ triplet (eq. 6)

def test_triplet_at_and_beyond_the_margin():
  a, p, n = _arr([0.0, 0.0]), _arr([3.0, 4.0]), _arr([6.0, 8.0])   # d_pos = 5, d_neg = 10
  assert float(triplet.triplet_loss(a, p, n, margin=1.0)) == 0.0     # beyond the margin
  assert float(triplet.triplet_loss(a, p, n, margin=5.0)) == 0.0     # exactly at it
  np.testing.assert_allclose(float(triplet.triplet_loss(a, p, n, margin=6.0)), 1.0, rtol=1e-6)
  # Batch mean, and w+ codes [B, N, D] use the norm over every entry.
  a2 = jnp.stack([a[0], a[0]])
  p2 = jnp.stack([p[0], n[0]])            # d_pos 5 and 10
  n2 = jnp.stack([n[0], p[0]])            # d_neg 10 and 5
  np.testing.assert_allclose(float(triplet.triplet_loss(a2, p2, n2, margin=2.0)), (0 + 7) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(
      float(triplet.triplet_loss(a2[:, None], p2[:, None], n2[:, None], margin=2.0)), 3.5, rtol=1e-6)


def test_triplet_normalized_and_gradient():
  a, p, n = _arr([3.0, 4.0]), _arr([3.0, 4.0]), _arr([-4.0, 3.0])
  # Normalised: a = p = (0.6, 0.8), n = (-0.8, 0.6): d_pos = 0, d_neg = sqrt(1.96 + 0.04) = sqrt 2.
  np.testing.assert_allclose(float(triplet.triplet_loss(a, p, n, 2.0, normalize=True)),
                             2.0 - np.sqrt(2.0), rtol=1e-6)
  g = jax.grad(lambda a: triplet.triplet_loss(a, p, n, 20.0))(a)   # d_pos = 0: finite gradient
  assert np.all(np.isfinite(np.asarray(g)))
  with pytest.raises(ValueError, match="same shape"):
    triplet.triplet_loss(a, p, n[:, :1], 1.0)


def test_batch_triplet_hard_and_all():
  # Two identities x two views, 1-d codes w = 0, 1 | 3, 7.
  w = _arr([0.0], [1.0], [3.0], [7.0])
  ids = jnp.asarray([0, 0, 1, 1])
  # hard: anchors' (farthest pos, closest neg) = (1, 3), (1, 2), (4, 2), (4, 6); m = 1:
  # hinge(-1) + hinge(0) + hinge(3) + hinge(-1) = 3 -> mean 0.75.
  np.testing.assert_allclose(float(triplet.batch_triplet_loss(w, ids, 1.0, "hard")), 0.75, rtol=1e-6)
  # all 8 triples: anchor 2 gives 1+4-3 = 2 and 1+4-2 = 3, every other triple <= 0 -> 5 / 8.
  np.testing.assert_allclose(float(triplet.batch_triplet_loss(w, ids, 1.0, "all")), 0.625, rtol=1e-6)
  d = np.asarray(triplet.pairwise_distances(w))
  np.testing.assert_allclose(d[0], [0, 1, 3, 7], atol=1e-6)


def test_latent_l1_broadcasts_the_base_code():
  w = _arr([1.0, -1.0])                                    # [1, 2]
  target = jnp.asarray([[[0.0, 0.0], [2.0, 1.0]]])         # [1, 2 rows, 2]
  # |1|+|-1| + |1-2|+|-1-1| = 1 + 1 + 1 + 2 = 5 over 4 entries.
  np.testing.assert_allclose(float(triplet.latent_l1(w, target)), 1.25, rtol=1e-6)


# ----------------------------------------------------------------- symmetry with uncertainty

def _sym_case():
  x_m = jnp.asarray([1.0, 3.0]).reshape(1, 1, 2, 1)
  y_m = jnp.zeros_like(x_m)
  sigma = jnp.asarray([1.0, 3.0]).reshape(1, 1, 2, 1)
  return x_m, y_m, sigma


def test_symmetry_prior_with_uncertainty_by_hand():
  x_m, y_m, sigma = _sym_case()                    # squared errors 1 and 9
  # eq. 15: mean(1/1, 9/3) = 2.
  np.testing.assert_allclose(float(symmetry.symmetry_loss(x_m, y_m, sigma)), 2.0, rtol=1e-6)
  # code, EPS = 1: mean(1/2, 9/4) = 1.375.
  np.testing.assert_allclose(float(symmetry.symmetry_loss(x_m, y_m, sigma, eps=1.0)), 1.375,
                             rtol=1e-6)
  # code, normalised: (1/2 + 9/4) / (1/2 + 1/4) = 11/3 (a weighted mean of the errors).
  np.testing.assert_allclose(
      float(symmetry.symmetry_loss(x_m, y_m, sigma, eps=1.0, normalize=True)), 11 / 3, rtol=1e-6)
  # sigma = 1 everywhere: the normalised form is the plain mean of the errors.
  np.testing.assert_allclose(
      float(symmetry.symmetry_loss(x_m, y_m, jnp.ones_like(sigma), eps=1.0, normalize=True)), 5.0,
      rtol=1e-6)
  # Per-sample normalisation: two samples with different maps are normalised separately.
  x2 = jnp.concatenate([x_m, x_m]); s2 = jnp.concatenate([sigma, jnp.ones_like(sigma)])
  np.testing.assert_allclose(
      float(symmetry.symmetry_loss(x2, jnp.zeros_like(x2), s2, eps=1.0, normalize=True)),
      (11 / 3 + 5.0) / 2, rtol=1e-6)


def test_symmetry_eps_one_is_finite_at_zero_uncertainty():
  x_m, y_m, _ = _sym_case()
  g = jax.grad(lambda y: symmetry.symmetry_loss(x_m, y, jnp.zeros((1, 1, 2, 1)), eps=1.0))(y_m)
  np.testing.assert_allclose(np.asarray(g).ravel(), [-2 * 1 / 2, -2 * 3 / 2], rtol=1e-6)


# ------------------------------------------------------------------ the smooth-L1 branch loss

def _branch_case():
  x = jnp.asarray([0.5, 3.0]).reshape(1, 1, 2, 1)
  y = jnp.zeros_like(x)
  x_m = symmetry.mirror(x)                                  # [3, 0.5]
  sigma = jnp.asarray([1.0, 3.0]).reshape(1, 1, 2, 1)
  return x, y, x_m, jnp.zeros_like(x_m), sigma


def test_smooth_l1_branch_loss_by_hand():
  x, y, x_m, y_m, sigma = _branch_case()
  # smooth-L1 (beta 1): 0.5 -> 0.125, 3 -> 2.5; mean 1.3125.
  np.testing.assert_allclose(float(pixel_loss(x, y, "smooth_l1")), 1.3125, rtol=1e-6)
  np.testing.assert_allclose(float(pixel_loss(x, y, "l2")), (0.25 + 9) / 2, rtol=1e-6)
  l1 = lambda a, b: jnp.mean(jnp.abs(a - b))                # stand-in perceptual term: 1.75
  w = BranchWeights(lpips=0.8, lpips_mirror=0.8)
  total, terms = branch_loss(x, y, x_m, y_m, sigma, weights=w, pixel="smooth_l1", lpips_fn=l1,
                             symmetry_eps=1.0)
  # symmetry: mean(2.5 / (1 + 1), 0.125 / (3 + 1)) = 0.640625.
  np.testing.assert_allclose(float(terms["symmetry"]), 0.640625, rtol=1e-6)
  np.testing.assert_allclose(float(terms["lpips"]), 1.75, rtol=1e-6)
  expected = 1.3125 + 0.8 * 1.75 + 0.1 * (0.640625 + 0.8 * 1.75)
  np.testing.assert_allclose(float(total), expected, rtol=1e-6)
  assert set(terms) == {"pixel", "lpips", "symmetry", "lpips_mirror"}   # no id_fn: no id terms


def test_branch_loss_without_mirror_and_id():
  x, y, _, _, _ = _branch_case()
  idf = lambda a, b: jnp.float32(0.5)
  total, terms = branch_loss(x, y, None, None, weights=BranchWeights(mirror=0.0), id_fn=idf)
  np.testing.assert_allclose(float(total), (0.25 + 9) / 2 + 0.1 * 0.5, rtol=1e-6)
  assert set(terms) == {"pixel", "id"}
  with pytest.raises(ValueError, match="x_m"):
    branch_loss(x, y, None, None)
