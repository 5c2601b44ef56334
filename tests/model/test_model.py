"""Decoder model: config validation, presets and gin files, packing masks, dtypes, remat, cache."""
import functools

import gin
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

from rarejax.model import layers, transformer
from rarejax.model.config import ModelConfig, preset
from tests.paths import GIN_CONFIGS

GIN_DIR = GIN_CONFIGS / "models"
TOKENS = jnp.asarray(np.random.default_rng(0).integers(1, 256, size=(2, 10)), jnp.int32)


@pytest.fixture(scope="module")
def tiny():
  config = preset("tiny_qwen2")
  return config, transformer.init_params(config, jax.random.key(0))


@functools.partial(jax.jit, static_argnums=0)
def _apply(config, params, tokens, positions=None, segment_ids=None, cache=None):
  return transformer.Decoder(config).apply({"params": params}, tokens, positions=positions,
                                           segment_ids=segment_ids, cache=cache)


def _logits(config, params, tokens, **kwargs):
  return _apply(config, params, tokens, **kwargs)[0]


@functools.partial(jax.jit, static_argnums=0)
@functools.partial(jax.grad, argnums=1)
def _grad_of_square_logits(config, params):
  return jnp.mean(_apply(config, params, TOKENS)[0]**2)


def test_bad_configs_name_the_fields():
  with pytest.raises(ValueError, match="d_model=100 is not divisible by num_heads=3"):
    ModelConfig(vocab_size=8, d_model=100, num_layers=1, num_heads=3, num_kv_heads=1,
                mlp_dim=8)
  with pytest.raises(ValueError, match="num_heads=4 is not divisible by num_kv_heads=3"):
    preset("tiny_llama", num_kv_heads=3)
  with pytest.raises(ValueError, match="mlp_activation='relu'"):
    preset("tiny_llama", mlp_activation="relu")
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    preset("huge")


def test_preset_sizes():
  sizes = {name: transformer.count_params(transformer.abstract_params(preset(name)))
           for name in ("small_7m", "small_30m", "qwen2_1_5b", "gemma_2b")}
  assert 7e6 < sizes["small_7m"] < 8e6
  assert 25e6 < sizes["small_30m"] < 32e6
  assert 1.7e9 < sizes["qwen2_1_5b"] < 1.8e9  # DeepSeek-R1-Distill-Qwen-1.5B: 1.78B
  assert 2.4e9 < sizes["gemma_2b"] < 2.6e9  # Gemma 2B: 2.51B


@pytest.mark.parametrize("name,preset_name,overrides", [
    ("tiny", "tiny_llama", {}), ("quickstart", "small_7m", {}), ("small_30m", "small_30m", {}),
    ("qwen2_1_5b", "qwen2_1_5b", {"dtype": "bfloat16", "remat_policy": "full"})])
def test_gin_model_files_match_presets(name, preset_name, overrides):
  """Shapes in one place: each models/*.gin is its preset; the vocabulary is the experiment's
  (VOCAB_SIZE, stages/data.gin) except in an imported checkpoint's file, which sets its own."""
  expected = preset(preset_name, **overrides)
  path = GIN_DIR / f"{name}.gin"
  own_vocab = "ModelConfig.vocab_size" in path.read_text()
  vocab = {} if own_vocab else {"vocab_size": expected.vocab_size}
  gin.clear_config()
  try:
    gin.parse_config_file(str(path))
    assert ModelConfig(**vocab) == expected  # pylint: disable=missing-kwoa
  finally:
    gin.clear_config()


def test_params_carry_logical_axes_and_layer_axis(tiny):
  config, params = tiny
  axes = transformer.param_logical_axes(config)
  assert tuple(axes["layers"]["attn"]["q"]) == ("layers", "embed", "heads", "head_dim")
  assert tuple(axes["embedding"]) == ("vocab", "embed")
  shapes = jax.tree.map(lambda x: x.shape, params)
  assert shapes["layers"]["attn"]["q"] == (2, 64, 4, 16)
  assert shapes["layers"]["attn"]["k_bias"] == (2, 2, 16)
  assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
                            ) == jax.tree.structure(params)


def test_packed_segments_equal_separate_sequences(tiny):
  config, params = tiny
  first, second = TOKENS[:1, :6], TOKENS[1:, :4]
  packed = jnp.concatenate([first, second, jnp.zeros((1, 2), jnp.int32)], axis=1)
  segments = jnp.asarray([[1] * 6 + [2] * 4 + [0] * 2])
  positions = jnp.asarray([list(range(6)) + list(range(4)) + [0, 0]])
  logits = _logits(config, params, packed, positions=positions, segment_ids=segments)
  np.testing.assert_allclose(logits[0, :6], _logits(config, params, first)[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 6:10], _logits(config, params, second)[0], atol=1e-5)


def test_bf16_compute_keeps_float32_params_and_logits(tiny):
  config, params = tiny
  bf16 = preset("tiny_qwen2", dtype="bfloat16")
  logits = _logits(bf16, params, TOKENS)
  assert logits.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  reference = _logits(config, params, TOKENS)
  assert float(jnp.abs(logits - reference).max()) < 0.05 * float(jnp.abs(reference).max())


