"""GOAE inversion on an EG3D generator: encoder -> w+, AFA-refined 32x32 features, mixed tri-plane.

The pipeline (``invert``), as GOAE's ``Net.forward``:

1. ``ws = E(x) + w_avg`` (``x`` at the encoder's resolution, 256 for the release). The encoder
   has no pose input; it is trained to land in the *canonical* latent space (codes that the
   mapping network gives under the frontal pose condition ``C_FRONT``, see ``canonical_latents``).
2. The synthesis network runs up to its 32x32 block, giving the feature map ``F`` (``x`` of
   block ``b32``) and the partial tri-plane image; the rest of the network and the renderer give
   the w-only reconstruction ``planes_w`` / ``image_w`` from the input camera ``c``.
3. ``AFA(x_hr, image_w, F) -> F*`` (FiLM with per-location gamma, beta computed from the
   residual ``image_w - x_hr``); the synthesis continues from ``F*`` to give ``planes_f`` and the
   refined rendering.
4. **Occlusion-aware mixed tri-plane** (``mix_triplanes``): the surface points of the refined
   rendering (``ray_origin + depth * ray_direction`` from the input view) are splatted onto the
   texels of the XY plane (plane 0) they project to; the hit map is Gaussian-blurred (9 taps),
   thresholded at 0.35 and blurred again, giving a soft mask ``m``. Plane 0 becomes
   ``m * planes_f + (1 - m) * planes_w``; planes 1 and 2 (XZ, ZX) are taken from ``planes_f``.
   So refined features are used where the input view saw the surface (in the XY-plane
   footprint), and the generator's own features elsewhere (regions the input image never
   showed, where ``F*`` was not constrained). The mask carries no gradient.
5. ``render`` draws a mixed tri-plane from any camera; ``edit`` applies GOAE's rule
   ``F*_edit = F* + F(w_edit) - F(w)`` (the refinement computed for ``w`` transfers to the edit).

Blur sigmas: upstream uses ``torchvision.transforms.GaussianBlur(9, sigma=(1, 2))``, which draws
each sigma uniformly from [1, 2] on every call. Here ``key`` reproduces that draw; without a key
both sigmas are 1.5 (the middle of the range), so results are deterministic.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.losses import goae as goae_losses
from jaxinv.models.eg3d import PLANE_CHANNELS, EG3DGenerator
from jaxinv.models.encoders.goae import AFA, AFAConfig, GOAEncoder, GOAEncoderConfig
from jaxinv.nn.synthesis import SynthesisBlock, SynthesisNetwork, block_channels
from jaxinv.ops.pooling import adaptive_avg_pool2d
from jaxinv.render.rays import rays_from_label

# GOAE's mask constants (``Net.mix_fusion``).
BLUR_TAPS = 9
BLUR_SIGMA_RANGE = (1.0, 2.0)
MASK_THRESHOLD = 0.35


def gaussian_kernel1d(sigma, taps: int = BLUR_TAPS) -> jnp.ndarray:
  """torchvision's kernel: ``exp(-x^2 / (2 sigma^2))`` on ``x = -(taps-1)/2 .. (taps-1)/2``, normalised."""
  half = (taps - 1) * 0.5
  x = jnp.linspace(-half, half, taps, dtype=jnp.float32)
  pdf = jnp.exp(-0.5 * jnp.square(x / jnp.asarray(sigma, jnp.float32)))
  return pdf / jnp.sum(pdf)


def gaussian_blur(mask: jnp.ndarray, sigma, taps: int = BLUR_TAPS) -> jnp.ndarray:
  """Separable Gaussian blur with reflect padding (``torchvision`` ``gaussian_blur``).

  Args:
    mask: ``[B, H, W]``.
    sigma: scalar or ``[B]`` (one sigma per sample).
  Returns:
    ``[B, H, W]``.
  """
  b = mask.shape[0]
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
  k = jax.vmap(lambda s: gaussian_kernel1d(s, taps))(sigma)  # [B, taps]
  p = taps // 2
  x = jnp.pad(mask, ((0, 0), (p, p), (p, p)), mode="reflect")
  h, w = mask.shape[1:]
  # Rows, then columns: the outer-product kernel of torchvision factorises exactly.
  rows = sum(k[:, i, None, None] * x[:, i:i + h, :] for i in range(taps))
  return sum(k[:, i, None, None] * rows[:, :, i:i + w] for i in range(taps))


