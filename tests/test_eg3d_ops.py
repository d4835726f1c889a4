"""EG3D/StyleGAN2 ops against brute-force numpy references written from the definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.ops.bias_act import ACTIVATIONS, bias_act
from jaxinv.ops.interpolate import bilinear_matrix, resize_bilinear
from jaxinv.ops.modconv import conv2d_resample, modulated_conv2d
from jaxinv.ops.upfirdn2d import STANDARD_FILTER, setup_filter, upfirdn2d, upsample2d, downsample2d

RNG = np.random.default_rng(0)


def ref_upfirdn2d(x, f, up, down, pad, gain=1.0, flip_filter=False):
  """Literal definition in float64: zero-insert, pad/crop, convolve, decimate (NHWC)."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  u = np.zeros((b, h * up, w * up, c))
  u[:, ::up, ::up] = x
  px0, px1, py0, py1 = pad
  u = np.pad(u, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
  u = u[:, max(-py0, 0):u.shape[1] - max(-py1, 0), max(-px0, 0):u.shape[2] - max(-px1, 0)]
  f = np.asarray(f, np.float64)
  if f.ndim == 1:
    f = np.outer(f, f)
  f = f * gain
  if not flip_filter:
    f = f[::-1, ::-1]
  fh, fw = f.shape
  ho, wo = u.shape[1] - fh + 1, u.shape[2] - fw + 1
  out = np.zeros((b, ho, wo, c))
  for i in range(ho):
    for j in range(wo):
      out[:, i, j] = np.einsum("bhwc,hw->bc", u[:, i:i + fh, j:j + fw], f)
  return out[:, ::down, ::down]


def ref_conv(x, w, pad):
  """Correlation of NHWC x with HWIO w, zero padding ``pad`` (y0, y1, x0, x1), float64."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad[0], pad[1]), (pad[2], pad[3]), (0, 0)))
  kh, kw = w.shape[:2]
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum("bhwi,io->bhwo", x[:, i:i + ho, j:j + wo], w[i, j])
  return out


@pytest.mark.parametrize("up,down,pad,flip", [
    (1, 1, (1, 2, 0, -1), False), (2, 1, (2, 1, 2, 1), False), (1, 2, (1, 1, 2, 1), True),
    (3, 2, (0, 3, -1, 2), False)])
@pytest.mark.parametrize("kind", ["asym2d", "standard", "separable1d"])
def test_upfirdn2d_matches_definition(up, down, pad, flip, kind):
  x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
  f = {"asym2d": RNG.standard_normal((4, 3)).astype(np.float32), "standard": STANDARD_FILTER,
       "separable1d": setup_filter([1, 2, 1], separable=True)}[kind]
  out = np.asarray(upfirdn2d(jnp.asarray(x), f, up=up, down=down, padding=pad, gain=2.0,
                             flip_filter=flip))
  g = 2.0 if f.ndim == 2 else 2.0  # a 1-D filter gets sqrt(gain) per pass, i.e. gain overall
  ref = ref_upfirdn2d(x, f, up, down, pad, gain=g, flip_filter=flip)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("up,down,pad,flip", [
    (1, 1, (1, 2, 0, -1), False), (2, 1, (2, 1, 2, 1), False), (1, 2, (1, 1, 2, 1), True),
    (3, 2, (0, 3, -1, 2), False), (2, 3, (-1, 2, 3, 0), True)])
@pytest.mark.parametrize("kind", ["asym2d", "standard", "separable1d"])
def test_upfirdn2d_gradient_is_the_adjoint(up, down, pad, flip, kind):
  # upfirdn2d's backward pass is a hand-written adjoint upfirdn2d (taps reversed, up and down
  # swapped, its own padding): <A x, g> == <x, A^T g> with A the float64 definition, for every
  # combination of factors, crops and asymmetric filters.
  x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
  f = {"asym2d": RNG.standard_normal((4, 3)).astype(np.float32), "standard": STANDARD_FILTER,
       "separable1d": setup_filter([1, 2, 1], separable=True)}[kind]
  fn = lambda v: upfirdn2d(v, f, up=up, down=down, padding=pad, gain=2.0, flip_filter=flip)
  y, vjp = jax.vjp(fn, jnp.asarray(x))
  g = RNG.standard_normal(y.shape).astype(np.float32)
  (gx,) = vjp(jnp.asarray(g))
  assert gx.shape == x.shape
  lhs = np.sum(ref_upfirdn2d(x, f, up, down, pad, gain=2.0, flip_filter=flip) * g)
  rhs = np.sum(np.asarray(gx, np.float64) * x)
  np.testing.assert_allclose(rhs, lhs, rtol=1e-5, atol=1e-4)
  # Second order (the R1 penalty differentiates a gradient): the adjoint's adjoint is A again.
  (ggx,) = jax.vjp(lambda gg: vjp(gg)[0], jnp.asarray(g))[1](jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(ggx), np.asarray(y), atol=2e-5)


def test_up_and_downsample_shapes_and_dc_gain():
  x = jnp.ones((1, 8, 8, 2))
  up = upsample2d(x, STANDARD_FILTER)
  down = downsample2d(x, STANDARD_FILTER)
  assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
  # A constant image stays constant away from the zero-padded border.
  np.testing.assert_allclose(np.asarray(up)[:, 2:-2, 2:-2], 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(down)[:, 1:-1, 1:-1], 1.0, atol=1e-6)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act(act):
  x = RNG.standard_normal((2, 3, 3, 5)).astype(np.float32) * 3
  b = RNG.standard_normal(5).astype(np.float32)
  out = np.asarray(bias_act(jnp.asarray(x), jnp.asarray(b), act=act, gain=None, clamp=1.5))
  y = x.astype(np.float64) + b
  fns = {"linear": lambda v: v, "relu": lambda v: np.maximum(v, 0),
         "lrelu": lambda v: np.where(v >= 0, v, 0.2 * v), "tanh": np.tanh,
         "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "elu": lambda v: np.where(v > 0, v, np.expm1(v)),
         "selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v)),
         "softplus": lambda v: np.log1p(np.exp(v)), "swish": lambda v: v / (1 + np.exp(-v))}
  ref = np.clip(fns[act](y) * ACTIVATIONS[act].def_gain, -1.5, 1.5)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-6)
  assert ACTIVATIONS["lrelu"].def_gain == pytest.approx(np.sqrt(2))


@pytest.mark.parametrize("flip_weight", [True, False])
def test_conv2d_resample_up2_equals_generic_path(flip_weight):
  """The polyphase transposed-conv path == upsample (zero-insert + FIR, gain 4) then conv."""
  x = RNG.standard_normal((2, 5, 6, 3)).astype(np.float32)
  w = RNG.standard_normal((3, 3, 3, 4)).astype(np.float32)
  out = np.asarray(conv2d_resample(jnp.asarray(x), jnp.asarray(w), STANDARD_FILTER, up=2,
                                   padding=1, flip_weight=flip_weight))
  # StyleGAN2's generic fallback, from the definition: padding 1 + filter padding for up=2.
  p0, p1 = 1 + (4 + 2 - 1) // 2, 1 + (4 - 2) // 2
  u = ref_upfirdn2d(x, STANDARD_FILTER, 2, 1, (p0, p1, p0, p1), gain=4.0)
  wk = w if flip_weight else w[::-1, ::-1]
  ref = ref_conv(u, wk, (0, 0, 0, 0))
  assert out.shape == (2, 10, 12, 4) == ref.shape
  np.testing.assert_allclose(out, ref, atol=5e-5, rtol=0)


def test_conv2d_resample_plain_and_down():
  x = RNG.standard_normal((1, 8, 8, 2)).astype(np.float32)
  w = RNG.standard_normal((3, 3, 2, 3)).astype(np.float32)
  out = np.asarray(conv2d_resample(jnp.asarray(x), jnp.asarray(w), padding=1))
  np.testing.assert_allclose(out, ref_conv(x, w, (1, 1, 1, 1)), atol=2e-5)
  out = np.asarray(conv2d_resample(jnp.asarray(x), jnp.asarray(w), STANDARD_FILTER, down=2,
                                   padding=1))
  p0, p1 = 1 + (4 - 2 + 1) // 2, 1 + (4 - 2) // 2
  ref = ref_conv(ref_upfirdn2d(x, STANDARD_FILTER, 1, 1, (p0, p1, p0, p1)), w, (0, 0, 0, 0))[:, ::2, ::2]
  np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modconv_fused_equals_nonfused_and_definition(up, demodulate):
  x = RNG.standard_normal((3, 6, 6, 4)).astype(np.float32)
  w = RNG.standard_normal((3, 3, 4, 5)).astype(np.float32)
  s = RNG.standard_normal((3, 4)).astype(np.float32)
  noise = RNG.standard_normal((6 * up, 6 * up, 1)).astype(np.float32)
  kw = dict(noise=jnp.asarray(noise), up=up, padding=1, resample_filter=STANDARD_FILTER,
            demodulate=demodulate, flip_weight=(up == 1))
  a = np.asarray(modulated_conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(s), fused_modconv=False, **kw))
  b = np.asarray(modulated_conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(s), fused_modconv=True, **kw))
  np.testing.assert_allclose(a, b, atol=1e-5)
  # Definition, per sample: kernel w * s (demodulated per output channel).
  for i in range(3):
    wi = w.astype(np.float64) * s[i][None, None, :, None]
    if demodulate:
      wi = wi / np.sqrt((wi ** 2).sum(axis=(0, 1, 2)) + 1e-8)
    ref = np.asarray(conv2d_resample(jnp.asarray(x[i:i + 1]), jnp.asarray(wi.astype(np.float32)),
                                     STANDARD_FILTER, up=up, padding=1, flip_weight=(up == 1)))[0]
    np.testing.assert_allclose(a[i], ref + noise, atol=1e-5)


@pytest.mark.parametrize("n_in,n_out", [(32, 64), (13, 5), (7, 7), (64, 128), (128, 64)])
def test_antialiased_bilinear_rows_sum_to_one(n_in, n_out):
  for aa in (True, False):
    m = bilinear_matrix(n_in, n_out, aa)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
  if n_out >= n_in:  # upsampling: antialias changes nothing
    np.testing.assert_allclose(bilinear_matrix(n_in, n_out, True), bilinear_matrix(n_in, n_out, False),
                               atol=1e-6)
  if n_in == n_out:
    np.testing.assert_allclose(bilinear_matrix(n_in, n_out, True), np.eye(n_in), atol=0)


def test_resize_downscale_box_average():
  """Antialiased 2x downscale of bilinear == the 4-tap triangle [1,3,3,1]/8 average (interior)."""
  x = RNG.standard_normal((1, 16, 16, 1)).astype(np.float32)
  out = np.asarray(resize_bilinear(jnp.asarray(x), (8, 8), antialias=True))
  t = np.array([1, 3, 3, 1]) / 8.0
  i = 3  # interior output pixel: inputs 2i-1 .. 2i+2
  ref = np.einsum("h,w,hw->", t, t, x[0, 2 * i - 1:2 * i + 3, 2 * i - 1:2 * i + 3, 0])
  assert out[0, i, i, 0] == pytest.approx(ref, abs=1e-5)


def test_modconv_gradients_finite():
  x = jnp.asarray(RNG.standard_normal((2, 4, 4, 3)).astype(np.float32))
  w = jnp.asarray(RNG.standard_normal((3, 3, 3, 2)).astype(np.float32))
  s = jnp.asarray(RNG.standard_normal((2, 3)).astype(np.float32))
  g = jax.grad(lambda s: jnp.sum(modulated_conv2d(x, w, s, up=2, padding=1,
                                                  resample_filter=STANDARD_FILTER,
                                                  flip_weight=False) ** 2))(s)
  assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).sum() > 0
