"""Decoder-only transformer (Llama/Qwen2/Gemma by config) for training and KV-cache decoding.

Parameters are a plain pytree (`init_params`), the model is pure: `Decoder(config).apply`.

Forward (training, scoring):

  model = Decoder(config)
  params = init_params(config, jax.random.key(0))
  logits, _ = model.apply({"params": params}, tokens, positions=positions, segment_ids=segment_ids)
    tokens       int32 [B, L]
    positions    int32 [B, L]  RoPE positions; default = slot index 0..L-1
    segment_ids  int32 [B, L]  0 = padding, 1.. = packed documents; default all 1. A token attends
                               to earlier-or-equal slots of the same non-zero segment.
    logits       float32 [B, L, vocab] (always float32, whatever config.dtype)

KV cache (what the sampler uses):

  cache = init_cache(config, batch_size=B, max_length=S)     # zeros, a plain dict:
    "layers"        a tuple of num_layers dicts {"k", "v": config.dtype
                    [B, num_kv_heads, S, head_dim]} (the layout the attention einsums read)
    "segment_ids"   int32 [B, S]  segment id stored at each slot; 0 = empty slot or padding
    "index"         int32 [B]     next slot to write, per row
  logits, cache = model.apply({"params": params}, tokens, positions=positions,
                              segment_ids=segment_ids, cache=cache, last_only=False)

  One call writes the L new tokens of row b at slots index[b] .. index[b]+L-1 (k, v and
  segment_ids), advances index[b] by L, and lets each new token attend to every slot s of its row
  with cache segment_ids[b, s] == its own (non-zero) segment id and s <= its own slot. Prefill
  (L > 1) and decode (L = 1) are the same call. The caller keeps index + L <= S (slots are
  written with dynamic_update_slice, which clamps rather than fails).

  Left-padded prompts: tokens [p p t0 t1 t2], segment_ids [0 0 1 1 1], positions [0 0 0 1 2]
  (e.g. positions = max(cumsum(segment_ids != 0) - 1, 0)); padded slots hold segment 0 and are
  never attended. Each decode step then passes the sampled token with segment_ids 1 and
  positions = previous position + 1, per row. Continuing a sequence later (a reflection turn)
  is another call on the same cache, L = number of new tokens. `last_only=True` returns only
  the logits of the last of the L tokens, [B, 1, vocab] (the prefill of a sampler);
  `logit_positions` int32 [B, K] returns only those positions' logits, [B, K, vocab] (a loss
  that reads few positions skips the output projection of the others).
  `repeat_cache(cache, G)` repeats every row G times (row b -> rows b*G .. b*G+G-1) to draw G
  samples from one prefill. Rows whose new chunk is shorter may pad it (anywhere) with
  segment id 0: those slots are written but never attended.

  Without a cache the layers run as one `nn.scan` over the stacked parameters (training: one
  compiled layer). With a cache they run unrolled, layer i using slice i of the same stacked
  parameters and its own cache buffers (updated in place; no stacked cache to slice and write
  back per step). Both paths call the same DecoderLayer. `unstack_layers(params)` splits the
  stacked parameters into per-layer trees once; the cache path accepts either layout, and a
  decode loop should pass the unstacked one (XLA would otherwise copy the layer slices at
  every step).

Sharding: trace calls inside `rarejax.parallel.mesh.sharding_context(mesh, rules)` (e.g.
rules.SAMPLE_RULES) so the activation constraints apply; place the cache with
`rules.logical_to_shardings(cache_logical_axes(config.num_layers), cache, mesh,
rules.SAMPLE_RULES)` (batch axis 'cache_batch' -> data x fsdp, kv heads -> tensor).

Remat: `config.remat_policy` picks what the backward pass keeps per layer; the activations
named with `checkpoint_name` are listed in CHECKPOINT_NAMES (for the 'names' policy).
"""
from collections.abc import Callable
import functools
from typing import Any

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from rarejax.model import layers
from rarejax.model.config import ModelConfig

Array = jax.Array
LayerCache = dict[str, Array]  # {"k", "v": [B, K, S, hd]}
Cache = dict[str, Any]  # see init_cache

CHECKPOINT_NAMES = ("query_proj", "key_proj", "value_proj", "attention_context",
                    "attention_out", "mlp_gate", "mlp_up", "mlp_out")

_REMAT_POLICIES: dict[str, Callable[[tuple[str, ...]], Any]] = {
    "full": lambda names: jax.checkpoint_policies.nothing_saveable,
    "dots": lambda names: jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "names": lambda names: jax.checkpoint_policies.save_only_these_names(*names),
}


@struct.dataclass
class LayerInputs:
  """Per-call inputs shared (broadcast) by every scanned layer."""
  cos: Array  # float32 [B, L, head_dim]
  sin: Array  # float32 [B, L, head_dim]
  mask: Array  # bool [B, L, S]
  cache_index: Array | None  # int32 [B] when decoding with a cache