def surface_texels(ray_origins, ray_directions, depth, resolution: int, box_warp: float = 1.0):
  """Hard hit map of the XY plane: 1 on every texel that a rendered surface point falls in.

  Args:
    ray_origins, ray_directions: ``[B, M, 3]`` rays of the input view.
    depth: ``[B, M, 1]`` (or ``[B, M]``) rendered depth along each ray.
    resolution: tri-plane side ``R``.
    box_warp: side of the cube the planes span.
  Returns:
    ``[B, R, R]`` float32 in {0, 1}; row = y texel, column = x texel (the plane-0 layout of
    ``jaxinv.render.triplane``: grid-x reads world x, grid-y world y).

  Texel of a point: ``floor(clip((v / box_warp + 1/2) * R, 0, R - 1))``, the upstream formula
  (``(v + 0.5) * 256`` for box_warp 1, R 256); points outside the cube land on the border texels,
  as upstream.
  """
  b, m, _ = ray_origins.shape
  depth = jnp.reshape(depth, (b, m, 1))
  xyz = ray_origins + depth * ray_directions
  idx = jnp.clip((xyz[..., :2] / box_warp + 0.5) * resolution, 0, resolution - 1)
  idx = jnp.floor(idx).astype(jnp.int32)
  col, row = idx[..., 0], idx[..., 1]
  bidx = jnp.broadcast_to(jnp.arange(b)[:, None], (b, m))
  return jnp.zeros((b, resolution, resolution), jnp.float32).at[bidx, row, col].set(1.0)


def blur_sigmas(key, batch: int) -> jnp.ndarray:
  """Per-sample sigmas of the two blurs, ``[2, B]``: uniform in [1, 2] (key) like upstream."""
  return jax.random.uniform(key, (2, batch), minval=BLUR_SIGMA_RANGE[0],
                            maxval=BLUR_SIGMA_RANGE[1])


def visibility_mask(ray_origins, ray_directions, depth, resolution: int, box_warp: float = 1.0,
                    *, key=None, sigmas=None) -> jnp.ndarray:
  """GOAE's soft visibility mask on the XY plane, ``[B, R, R]`` in [0, 1] (no gradient).

  Args:
    ray_origins, ray_directions, depth: the input view's rays and rendered depth (see
      ``surface_texels``).
    resolution, box_warp: tri-plane side and cube size.
    key: draws the two blur sigmas uniformly in [1, 2] per sample, as upstream.
    sigmas: explicit ``(sigma_1, sigma_2)`` (scalars or ``[B]``); default 1.5 each.
  """
  b = ray_origins.shape[0]
  if sigmas is None:
    sigmas = blur_sigmas(key, b) if key is not None else (1.5, 1.5)
  hit = surface_texels(ray_origins, ray_directions, jax.lax.stop_gradient(depth), resolution,
                       box_warp)
  soft = gaussian_blur(hit, sigmas[0])
  solid = (soft > MASK_THRESHOLD).astype(jnp.float32)
  return jax.lax.stop_gradient(gaussian_blur(solid, sigmas[1]))


def mix_triplanes(planes_f, planes_w, mask):
  """Occlusion-aware mix: plane 0 blended by ``mask``, planes 1-2 from ``planes_f``.

  Args:
    planes_f: ``[B, 3, R, R, C]`` refined (AFA) tri-plane.
    planes_w: ``[B, 3, R, R, C]`` w-only tri-plane.
    mask: ``[B, R, R]`` visibility of the XY-plane texels.
  Returns:
    ``[B, 3, R, R, C]``.
  """
  checks.check_rank(planes_f, "planes_f", 5, "[B, 3, H, W, C]")
  checks.check_shape(planes_w, "planes_w", planes_f.shape, "[B, 3, H, W, C]")
  checks.check_shape(mask, "mask", planes_f.shape[:1] + planes_f.shape[2:4], "[B, H, W]")
  m = mask[..., None]
  plane0 = m * planes_f[:, 0] + (1.0 - m) * planes_w[:, 0]
  return jnp.concatenate([plane0[:, None], planes_f[:, 1:]], axis=1)


# ------------------------------------------------------------------ the split synthesis network
# GOAE's generator hook: the StyleGAN2 backbone runs up to its 32x32 block, the feature map of
# that block is replaced, and the remaining blocks continue from it. These helpers rebuild the
# backbone's blocks exactly as ``SynthesisNetwork`` does and apply them to its parameter subtrees.

SPLIT_RESOLUTION = 32


