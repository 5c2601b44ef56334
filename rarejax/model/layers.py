"""Building blocks of the decoder: RMSNorm, RoPE, attention mask and attention, gated MLP.

Parameters are created through `param`, which attaches logical axis names (see
rarejax.parallel.rules) so one rules table decides how every weight is sharded. Activations get
logical names through `constrain` (a no-op unless axis rules and a mesh are active).
"""
from collections.abc import Callable, Sequence
import functools
import math

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from rarejax.model.config import ModelConfig

Array = jax.Array
NEG_INF = float(jnp.finfo(jnp.float32).min)

ACTIVATION_FNS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}

# Logical names of activations (mapped to mesh axes by rarejax.parallel.rules).
BATCH_LENGTH_EMBED = ("activation_batch", "activation_length", "activation_embed")
BATCH_LENGTH_HEADS = ("activation_batch", "activation_length", "activation_heads", "head_dim")
BATCH_LENGTH_KV = ("activation_batch", "activation_length", "activation_kv_heads", "head_dim")
BATCH_LENGTH_MLP = ("activation_batch", "activation_length", "activation_mlp")


def constrain(x: Array, names: Sequence[str | None]) -> Array:
  """Applies a logical sharding constraint to an activation."""
  return nn.with_logical_constraint(x, tuple(names))


def param(module: nn.Module, name: str, shape: Sequence[int], names: Sequence[str | None],
          init: Callable[..., Array], config: ModelConfig) -> Array:
  """Creates (or fetches) a parameter in `config.param_dtype` carrying logical axis `names`."""
  return module.param(name, nn.with_logical_partitioning(init, tuple(names)), tuple(shape),
                      jnp.dtype(config.param_dtype))