class DecoderLayer(nn.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, layer_cache: LayerCache | None,
               inputs: LayerInputs) -> tuple[Array, LayerCache | None]:
    cfg = self.config
    h = layers.RMSNorm(cfg, name="attn_norm")(x)
    attn_out, new_cache = layers.Attention(cfg, name="attn")(
        h, inputs.cos, inputs.sin, inputs.mask, layer_cache, inputs.cache_index)
    x = x + attn_out
    x = x + layers.Mlp(cfg, name="mlp")(layers.RMSNorm(cfg, name="mlp_norm")(x))
    return layers.constrain(x, layers.BATCH_LENGTH_EMBED), new_cache


def _scanned_layers(cfg: ModelConfig) -> type[nn.Module]:
  """DecoderLayer, rematerialized per config, scanned over a leading 'layers' axis."""
  layer_cls = DecoderLayer
  if cfg.remat_policy != "none":
    policy = _REMAT_POLICIES[cfg.remat_policy](cfg.remat_save_names)
    layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=False)
  return nn.scan(layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                 in_axes=(0, nn.broadcast), length=cfg.num_layers,
                 metadata_params={nn.PARTITION_NAME: "layers"})


class Decoder(nn.Module):
  """The decoder-only language model; see the module docstring for the call contract."""
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: Array, positions: Array | None = None,
               segment_ids: Array | None = None, cache: Cache | None = None,
               last_only: bool = False,
               logit_positions: Array | None = None) -> tuple[Array, Cache | None]:
    cfg = self.config
    batch, length = tokens.shape
    if segment_ids is None:
      segment_ids = jnp.ones((batch, length), jnp.int32)
    segment_ids = segment_ids.astype(jnp.int32)
    q_slots = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    k_segments, k_slots, index = segment_ids, q_slots, None
    if cache is not None:
      index = cache["index"]
      q_slots = q_slots + index[:, None]
      k_segments = layers.write_rows(cache["segment_ids"], segment_ids, index)
      k_slots = jnp.broadcast_to(jnp.arange(k_segments.shape[1], dtype=jnp.int32),
                                 k_segments.shape)
    positions = q_slots if positions is None else positions
    cos, sin = layers.rope_tables(positions, cfg.head_dim, cfg.rope_theta)
    mask = layers.attention_mask(segment_ids, q_slots, k_segments, k_slots)

    embedding = layers.param(self, "embedding", (cfg.vocab_size, cfg.d_model), ("vocab", "embed"),
                             nn.initializers.normal(cfg.init_std), cfg)
    x = jnp.take(embedding, tokens, axis=0).astype(cfg.dtype)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(cfg.d_model**0.5, cfg.dtype)
    x = layers.constrain(x, layers.BATCH_LENGTH_EMBED)
    inputs = LayerInputs(cos=cos, sin=sin, mask=mask, cache_index=index)
    new_cache = None
    if cache is None:
      if not self.is_initializing() and isinstance(self.variables["params"]["layers"], tuple):
        raise ValueError("params from unstack_layers only run with a cache; pass the stacked "
                         "params (as init_params returns them) for a forward without one.")
      x, _ = _scanned_layers(cfg)(cfg, name="layers")(x, None, inputs)
    else:
      x, layer_caches = self._unrolled_layers(x, cache["layers"], inputs)
      new_cache = {"layers": layer_caches, "segment_ids": k_segments, "index": index + length}
    x = layers.RMSNorm(cfg, name="final_norm")(x)
    if last_only:
      x = x[:, -1:]
    elif logit_positions is not None:  # logits only where a loss reads them: [B, K, V]
      x = jnp.take_along_axis(x, logit_positions[..., None], axis=1)
    return self._logits(x, embedding), new_cache

  def _unrolled_layers(self, x: Array, caches: tuple[LayerCache, ...],
                       inputs: LayerInputs) -> tuple[Array, tuple[LayerCache, ...]]:
    """Runs layer i of the parameter stack on x [B, L, D] with its own cache, in turn.

    The cache path unrolls the layers so each one reads and writes its own [B, K, S, hd]
    buffers in place: a scan over a stacked cache slices every layer's cache out and writes it
    back each step (measured: ~20% of a small model's decode step, plus ~27% transposing).
    """
    if self.is_initializing():
      raise ValueError("Decoder.init takes no cache: initialize params with init_params, then "
                       "apply with a cache from init_cache.")
    if len(caches) != self.config.num_layers:
      raise ValueError(f"the cache has {len(caches)} layers, the model {self.config.num_layers}; "
                       "build it with init_cache(config, ...) for this config.")
    per_layer = self.variables["params"]["layers"]
    if not isinstance(per_layer, tuple):  # stacked (not yet unstack_layers'd)
      per_layer = unstack_layers({"layers": per_layer})["layers"]
    layer = DecoderLayer(self.config, parent=None)
    new_caches = []
    for layer_params, layer_cache in zip(per_layer, caches):
      x, new = layer.apply({"params": layer_params}, x, layer_cache, inputs)
      new_caches.append(new)
    return x, tuple(new_caches)

  def _logits(self, x: Array, embedding: Array) -> Array:
    """x [B, L, D] -> float32 logits [B, L, V] via the tied table or the lm_head [D, V]."""
    cfg = self.config
    if cfg.tie_embeddings:
      weight = embedding.T
    else:
      weight = layers.param(self, "lm_head", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
                            nn.initializers.normal(cfg.init_std), cfg)
    logits = layers.dense(x, weight.astype(cfg.dtype), preferred_element_type=jnp.float32)
    return layers.constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))