def _blocks(net: SynthesisNetwork):
  """``(resolution, block, first w index)`` of every synthesis block, in order."""
  ch = block_channels(net.img_resolution, net.channel_base, net.channel_max)
  w_idx = 0
  for res in net.block_resolutions:
    block = SynthesisBlock(ch[res // 2] if res > 4 else 0, ch[res], w_dim=net.w_dim,
                           resolution=res, img_channels=net.img_channels,
                           is_last=(res == net.img_resolution), conv_clamp=net.conv_clamp,
                           fused_modconv=net.fused_modconv)
    yield res, block, w_idx
    w_idx += block.num_conv


def _run_blocks(G: EG3DGenerator, ws, x, img, lo: int, hi: int):
  net = G.config.synthesis_module()
  params = G.params["params"]["backbone"]["synthesis"]
  for res, block, w0 in _blocks(net):
    if lo < res <= hi:
      n = block.num_conv + block.num_torgb
      # GOAE runs the generator with noise_mode='const'.
      x, img = block.apply({"params": params[f"b{res}"]}, x, img, ws[:, w0:w0 + n], "const")
  return x, img


def backbone_head(G: EG3DGenerator, ws, split: int = SPLIT_RESOLUTION):
  """Backbone blocks up to ``split``: ``(feature_map [B, s, s, C], partial planes image [B, s, s, 96])``.

  Upstream ``synthesis(..., train_forward_1=True)``: ``feature_map`` is the ``x`` output of block
  ``b32`` (512 channels for the FFHQ generator), the second value the skip-connection image.
  """
  return _run_blocks(G, ws, None, None, 0, split)


def backbone_tail(G: EG3DGenerator, ws, feature_map, partial, split: int = SPLIT_RESOLUTION):
  """Remaining blocks from a (possibly replaced) ``feature_map``: planes ``[B, 3, 256, 256, 32]``."""
  _, img = _run_blocks(G, ws, feature_map, partial, split, 1 << 30)
  b, h, w, _ = img.shape
  return jnp.transpose(img.reshape(b, h, w, 3, PLANE_CHANNELS), (0, 3, 1, 2, 4))


def render_planes(G: EG3DGenerator, planes, ws, c, *, key=None, neural_rendering_resolution=None):
  """Renders given tri-planes (pure, traceable): ``G.synthesis`` with the backbone replaced.

  Args:
    planes: ``[B, 3, 256, 256, 32]``; ws: ``[B, num_ws, w_dim]`` (styles of the superresolution);
    c: ``[B, 25]``; key: renderer draws (None: deterministic).
  Returns:
    dict(image, image_raw, image_depth, feature_image, weights_sum, ray_origins, ray_directions);
    the rays are returned too because the visibility mask needs them.
  """
  r = int(neural_rendering_resolution or G.config.neural_rendering_resolution)
  out = dict(G.render_planes(planes, ws, c, key=key, neural_rendering_resolution=r))
  out["ray_origins"], out["ray_directions"] = rays_from_label(c, r)
  return out


# ------------------------------------------------------------------------------- the model


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class GOAE:
  """GOAE's trainable parts: configs (static) + variables (pytree leaves).

  Attributes:
    encoder: ``{'params': ...}`` of ``GOAEncoder(encoder_config)``.
    afa: ``{'params': ..., 'batch_stats': ...}`` of ``AFA(afa_config)``.
  """
  encoder_config: GOAEncoderConfig
  afa_config: AFAConfig
  encoder: Any
  afa: Any

  def tree_flatten(self):
    return (self.encoder, self.afa), (self.encoder_config, self.afa_config)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*aux, *children)


def load_goae(encoder_path, afa_path) -> GOAE:
  """GOAE from its released files (``encoder_FFHQ.pt``, ``afa_FFHQ.pt``) or converted ``.npz``."""
  from jaxinv.convert import goae as convert_goae  # deferred: file readers only when loading
  ecfg, enc = convert_goae.load_any(encoder_path, convert_goae.ENCODER_KIND)
  acfg, afa = convert_goae.load_any(afa_path, convert_goae.AFA_KIND)
  return GOAE(ecfg, acfg, enc, afa)