class RMSNorm(nn.Module):
  """Root-mean-square norm computed in float32; output scale is `norm_offset + scale`."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [..., D] -> [..., D]
    cfg = self.config
    scale = param(self, "scale", (x.shape[-1],), ("norm",),
                  nn.initializers.constant(1.0 - cfg.norm_offset), cfg)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
    return (y * (cfg.norm_offset + scale.astype(jnp.float32))).astype(cfg.dtype)


def dense(x: Array, kernel: Array, in_dims: int = 1,
          preferred_element_type: jnp.dtype | None = None) -> Array:
  """x [..., *in] @ kernel [*in, *out] -> [..., *out], computed as one 2-D matmul.

  Flattening to [tokens, in] x [in, out] makes the backward weight gradient a dot with a single
  contracting dimension, which XLA:CPU runs on the activations as they are; an einsum over
  [B, L, ...] contracts two dimensions (B and L) and XLA inserts a transposed copy of an
  activation per weight gradient (measured: 1.6x faster MLP forward + backward on 2 cores).
  Low-precision operands (bf16, f16) multiply with float32 accumulation forward and backward
  (low_precision_matmul); the result is in `preferred_element_type`, else in x's dtype.
  """
  in_shape, out_shape = kernel.shape[:in_dims], kernel.shape[in_dims:]
  lead = x.shape[:x.ndim - in_dims]
  a, b = x.reshape(-1, math.prod(in_shape)), kernel.reshape(math.prod(in_shape), -1)
  if jnp.dtype(x.dtype).itemsize < 4 and jnp.dtype(x.dtype) == jnp.dtype(kernel.dtype):
    y = low_precision_matmul(a, b, jnp.dtype(preferred_element_type or x.dtype))
  else:
    y = jnp.matmul(a, b, preferred_element_type=preferred_element_type)
  return y.reshape(*lead, *out_shape)


def _accumulate(a: Array, b: Array, dims: tuple[int, int], dtype: jnp.dtype) -> Array:
  """Contracts a's dims[0] with b's dims[1] in float32, rounded to `dtype`."""
  return jax.lax.dot_general(a, b, (((dims[0],), (dims[1],)), ((), ())),
                             preferred_element_type=jnp.float32).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def low_precision_matmul(a: Array, b: Array, out_dtype: jnp.dtype) -> Array:
  """a [M, K] @ b [K, N] in their low-precision dtype, accumulated in float32, as `out_dtype`.

  The gradients are the same kind of dot (low-precision operands, float32 accumulation, rounded
  to the operand's dtype). Autodiff of a plain matmul would not do that: its backward dots ask
  for low-precision accumulation (XLA:CPU's slow bf16 -> bf16 path: 347 against 929 GFLOP/s on
  the AMD EPYC of experiments/benchmarks/results/matmul_dtypes.json), or, under a float32 output,
  multiply float32 cotangents with bf16 operands.
  """
  return _accumulate(a, b, (1, 0), out_dtype)


def _low_precision_matmul_fwd(a, b, out_dtype):
  return low_precision_matmul(a, b, out_dtype), (a, b)


def _low_precision_matmul_bwd(out_dtype, residuals, g):
  del out_dtype
  a, b = residuals
  g = g.astype(a.dtype)
  return _accumulate(g, b, (1, 1), a.dtype), _accumulate(a, g, (0, 0), b.dtype)


low_precision_matmul.defvjp(_low_precision_matmul_fwd, _low_precision_matmul_bwd)


def rope_tables(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
  """Returns (cos, sin), each float32 [B, L, head_dim], in Hugging Face's rotate-half layout."""
  inv_freq = 1.0 / theta**(jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, head_dim/2]
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates x [B, L, N, head_dim] by per-token angles; rotate_half pairs dim i with i + hd/2."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x.astype(jnp.float32) * cos[:, :, None] + rotated * sin[:, :, None]
  return out.astype(x.dtype)


def attention_mask(q_segments: Array, q_slots: Array, k_segments: Array,
                   k_slots: Array) -> Array:
  """Returns bool [B, Lq, Lk]: same non-zero segment and key slot <= query slot.

  Args:
    q_segments: int [B, Lq], segment id of each query (0 = padding).
    q_slots: int [B, Lq], sequence slot of each query.
    k_segments: int [B, Lk], segment id of each key (0 = padding or empty cache slot).
    k_slots: int [B, Lk], sequence slot of each key.
  """
  same = q_segments[:, :, None] == k_segments[:, None, :]
  valid = k_segments[:, None, :] != 0
  causal = k_slots[:, None, :] <= q_slots[:, :, None]
  return same & valid & causal


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """Grouped-query attention with float32 softmax.

  The einsums run on [B, K, G*L, hd] queries and [B, K, S, hd] keys/values: batch dims lead and
  each contraction has one dimension, so XLA transposes only the [.., hd] activations, never the
  [.., L, S] scores (measured on 2 CPU cores: ~10% faster forward + backward, and decode). Keys
  and values come in that layout (the KV cache stores it), so decoding transposes no cache.

  Args:
    q: [B, L, H, hd] queries.
    k: [B, K, S, hd] keys, K divides H (query head h uses kv head h // (H // K)).
    v: [B, K, S, hd] values.
    mask: bool [B, L, S]; fully masked rows give a uniform (finite) average.

  Returns:
    [B, L, H, hd] in the dtype of v.
  """
  b, length, heads, head_dim = q.shape
  kv_heads = k.shape[1]
  groups = heads // kv_heads
  q = q.reshape(b, length, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  q = q.reshape(b, kv_heads, groups * length, head_dim)  # row m = g * L + l
  scores = jnp.einsum("bkmd,bksd->bkms", q, k, preferred_element_type=jnp.float32)
  scores = scores.reshape(b, kv_heads, groups, length, -1) * head_dim**-0.5
  scores = jnp.where(mask[:, None, None], scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkms,bksd->bkmd", probs.reshape(b, kv_heads, groups * length, -1), v)
  out = out.reshape(b, kv_heads, groups, length, head_dim).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, length, heads, head_dim)


def write_rows(buffer: Array, new: Array, index: Array, axis: int = 1) -> Array:
  """Writes `new` into `buffer` along `axis` at per-row offsets index [B] (needs index+L<=S).

  Args:
    buffer: [B, ..., S, ...], S at `axis`.
    new: same shape as buffer except L at `axis`.
    index: int [B], the slot of new's first entry in each row.
  """
  return jax.vmap(lambda buf, x, i: jax.lax.dynamic_update_slice_in_dim(buf, x, i, axis - 1))(
      buffer, new.astype(buffer.dtype), index)


class Attention(nn.Module):
  """Multi-head attention with GQA, optional q/k/v bias, RoPE and an optional KV cache."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array,
               layer_cache: dict[str, Array] | None,
               cache_index: Array | None) -> tuple[Array, dict[str, Array] | None]:
    """Attends x [B, L, D]; with a layer cache {k, v: [B, K, S, hd]} writes L slots first."""
    cfg = self.config
    q = self._project(x, "q", cfg.num_heads, "heads")
    k = self._project(x, "k", cfg.num_kv_heads, "kv_heads")
    v = self._project(x, "v", cfg.num_kv_heads, "kv_heads")
    q = constrain(checkpoint_name(apply_rope(q, cos, sin), "query_proj"), BATCH_LENGTH_HEADS)
    k = constrain(checkpoint_name(apply_rope(k, cos, sin), "key_proj"), BATCH_LENGTH_KV)
    v = constrain(checkpoint_name(v, "value_proj"), BATCH_LENGTH_KV)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, L, hd]
    new_cache = None
    if layer_cache is not None:
      new_cache = {"k": write_rows(layer_cache["k"], k, cache_index, axis=2),
                   "v": write_rows(layer_cache["v"], v, cache_index, axis=2)}
      k, v = new_cache["k"].astype(cfg.dtype), new_cache["v"].astype(cfg.dtype)
    out = dot_product_attention(q, k, v, mask)
    out = constrain(checkpoint_name(out, "attention_context"), BATCH_LENGTH_HEADS)
    w_o = param(self, "o", (cfg.num_heads, cfg.head_dim, cfg.d_model),
                ("heads", "head_dim", "embed"), nn.initializers.normal(cfg.init_std), cfg)
    out = dense(out, w_o.astype(cfg.dtype), in_dims=2)
    return checkpoint_name(out, "attention_out"), new_cache

  def _project(self, x: Array, name: str, heads: int, heads_axis: str) -> Array:
    """x [B, L, D] -> [B, L, heads, hd] through kernel [D, heads, hd] (+ bias [heads, hd])."""
    cfg = self.config
    kernel = param(self, name, (cfg.d_model, heads, cfg.head_dim),
                   ("embed", heads_axis, "head_dim"), nn.initializers.normal(cfg.init_std), cfg)
    y = dense(x, kernel.astype(cfg.dtype))
    if cfg.qkv_bias:
      bias = param(self, f"{name}_bias", (heads, cfg.head_dim), (heads_axis, "head_dim"),
                   nn.initializers.zeros, cfg)
      y = y + bias.astype(cfg.dtype)
    return y


class Mlp(nn.Module):
  """Gated MLP: down(act(x @ gate) * (x @ up)) — SwiGLU (silu) or GeGLU (gelu_tanh)."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:  # [B, L, D] -> [B, L, D]
    cfg = self.config
    init = nn.initializers.normal(cfg.init_std)
    w_gate = param(self, "gate", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"), init, cfg)
    w_up = param(self, "up", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"), init, cfg)
    w_down = param(self, "down", (cfg.mlp_dim, cfg.d_model), ("mlp", "embed"), init, cfg)
    gate = checkpoint_name(dense(x, w_gate.astype(cfg.dtype)), "mlp_gate")
    up = checkpoint_name(dense(x, w_up.astype(cfg.dtype)), "mlp_up")
    hidden = constrain(ACTIVATION_FNS[cfg.mlp_activation](gate) * up, BATCH_LENGTH_MLP)
    out = dense(hidden, w_down.astype(cfg.dtype))
    return checkpoint_name(out, "mlp_out")
