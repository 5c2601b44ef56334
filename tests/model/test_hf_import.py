"""Parity of our decoder with transformers (eager, fp32) through the safetensors importer."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rarejax.model import hf_import  # pylint: disable=g-import-not-at-top
from rarejax.model import transformer
from rarejax.model.config import preset

_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
               rope_theta=1000.0)
_FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM,
              {"head_dim": 24, "hidden_act": "gelu_pytorch_tanh"}),
}


def _hf_model(family: str) -> "torch.nn.Module":
  """A tiny random HF model whose every weight (norms, biases too) is perturbed from init."""
  config_cls, model_cls, extra = _FAMILIES[family]
  config = config_cls(**_COMMON, **extra)
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  torch.manual_seed(0)
  model = model_cls(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return model


def _left_padded_batch(seed: int = 0):
  """tokens [3, 12], attention mask with 0/3/7 left pads, HF-style position ids."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, _COMMON["vocab_size"], size=(3, 12))
  mask = np.ones((3, 12), np.int64)
  mask[1, :3] = 0
  mask[2, :7] = 0
  tokens[mask == 0] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return tokens, mask, positions


def _hf_logits(model, tokens, mask, positions) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


def _our_logits(config, params, tokens, mask, positions) -> np.ndarray:
  logits, _ = transformer.Decoder(config).apply(
      {"params": params}, jnp.asarray(tokens, jnp.int32), positions=jnp.asarray(positions),
      segment_ids=jnp.asarray(mask))
  return np.asarray(logits)


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_logits_match_transformers_with_left_padding(family, tmp_path):
  model = _hf_model(family)
  model.save_pretrained(tmp_path, max_shard_size="60KB")  # several shards + index.json
  assert (tmp_path / "model.safetensors.index.json").exists()
  config, params = hf_import.load_hf_checkpoint(tmp_path)
  assert config.qkv_bias == (family == "qwen2")
  assert config.tie_embeddings == (family == "gemma")
  tokens, mask, positions = _left_padded_batch()
  ours = _our_logits(config, params, tokens, mask, positions)
  theirs = _hf_logits(model, tokens, mask, positions)
  real = mask == 1
  np.testing.assert_array_less(np.abs(ours[real] - theirs[real]).max(), 1e-4)
  assert np.abs(theirs[real]).max() > 1.0  # the comparison is not between near-zero logits


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_kv_cache_prefill_then_decode_matches_full_forward(family, tmp_path):
  model = _hf_model(family)
  model.save_pretrained(tmp_path)
  config, params = hf_import.load_hf_checkpoint(tmp_path)
  tokens, mask, positions = _left_padded_batch(seed=1)
  full = _hf_logits(model, tokens, mask, positions)
  decoder = transformer.Decoder(config)
  prefill = 8  # row 2 has 7 pads: its prompt is a single token
  cache = transformer.init_cache(config, batch_size=3, max_length=16)
  step_logits, cache = decoder.apply(
      {"params": params}, jnp.asarray(tokens[:, :prefill]), positions=positions[:, :prefill],
      segment_ids=mask[:, :prefill], cache=cache, last_only=True)
  got = [np.asarray(step_logits[:, 0])]
  for t in range(prefill, tokens.shape[1]):
    step_logits, cache = decoder.apply(
        {"params": params}, jnp.asarray(tokens[:, t:t + 1]), positions=positions[:, t:t + 1],
        segment_ids=mask[:, t:t + 1], cache=cache)
    got.append(np.asarray(step_logits[:, 0]))
  np.testing.assert_array_equal(np.asarray(cache["index"]), [12, 12, 12])
  np.testing.assert_allclose(np.stack(got, axis=1), full[:, prefill - 1:], atol=1e-4, rtol=0)


def test_export_roundtrip_loads_in_transformers(tmp_path):
  model = _hf_model("qwen2")
  model.save_pretrained(tmp_path / "in")
  config, params = hf_import.load_hf_checkpoint(tmp_path / "in")
  hf_import.export_hf_checkpoint(params, config, tmp_path / "out", model_type="qwen2")
  reloaded = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "out",
                                                           attn_implementation="eager").eval()
  tokens, mask, positions = _left_padded_batch()
  real = mask == 1
  np.testing.assert_allclose(_hf_logits(reloaded, tokens, mask, positions)[real],
                             _hf_logits(model, tokens, mask, positions)[real], atol=1e-5)


def test_missing_shard_names_the_file(tmp_path):
  _hf_model("llama").save_pretrained(tmp_path, max_shard_size="60KB")
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  victim = sorted(set(index["weight_map"].values()))[-1]
  (tmp_path / victim).unlink()
  with pytest.raises(FileNotFoundError, match=f"absent: {victim}"):
    hf_import.load_hf_checkpoint(tmp_path)


def test_unsupported_and_mismatched_configs_are_named(tmp_path):
  base = _hf_model("llama").config.to_dict()
  with pytest.raises(ValueError, match="rope_type='llama3'"):
    hf_import.config_from_hf({**base, "rope_parameters": {"rope_type": "llama3",
                                                          "rope_theta": 5e5}})
  with pytest.raises(ValueError, match="model_type='mistral'"):
    hf_import.config_from_hf({**base, "model_type": "mistral"})
  _hf_model("llama").save_pretrained(tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 80}))
  shape_error = r"mlp\.\w+_proj\.weight \((64, 96|96, 64)\) in model.safetensors.*expected"
  with pytest.raises(ValueError, match=shape_error):
    hf_import.load_hf_checkpoint(tmp_path)


def test_imported_params_follow_requested_dtype(tmp_path):
  _hf_model("gemma").save_pretrained(tmp_path)
  config, params = hf_import.load_hf_checkpoint(tmp_path, param_dtype="bfloat16",
                                                dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("bfloat16")}
  assert config.dtype == "bfloat16"


def test_older_config_format_of_the_paper_base_maps_to_the_qwen2_preset():
  # config.json of DeepSeek-R1-Distill-Qwen-1.5B (transformers 4.44 format: top-level rope_theta).
  distill = {"architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 1536,
             "initializer_range": 0.02, "intermediate_size": 8960,
             "max_position_embeddings": 131072, "max_window_layers": 21, "model_type": "qwen2",
             "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2,
             "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000,
             "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
             "use_sliding_window": False, "vocab_size": 151936}
  assert hf_import.config_from_hf(distill) == preset("qwen2_1_5b")