def init_goae(key, encoder_config: GOAEncoderConfig = GOAEncoderConfig(),
              afa_config: AFAConfig = AFAConfig(), image_size: int = 512,
              feature_size: int = SPLIT_RESOLUTION) -> GOAE:
  """Randomly initialised GOAE (for training, or tests with small configs)."""
  k1, k2 = jax.random.split(key)
  s = encoder_config.swin.img_size
  # Jitted: an eager init of the full-size modules takes minutes.
  enc = jax.jit(GOAEncoder(encoder_config).init)(k1, jnp.zeros((1, s, s, 3)))
  img = jnp.zeros((1, image_size, image_size, 3))
  fm = jnp.zeros((1, feature_size, feature_size, afa_config.feat_dim))
  afa = jax.jit(AFA(afa_config).init)(k2, img, img, fm)
  return GOAE(encoder_config, afa_config, enc, afa)


def encode(goae: GOAE, G: EG3DGenerator, x):
  """``ws = E(x) + w_avg``: x ``[B, S, S, 3]`` (S = encoder size) -> ``[B, num_ws, w_dim]``.

  GOAE has no pose input: the encoder's w+ stands in for ``mapping(z, c)`` and ``w_avg`` is the
  generator's tracked mean (EG3D's mapping averages over its conditioning poses).
  """
  ws = GOAEncoder(goae.encoder_config).apply(goae.encoder, x)["ws"]
  return ws + G.params["params"]["backbone"]["mapping"]["w_avg"]


# GOAE's canonical camera (``Net.c_front``): frontal, radius 2.7, focal 4.2647. The paper's
# canonical latent space W_c holds the codes the mapping network gives under this pose condition.
C_FRONT = np.array([1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                    4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], np.float32)


def canonical_latents(G: EG3DGenerator, z, truncation_psi: float = 1.0):
  """Codes of the canonical latent space: ``mapping(z, c_front)``, ``[B, num_ws, w_dim]``.

  These are the "real" samples of GOAE's canonical latent discriminator (training); the encoder's
  ``w+`` is pulled towards this space, whatever the pose of the input image.
  """
  c = jnp.broadcast_to(jnp.asarray(C_FRONT), (np.shape(z)[0], 25))
  return G.mapping(z, c, truncation_psi=truncation_psi)