def _dot_generals(jaxpr):
  """Every dot_general of a jaxpr, sub-jaxprs (custom_vjp, pjit, remat) included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, (jax_core.Jaxpr, jax_core.ClosedJaxpr)):
          yield from _dot_generals(getattr(sub, "jaxpr", sub))


@pytest.mark.parametrize("out_dtype", [None, jnp.float32])
def test_bf16_dense_accumulates_in_float32_forward_and_backward(out_dtype):
  x = jax.random.normal(jax.random.key(0), (64, 48)).astype(jnp.bfloat16)
  w = (0.1 * jax.random.normal(jax.random.key(1), (48, 32))).astype(jnp.bfloat16)
  loss = lambda x, w: jnp.sum(layers.dense(x, w, preferred_element_type=out_dtype)
                              .astype(jnp.float32) ** 2)
  grad = jax.grad(loss, argnums=(0, 1))
  dots = list(_dot_generals(jax.make_jaxpr(grad)(x, w).jaxpr))
  assert len(dots) == 3  # forward, input gradient, weight gradient
  for eqn in dots:  # the fast path: bf16 operands, float32 accumulation (not bf16, not f32 x bf16)
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2
    assert eqn.params["preferred_element_type"] == jnp.float32
  assert layers.dense(x, w, preferred_element_type=out_dtype).dtype == (out_dtype or jnp.bfloat16)
  exact = jax.grad(lambda x, w: jnp.sum((x @ w) ** 2), argnums=(0, 1))(
      x.astype(jnp.float32), w.astype(jnp.float32))
  for got, want in zip(grad(x, w), exact):
    assert got.dtype == jnp.bfloat16
    assert float(jnp.abs(got.astype(jnp.float32) - want).max()) < 1e-2 * float(jnp.abs(want).max())


@pytest.mark.parametrize("policy,names", [("full", ()), ("names", ("mlp_out", "attention_out"))])
def test_remat_policies_do_not_change_gradients(tiny, policy, names):
  config, params = tiny
  expected = _grad_of_square_logits(config, params)
  got = _grad_of_square_logits(
      preset("tiny_qwen2", remat_policy=policy, remat_save_names=names), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got,
               expected)


def test_cache_chunks_and_repeat_match_full_forward(tiny):
  config, params = tiny
  full = _logits(config, params, TOKENS)
  cache = transformer.init_cache(config, batch_size=2, max_length=12)
  chunks = []
  for start, stop in ((0, 4), (4, 7), (7, 8), (8, 10)):  # prefill, then uneven continuations
    logits, cache = _apply(config, params, TOKENS[:, start:stop], cache=cache)
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5)
  assert cache["index"].tolist() == [10, 10]
  repeated = transformer.repeat_cache(cache, 3)
  assert len(repeated["layers"]) == 2 and repeated["index"].shape == (6,)
  assert repeated["layers"][1]["k"].shape == (6, 2, 12, 16)  # [B, K, S, hd]
  next_tokens = jnp.repeat(TOKENS[:, :1], 3, axis=0)
  logits, _ = _apply(config, params, next_tokens, cache=repeated)
  np.testing.assert_allclose(logits[0], logits[2], atol=1e-6)  # rows 0..2 are copies of row 0
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  axes = transformer.cache_logical_axes(config.num_layers)
  assert jax.tree.structure(axes, is_leaf=is_spec) == jax.tree.structure(cache)
  assert jax.tree.leaves(jax.tree.map(len, axes, is_leaf=is_spec)) == [
      x.ndim for x in jax.tree.leaves(cache)]


def test_cache_continuation_with_padded_slot_matches_unpadded_sequence(tiny):
  config, params = tiny
  cache = transformer.init_cache(config, batch_size=2, max_length=12)
  _, cache = _apply(config, params, TOKENS[:, :4], cache=cache)
  # Row 0 continues with 2 tokens, row 1 with 1 token plus a padding slot (segment 0).
  chunk = TOKENS[:, 4:6]
  segments = jnp.asarray([[1, 1], [1, 0]])
  positions = jnp.asarray([[4, 5], [4, 0]])
  _, cache = _apply(config, params, chunk, positions=positions, segment_ids=segments, cache=cache)
  last = jnp.asarray([[TOKENS[0, 6]], [TOKENS[1, 5]]])
  logits, _ = _apply(config, params, last, positions=jnp.asarray([[6], [5]]), cache=cache)
  np.testing.assert_allclose(logits[0, 0], _logits(config, params, TOKENS[:1, :7])[0, -1],
                             atol=1e-5)
  # Row 1 saw tokens 0..4, a padded slot, then token 5: as if the padded slot were not there.
  np.testing.assert_allclose(logits[1, 0], _logits(config, params, TOKENS[1:, :6])[0, -1],
                             atol=1e-5)


def test_unstacked_layers_match_stacked_on_the_cache_path(tiny):
  config, params = tiny
  cache = transformer.init_cache(config, batch_size=2, max_length=12)
  unstacked = transformer.unstack_layers(params)
  assert len(unstacked["layers"]) == 2 and unstacked["embedding"] is params["embedding"]
  stacked_logits, stacked_cache = _apply(config, params, TOKENS[:, :5], cache=cache)
  logits, new_cache = _apply(config, unstacked, TOKENS[:, :5], cache=cache)
  np.testing.assert_array_equal(logits, stacked_logits)
  jax.tree.map(np.testing.assert_array_equal, new_cache, stacked_cache)
  with pytest.raises(ValueError, match="only run with a cache"):
    _apply(config, unstacked, TOKENS)
  with pytest.raises(ValueError, match="the cache has 1 layers, the model 2"):
    _apply(config, params, TOKENS[:, :1], cache={**cache, "layers": cache["layers"][:1]})
