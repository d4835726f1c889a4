"""``jaxinv.ops.conv.conv2d``: XLA's forward, a banded kernel gradient on CPU, no unneeded work,
and gradients that stay on XLA:CPU's fast convolution inside ``lax.scan`` loops."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.ops import conv as conv_op

_DN = ("NHWC", "HWIO", "NHWC")


def _lax(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_DN,
                                      precision=jax.lax.Precision.HIGHEST)


def _data(b, h, ci, co, k, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal((b, h, h, ci), np.float32)),
          jnp.asarray(rng.standard_normal((k, k, ci, co), np.float32) * 0.1))


# (b, h, ci, co, k, stride, padding): all but the last are above the banding threshold.
CASES = [(1, 64, 64, 64, 3, 1, ((1, 1), (1, 1))),
         (2, 100, 64, 64, 3, 2, ((1, 1), (1, 1))),     # 50 output rows: a short last band
         (2, 96, 64, 64, 4, 2, ((2, 1), (0, 1))),
         (4, 64, 128, 128, 1, 1, ((0, 0), (0, 0))),
         (2, 8, 8, 8, 3, 1, ((1, 1), (1, 1))),
         # Below the threshold (one canonical convolution per gradient): stride 2, odd size,
         # stride 3 with asymmetric padding, negative padding (a crop).
         (2, 9, 8, 8, 3, 2, ((1, 1), (1, 1))),
         (1, 11, 8, 6, 3, 3, ((1, 0), (2, 1))),
         (1, 12, 6, 8, 3, 1, ((-1, 1), (1, -1)))]


@pytest.mark.parametrize("case", CASES)
def test_forward_is_xla_and_gradients_match(case):
  b, h, ci, co, k, s, pad = case
  x, w = _data(b, h, ci, co, k)
  np.testing.assert_array_equal(np.asarray(conv_op.conv2d(x, w, s, pad)),
                                np.asarray(_lax(x, w, s, pad)))
  ours = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(conv_op.conv2d(x, w, s, pad))), (0, 1)))
  ref = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(_lax(x, w, s, pad))), (0, 1)))
  for a, r in zip(ours(x, w), ref(x, w)):
    scale = float(jnp.max(jnp.abs(r)))
    assert float(jnp.max(jnp.abs(a - r))) <= 2e-5 * scale
  # One argument differentiated at a time gives the same cotangent.
  gw = jax.grad(lambda w: jnp.sum(jnp.sin(conv_op.conv2d(x, w, s, pad))))(w)
  np.testing.assert_allclose(np.asarray(gw), np.asarray(ref(x, w)[1]), rtol=0,
                             atol=2e-5 * float(jnp.max(jnp.abs(gw))))


def _n_convs(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().as_text().count(" convolution(")


def test_kernel_gradient_is_banded_on_cpu_and_skipped_when_frozen():
  x, w = _data(1, 64, 64, 64, 3)
  f = lambda x, w: jnp.sum(conv_op.conv2d(x, w, 1, 1) ** 2)
  n_w = _n_convs(jax.grad(f, 1), x, w)        # forward + 8 bands of 8 output rows
  n_x = _n_convs(jax.grad(f, 0), x, w)        # forward + input gradient only
  n_both = _n_convs(jax.grad(f, (0, 1)), x, w)
  if jax.default_backend() == "cpu":
    assert n_w == 1 + 64 // conv_op._band_rows(1, 64, 64) and n_w > 2
  assert n_x == 2
  assert n_both == n_w + 1
  # Below the threshold: XLA's single kernel-gradient convolution.
  xs, ws = _data(1, 8, 8, 8, 3)
  assert _n_convs(jax.grad(f, 1), xs, ws) == 2


def test_vmap_and_padding_forms():
  x, w = _data(3, 16, 8, 8, 3)
  per = jax.vmap(lambda xi: conv_op.conv2d(xi[None], w, 1, 1)[0])(x)
  np.testing.assert_allclose(np.asarray(per), np.asarray(conv_op.conv2d(x, w, 1, 1)), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(conv_op.conv2d(x, w, 1, 1)),
                                np.asarray(conv_op.conv2d(x, w, 1, ((1, 1), (1, 1)))))


def _labels(fn, *args) -> set:
  return set(re.findall(r"dim_labels=([^,]*)", jax.jit(fn).lower(*args).compile().as_text()))


def test_gradients_inside_scan_stay_canonical():
  """XLA:CPU rewrites a convolution into its fast (Eigen) layout only in the entry computation;
  inside a ``while`` body JAX's own gradient convolutions (permuted dimension numbers) run on a
  generic loop, 30-300x slower. Ours are emitted canonical: every convolution of a scanned
  gradient step, modulated (vmapped per-sample kernels) included, is NHWC x HWIO -> NHWC."""
  x, w = _data(2, 64, 32, 32, 3)
  styles = jnp.linspace(0.5, 1.5, 2 * 32).reshape(2, 1, 1, 32, 1)

  def loss(w, conv):
    y = conv(x, w, 2, 1)                                   # strided, above the threshold
    y = jax.vmap(lambda yi, si: conv(yi[None], w * si, 1, 1)[0])(y, styles)  # per-sample
    return jnp.sum(jnp.sin(conv(y, w[:1, :1], 1, 0)))      # 1x1, below the threshold

  def scanned(conv):
    step = lambda w, _: (w - 1e-3 * jax.grad(loss)(w, conv), None)
    return lambda w: jax.lax.scan(step, w, None, length=2)[0]

  lax_conv = lambda x, w, s, p: _lax(x, w, s, ((p, p), (p, p)))
  if jax.default_backend() == "cpu":
    assert _labels(scanned(conv_op.conv2d), w) == {"b01f_01io->b01f"}
    assert _labels(scanned(lax_conv), w) != {"b01f_01io->b01f"}  # what this guards against
  ours, ref = jax.jit(scanned(conv_op.conv2d))(w), jax.jit(scanned(lax_conv))(w)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=0,
                             atol=2e-5 * float(jnp.max(jnp.abs(ref - w))))


def test_conv1x1_is_the_channel_dot_with_the_same_gradients():
  # The 1x1 path (ToRGB, skip convolutions) has a hand-written backward pass: the kernel gradient
  # contracts the pixel axes in place. Values equal the dot, gradients equal autodiff's, either
  # argument alone gives the same cotangent, and nothing is computed for a frozen argument.
  x, w = _data(2, 24, 8, 96, 1, seed=3)
  w = w[0, 0]
  dot = lambda x, w: jax.lax.dot_general(x, w, (((3,), (0,)), ((), ())),
                                         precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_array_equal(np.asarray(conv_op.conv1x1(x, w)), np.asarray(dot(x, w)))
  f = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  ours = jax.grad(f(conv_op.conv1x1), (0, 1))(x, w)
  ref = jax.grad(f(dot), (0, 1))(x, w)
  for a, r in zip(ours, ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.grad(f(conv_op.conv1x1), 1)(x, w)),
                             np.asarray(ref[1]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.grad(f(conv_op.conv1x1), 0)(x, w)),
                             np.asarray(ref[0]), rtol=1e-5, atol=1e-5)
  # Only the input differentiated: one dot in the backward pass (no kernel gradient).
  text = jax.jit(jax.grad(f(conv_op.conv1x1), 0)).lower(x, w).compile().as_text()
  assert text.count(" dot(") + text.count("convolution(") <= 2
  # Second order (R1-style penalties) still works through the hand-written pass.
  hv = jax.grad(lambda w: jnp.sum(jax.grad(f(conv_op.conv1x1), 0)(x, w) ** 2))(w)
  assert np.isfinite(np.asarray(hv)).all()
