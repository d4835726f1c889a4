"""Editing directions: InterfaceGAN's SVM recovers a known normal, PREIM3D's variant on inverted
codes, GANSpace PCA, file round trips and errors."""
import numpy as np
import pytest

import jax

from jaxinv.inversion import directions as dirs


def _separable(n=600, d=64, seed=0):
  rng = np.random.default_rng(seed)
  normal = rng.standard_normal(d)
  normal /= np.linalg.norm(normal)
  x = rng.standard_normal((n, d)) * 2.0 + 0.5
  s = (x - 0.5) @ normal
  keep = np.abs(s) > 0.3  # a margin: strictly separable
  return x[keep].astype(np.float32), s[keep] > 0, normal


def test_interfacegan_recovers_the_true_normal(tmp_path):
  x, y, normal = _separable()
  d = dirs.interfacegan(x, y, name="smile")
  assert d.vector.shape == (64,) and abs(np.linalg.norm(d.vector) - 1) < 1e-5
  assert float(d.vector @ normal) > 0.95
  # The hyperplane separates the training data.
  assert np.mean((x @ d.vector + d.bias > 0) == y) > 0.99
  back = dirs.load(d.save(tmp_path / "smile.npz"))
  np.testing.assert_array_equal(back.vector, d.vector)
  assert (back.kind, back.name, back.bias) == ("interfacegan", "smile", d.bias)
  np.save(tmp_path / "raw.npy", d.vector[None])
  assert dirs.load(tmp_path / "raw.npy").vector.shape == (64,)


def test_preim3d_direction_on_inverted_codes():
  x, y, normal = _separable(d=32, seed=1)
  rng = np.random.default_rng(2)
  # W+ codes whose layer mean carries the attribute (per-layer jitter averages out).
  ws = x[:, None, :] + 0.05 * rng.standard_normal((len(x), 4, 32)).astype(np.float32)
  d = dirs.preim3d(ws, y)
  assert d.kind == "preim3d" and d.vector.shape == (32,) and float(d.vector @ normal) > 0.9
  dp = dirs.preim3d(ws, y, per_layer=True)
  assert dp.vector.shape == (4, 32)
  np.testing.assert_allclose(dirs.distortion(d, d), 0)
  idx, lab = dirs.select_extremes(np.arange(100.0), 0.1)
  assert set(idx[lab]) == set(range(90, 100)) and set(idx[~lab]) == set(range(10))


def test_pca_and_ganspace():
  rng = np.random.default_rng(3)
  axis = np.zeros(16)
  axis[5] = 1
  w = rng.standard_normal((500, 16)) * 0.1 + rng.standard_normal((500, 1)) * 3 * axis
  comps, sd = dirs.pca_directions(w, 3)
  assert abs(comps[0, 5]) > 0.99 and sd[0] > 2.5 > 0.2 > sd[1]
  from _invert_helpers import setup
  G, _, _ = setup()
  out = dirs.ganspace(G, jax.random.PRNGKey(0), num_samples=300, num_components=4)
  assert len(out) == 4 and out[0].vector.shape == (512,) and out[0].scale >= out[1].scale
  gram = np.stack([d.vector for d in out]) @ np.stack([d.vector for d in out]).T
  np.testing.assert_allclose(gram, np.eye(4), atol=1e-4)


def test_direction_errors(tmp_path):
  x, y, _ = _separable(n=50, d=8)
  with pytest.raises(ValueError, match="labels: expected binary"):
    dirs.fit_svm(x, np.arange(len(x)))
  with pytest.raises(ValueError, match="both classes"):
    dirs.fit_svm(x, np.ones(len(x), bool))
  with pytest.raises(ValueError, match="labels: expected shape"):
    dirs.fit_svm(x, y[:-1])
  with pytest.raises(ValueError, match="path: direction files end in .npz"):
    dirs.EditDirection(np.ones(512)).save(tmp_path / "d.txt")
  with pytest.raises(FileNotFoundError, match="direction"):
    dirs.load(tmp_path / "none.npz")
  np.savez(tmp_path / "other.npz", a=np.ones(3))
  with pytest.raises(ValueError, match="not a jaxinv direction file"):
    dirs.load(tmp_path / "other.npz")
  with pytest.raises(ValueError, match="kind"):
    dirs.EditDirection(np.ones(512), kind="magic")
