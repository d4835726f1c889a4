"""FID Inception-v3 against pytorch-fid, the converter, and FID / KID against independent forms.

The parity reference (``tests/data/inception/reference.npz``) is pytorch-fid's own ``InceptionV3``
on seeded random weights (the real file cannot be downloaded here), recorded by
``tests/data/inception/record.py``; this test draws the same weights and inputs without torch.
"""
import pathlib

import jax
import numpy as np
import pytest
import scipy.linalg

from jaxinv.convert import common
from jaxinv.convert import inception as convert
from jaxinv.eval import metrics
from jaxinv.models import inception

DATA = pathlib.Path(__file__).parent / "data" / "inception"


def _recorder():
  # record.py imports torch at the top; take its two pure-numpy helpers without importing it.
  src = (DATA / "record.py").read_text()
  scope = {"np": np}
  for name in ("weights", "inputs"):
    start = src.index(f"def {name}(")
    end = src.index("\n\n\n", start)
    exec(src[start:end], scope)
  return scope["weights"], scope["inputs"]


@pytest.fixture(scope="module")
def reference():
  ref = np.load(DATA / "reference.npz")
  keys = [str(k) for k in ref["keys"]]
  shapes = [tuple(int(d) for d in str(s).split(",") if d) for s in ref["shapes"]]
  weights, inputs = _recorder()
  return ref, weights(keys, shapes), inputs()


@pytest.fixture(scope="module")
def params(reference):
  return convert.from_state_dict(reference[1])


def test_features_match_pytorch_fid(reference, params):
  ref, _, (small, full) = reference
  to_nhwc = lambda x: np.transpose(x, (0, 2, 3, 1)) * 2 - 1   # [0, 1] NCHW -> [-1, 1] NHWC
  got_small = np.asarray(inception.features_jit(params, to_nhwc(small)))   # resized to 299
  got_full = np.asarray(inception.features_jit(params, to_nhwc(full)))
  for got, want in ((got_small, ref["features_small"]), (got_full, ref["features_full"])):
    assert got.shape == want.shape == (len(want), 2048)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-6 * scale)   # measured: 4.6e-7 of the largest feature


def test_converter_maps_every_tensor_and_refuses_a_wrong_file(reference, tmp_path):
  sd = dict(reference[1])
  assert "fc.weight" in sd   # ignored on purpose: the classifier is not part of the features
  p = convert.from_state_dict(sd)
  assert set(p) == {l[0] for l in inception.layers()}
  with pytest.raises(ValueError, match="Mixed_7c.branch_pool.conv.weight"):
    convert.from_state_dict({k: v for k, v in sd.items() if k != "Mixed_7c.branch_pool.conv.weight"})
  with pytest.raises(ValueError, match="not mapped"):
    convert.from_state_dict({**sd, "extra.weight": np.zeros(3, np.float32)})
  bad = dict(sd)
  bad["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
  with pytest.raises(ValueError, match="shape"):
    convert.from_state_dict(bad)
  # native round trip through the file format
  out = tmp_path / "inception.npz"
  common.save_native(out, convert.NATIVE_KIND, {"features": 2048}, p)
  back = convert.load(out)
  np.testing.assert_array_equal(back["Mixed_6e.branch7x7_2"]["kernel"],
                                p["Mixed_6e.branch7x7_2"]["kernel"])
  with pytest.raises(ValueError, match="fid_inception"):
    common.save_native(tmp_path / "other.npz", "arcface", {}, {"a": np.zeros(2)})
    convert.load(tmp_path / "other.npz")


def test_fid_matches_scipy_and_a_hand_computed_case():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((300, 16))
  b = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16)) * 0.3 + 0.2
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  want = (np.sum((a.mean(0) - b.mean(0)) ** 2)
          + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
  assert metrics.fid(a, b) == pytest.approx(want, rel=1e-8)
  # Diagonal Gaussians: sum (mu1 - mu2)^2 + sum (sigma1 - sigma2)^2.
  m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
  assert metrics.frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(
      1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2)
  assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-8)
  with pytest.raises(ValueError, match="at least 2"):
    metrics.fid(a[:1], b)


def test_kid_is_the_unbiased_polynomial_mmd():
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((40, 8)), rng.standard_normal((30, 8)) + 0.5
  # One subset of 30 samples: the unbiased MMD^2 estimate, written out term by term.
  m = 30
  k = lambda u, v: (u @ v / 8 + 1) ** 3
  got = metrics.kid(a, b, num_subsets=1)
  # the subsets are drawn from one generator: a first, then b (StyleGAN-ADA's order)
  rng0 = np.random.default_rng(0)
  xi, yi = rng0.choice(40, m, replace=False), rng0.choice(30, m, replace=False)
  x, y = a[xi], b[yi]
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
  assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
  assert metrics.kid(a, b) > 0.05 > abs(metrics.kid(a[:20], a[20:]))
  with pytest.raises(ValueError, match="NaN"):
    metrics.kid(np.full((3, 8), np.nan), b)


def test_features_are_batch_independent_and_check_their_input():
  p = inception.init_params(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 32, 32, 3), minval=-1, maxval=1)
  full = np.asarray(inception.features_jit(p, x))
  one = np.asarray(inception.features_jit(p, x[1:2]))
  np.testing.assert_allclose(one[0], full[1], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="images"):
    inception.features(p, x[..., :1])