def _boxed_params(config: ModelConfig, rng: Array) -> dict[str, Any]:
  """Initial params wrapped in nn.LogicallyPartitioned boxes (logical axis metadata)."""
  return Decoder(config).init(rng, jnp.zeros((1, 1), jnp.int32))["params"]


def init_params(config: ModelConfig, rng: Array) -> dict[str, Any]:
  """Returns freshly initialized params as a plain pytree of arrays."""
  return nn.unbox(jax.jit(functools.partial(_boxed_params, config))(rng))


def abstract_params(config: ModelConfig) -> dict[str, Any]:
  """Returns the params pytree as jax.ShapeDtypeStruct leaves (nothing allocated)."""
  return nn.unbox(jax.eval_shape(functools.partial(_boxed_params, config), jax.random.key(0)))


def param_logical_axes(config: ModelConfig) -> dict[str, Any]:
  """Returns the params pytree with PartitionSpec leaves of logical axis names."""
  boxed = jax.eval_shape(functools.partial(_boxed_params, config), jax.random.key(0))
  return nn.get_partition_spec(boxed)


def count_params(params: Any) -> int:
  """Number of scalars in a params pytree (arrays or ShapeDtypeStructs)."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def train_step_flops(config: ModelConfig, batch_size: int, sequence_length: int,
                     loss_positions: int = 0) -> float:
  """Analytic FLOPs of one train step (forward + backward; experiments/benchmarks/README.md):
  6 per matmul parameter and token, 12 * layers * L * d_attn per token for attention, the
  output projection only at the `loss_positions` of each row when those are limited (> 0)."""
  params = count_params(abstract_params(config))
  head = config.d_model * config.vocab_size
  body = params - head * (1 if config.tie_embeddings else 2)  # the untied table does no matmul
  tokens = batch_size * sequence_length
  head_tokens = batch_size * (loss_positions or sequence_length)
  attention = 12 * config.num_layers * sequence_length * config.num_heads * config.head_dim
  return tokens * (6 * body + attention) + head_tokens * 6 * head


def unstack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """params with the stacked "layers" tree split into a tuple of per-layer trees.

  Decoder.apply with a cache accepts either layout. A decode loop should unstack once, outside
  the loop: XLA does not hoist the per-layer slices out of a while loop, so stacked params are
  copied layer by layer at every step (measured: 1.45-1.9x slower decode at batch 64). The
  cost: inside a jitted call the per-layer trees are one more copy of the layer params.
  """
  stacked = params["layers"]
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  return {**params, "layers": tuple(jax.tree.map(lambda p, i=i: p[i], stacked)
                                    for i in range(num_layers))}


def init_cache(config: ModelConfig, batch_size: int, max_length: int,
               dtype: str | None = None) -> Cache:
  """Returns an empty KV cache (see module docstring); dtype defaults to config.dtype."""
  kv_shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)
  kv_dtype = jnp.dtype(dtype or config.dtype)
  layer_caches = tuple({"k": jnp.zeros(kv_shape, kv_dtype), "v": jnp.zeros(kv_shape, kv_dtype)}
                       for _ in range(config.num_layers))
  return {"layers": layer_caches, "segment_ids": jnp.zeros((batch_size, max_length), jnp.int32),
          "index": jnp.zeros((batch_size,), jnp.int32)}


def cache_logical_axes(num_layers: int) -> dict[str, Any]:
  """Logical axis names (PartitionSpec leaves) of a cache of `num_layers` layers (init_cache)."""
  kv = jax.sharding.PartitionSpec("cache_batch", "cache_kv_heads", "cache_length", "head_dim")
  return {"layers": tuple({"k": kv, "v": kv} for _ in range(num_layers)),
          "segment_ids": jax.sharding.PartitionSpec("cache_batch", "cache_length"),
          "index": jax.sharding.PartitionSpec("cache_batch")}


def repeat_cache(cache: Cache, repeats: int) -> Cache:
  """Repeats each cache row `repeats` times (row b -> rows b*repeats .. b*repeats+repeats-1)."""
  return jax.tree.map(lambda x: jnp.repeat(x, repeats, axis=0), cache)  # rows lead every leaf