def average_background_depth(G: EG3DGenerator, key, num_samples: int, batch_size: int = 8, *,
                             mask_threshold: float = 0.5, truncation_psi: float = 1.0,
                             neural_rendering_resolution=None, return_opacity: bool = False):
  """GOAE's ``D_avg``: the mean depth of the background pixels of canonical front-view samples.

  For ``ceil(num_samples / batch_size)`` batches (the paper: 100k samples): ``z ~ N(0, I)``,
  ``ws = mapping(z, C_FRONT)``, rendered from ``C_FRONT`` with the key's renderer draws; the
  background mask is ``losses.goae.background_mask(weights_sum, mask_threshold)`` (the
  generator's own opacity standing in for the paper's face parser). Returns the pixel-weighted
  mean ``sum(D * M) / sum(M)`` over all samples, a float32 scalar on device (one jitted scan, no
  host transfer per batch); NaN when no sample has a background pixel. ``return_opacity=True``
  returns ``(D_avg, opacity)`` with ``opacity [R, R, 1]`` the per-pixel mean ``weights_sum`` of
  the same samples (where the average canonical head is).
  """
  n = -(-int(num_samples) // int(batch_size))
  nrr = neural_rendering_resolution

  @jax.jit
  def run(G, key):
    c = jnp.broadcast_to(jnp.asarray(C_FRONT), (batch_size, 25))

    def body(acc, k):
      kz, kr = jax.random.split(k)
      ws = canonical_latents(G, jax.random.normal(kz, (batch_size, G.z_dim)), truncation_psi)
      out = G.synthesis(ws, c, key=kr, neural_rendering_resolution=nrr)
      mask = goae_losses.background_mask(out["weights_sum"], mask_threshold)
      s, m = goae_losses.background_depth_sums(out["image_depth"], mask)
      return (acc[0] + s, acc[1] + m, acc[2] + jnp.sum(out["weights_sum"], axis=0)), None

    zero = jnp.zeros((), jnp.float32)
    shape = jax.eval_shape(lambda k: G.synthesis(
        canonical_latents(G, jnp.zeros((batch_size, G.z_dim)), truncation_psi), c, key=k,
        neural_rendering_resolution=nrr)["weights_sum"], key).shape
    opa0 = jnp.zeros(shape[1:], jnp.float32)
    (s, m, opa), _ = jax.lax.scan(body, (zero, zero, opa0), jax.random.split(key, n))
    return s / m, opa / (n * batch_size)

  d, opacity = run(G, key)
  return (d, opacity) if return_opacity else d


def _keys(key, n):
  return [None] * n if key is None else list(jax.random.split(key, n))


def forward(goae: GOAE, G: EG3DGenerator, image, c, x=None, *, key=None, mask_sigmas=None,
            neural_rendering_resolution=None) -> dict:
  """GOAE's ``Net.forward`` (pure, differentiable in ``goae`` and ``G``; see the module docstring).

  Args:
    image: ``[B, IMG, IMG, 3]`` in [-1, 1] at the generator's output resolution (AFA input).
    c: ``[B, 25]`` the input view's camera.
    x: encoder input ``[B, S, S, 3]``; default: ``image`` area-downsampled to S.
    key: renderer draws and blur sigmas (None: deterministic, sigmas 1.5).
    mask_sigmas: explicit blur sigmas (overrides the key's draw).
  Returns:
    dict(ws, image (refined rendering), image_w (w-only rendering), image_depth, planes (mixed),
    planes_f, planes_w, mask [B, R, R], feature_map, feature_map_adain, gamma, beta).
  """
  if x is None:
    x = adaptive_avg_pool2d(image, goae.encoder_config.swin.img_size)
  k_w, k_f, k_mask = _keys(key, 3)
  nrr = neural_rendering_resolution
  ws = encode(goae, G, x)
  feature_map, partial = backbone_head(G, ws)
  planes_w = backbone_tail(G, ws, feature_map, partial)
  out_w = render_planes(G, planes_w, ws, c, key=k_w, neural_rendering_resolution=nrr)
  afa = AFA(goae.afa_config).apply(goae.afa, image, out_w["image"], feature_map)
  planes_f = backbone_tail(G, ws, afa["feature_map_adain"], partial)
  out_f = render_planes(G, planes_f, ws, c, key=k_f, neural_rendering_resolution=nrr)
  mask = visibility_mask(out_f["ray_origins"], out_f["ray_directions"], out_f["image_depth"],
                         planes_f.shape[2], G.config.render_options.box_warp, key=k_mask,
                         sigmas=mask_sigmas)
  return dict(ws=ws, image=out_f["image"], image_raw=out_f["image_raw"],
              image_depth=out_f["image_depth"], image_w=out_w["image"],
              planes=mix_triplanes(planes_f, planes_w, mask), planes_f=planes_f,
              planes_w=planes_w, mask=mask, feature_map=feature_map, **afa)


def edit_forward(goae: GOAE, G: EG3DGenerator, ws, ws_edit, image, c, *, key=None,
                 mask_sigmas=None, neural_rendering_resolution=None) -> dict:
  """GOAE's ``Net.edit``: ``F*_edit = F*(w) + F(w_edit) - F(w)``, mixed with the edit's planes.

  Upstream runs the tail of the backbone on ``F*_edit`` with the *reconstruction's* ``ws`` but
  the edit's partial planes image, mixes with ``planes(w_edit)``, and renders the result with the
  edit's ``ws`` (superresolution styles). Returns the final rendering's dict plus ``planes``
  (mixed), ``mask``, ``feature_map_adain`` (``F*_edit``).
  """
  k_rec, k_edit, k_f, k_mask, k_out = _keys(key, 5)
  nrr = neural_rendering_resolution
  fm_rec, partial_rec = backbone_head(G, ws)
  rec_w = render_planes(G, backbone_tail(G, ws, fm_rec, partial_rec), ws, c, key=k_rec,
                        neural_rendering_resolution=nrr)
  fm_edit, partial_edit = backbone_head(G, ws_edit)
  planes_w_edit = backbone_tail(G, ws_edit, fm_edit, partial_edit)
  afa = AFA(goae.afa_config).apply(goae.afa, image, rec_w["image"], fm_rec)
  fm_star = afa["feature_map_adain"] + (fm_edit - fm_rec)
  planes_f = backbone_tail(G, ws, fm_star, partial_edit)
  out_f = render_planes(G, planes_f, ws, c, key=k_f, neural_rendering_resolution=nrr)
  mask = visibility_mask(out_f["ray_origins"], out_f["ray_directions"], out_f["image_depth"],
                         planes_f.shape[2], G.config.render_options.box_warp, key=k_mask,
                         sigmas=mask_sigmas)
  planes = mix_triplanes(planes_f, planes_w_edit, mask)
  out = render_planes(G, planes, ws_edit, c, key=k_out, neural_rendering_resolution=nrr)
  out.update(planes=planes, mask=mask, feature_map_adain=fm_star)
  return out


# ------------------------------------------------------------------ checked, compiled entry points

_forward_jit = jax.jit(forward, static_argnames=("neural_rendering_resolution",))
_edit_jit = jax.jit(edit_forward, static_argnames=("neural_rendering_resolution",))
_render_jit = jax.jit(render_planes, static_argnames=("neural_rendering_resolution",))
_encode_jit = jax.jit(encode)


def _check_inputs(goae: GOAE, G: EG3DGenerator, image, c, x=None):
  size = G.config.img_resolution
  checks.check_image(image, "image", size=(size, size))
  b = np.shape(image)[0]
  checks.check_shape(c, "c", (b, 25), "camera labels [B, 25]")
  checks.check_floating(c, "c")
  s = goae.encoder_config.swin.img_size
  if x is not None:
    checks.check_image(x, "x", size=(s, s))
    checks.check_shape(x, "x", (b, s, s, 3), "[B, S, S, 3]")
  elif size % s:
    raise ValueError(f"image: size {size} is not a multiple of the encoder size {s}; pass the "
                     f"encoder input x [B, {s}, {s}, 3] explicitly")
  if goae.afa_config.feat_dim != _feature_channels(G):
    raise ValueError(f"AFA works on {goae.afa_config.feat_dim}-channel feature maps, but this "
                     f"generator's {SPLIT_RESOLUTION}x{SPLIT_RESOLUTION} block has "
                     f"{_feature_channels(G)} channels")
  if goae.encoder_config.num_ws != G.num_ws or goae.encoder_config.w_dim != G.config.w_dim:
    raise ValueError(f"the encoder predicts ws [B, {goae.encoder_config.num_ws}, "
                     f"{goae.encoder_config.w_dim}], the generator takes [B, {G.num_ws}, "
                     f"{G.config.w_dim}]")


def _feature_channels(G: EG3DGenerator) -> int:
  cfg = G.config
  net = cfg.synthesis_module()
  return block_channels(net.img_resolution, net.channel_base, net.channel_max)[SPLIT_RESOLUTION]


def invert(goae: GOAE, G: EG3DGenerator, image, c, *, x=None, key=None, mask_sigmas=None,
           neural_rendering_resolution=None) -> dict:
  """Checked, jit-compiled :func:`forward` (one compile per configuration)."""
  _check_inputs(goae, G, image, c, x)
  return _forward_jit(goae, G, jnp.asarray(image, jnp.float32), jnp.asarray(c, jnp.float32),
                      None if x is None else jnp.asarray(x, jnp.float32), key=key,
                      mask_sigmas=mask_sigmas,
                      neural_rendering_resolution=neural_rendering_resolution)


def render(G: EG3DGenerator, ws, planes, c, *, key=None, neural_rendering_resolution=None) -> dict:
  """Renders a (mixed) tri-plane from any camera ``c [B, 25]`` (upstream ``forward_triplane``)."""
  checks.check_rank(planes, "planes", 5, "[B, 3, H, W, C]")
  b = np.shape(planes)[0]
  checks.check_shape(ws, "ws", (b, G.num_ws, G.config.w_dim), "[B, num_ws, w_dim]")
  checks.check_shape(c, "c", (b, 25), "camera labels [B, 25]")
  return _render_jit(G, jnp.asarray(planes, jnp.float32), jnp.asarray(ws, jnp.float32),
                     jnp.asarray(c, jnp.float32), key=key,
                     neural_rendering_resolution=neural_rendering_resolution)


def edit(goae: GOAE, G: EG3DGenerator, ws, ws_edit, image, c, *, key=None, mask_sigmas=None,
         neural_rendering_resolution=None) -> dict:
  """Checked, jit-compiled :func:`edit_forward`."""
  _check_inputs(goae, G, image, c)
  b = np.shape(image)[0]
  for name, w in (("ws", ws), ("ws_edit", ws_edit)):
    checks.check_shape(w, name, (b, G.num_ws, G.config.w_dim), "[B, num_ws, w_dim]")
  return _edit_jit(goae, G, jnp.asarray(ws, jnp.float32), jnp.asarray(ws_edit, jnp.float32),
                   jnp.asarray(image, jnp.float32), jnp.asarray(c, jnp.float32), key=key,
                   mask_sigmas=mask_sigmas,
                   neural_rendering_resolution=neural_rendering_resolution)
