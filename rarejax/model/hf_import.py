"""Hugging Face (Llama, Qwen2, Gemma) safetensors checkpoints into our params tree, and back.

`load_hf_checkpoint(directory)` reads config.json and the safetensors file(s) (single file or
sharded with model.safetensors.index.json), streaming tensor by tensor with `safe_open` into one
preallocated host array per parameter, so a model occupies host memory once.

Layout notes:
  - RoPE: our rope (model.layers.apply_rope) uses Hugging Face's rotate_half layout (dimension i
    pairs with i + head_dim/2), so q/k projection weights are copied without permutation.
  - Linear weights: torch stores [out, in]; our kernels are [in..., out...] (e.g. q: [D, H, hd],
    o: [H, hd, D]), so a weight W becomes W.T reshaped; export flattens and transposes back.
  - Per-layer tensors model.layers.{i}.* fill slice i of our layer-stacked (scanned) arrays.
  - Gemma's RMSNorm weights are stored as (scale - 1); our config.norm_offset=1 matches that.
"""
from collections.abc import Iterator
import json
import math
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.flax

from rarejax.model.config import ModelConfig
from rarejax.model.transformer import abstract_params

PathLike = str | os.PathLike

# HF activation names -> ours.
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh", "gelu_tanh": "gelu_tanh", "gelu": "gelu"}

# Family fields by HF model_type (everything else is read from config.json).
_FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"qkv_bias": False, "norm_offset": 0.0, "scale_embeddings": False},
    "qwen2": {"qkv_bias": True, "norm_offset": 0.0, "scale_embeddings": False},
    "gemma": {"qkv_bias": False, "norm_offset": 1.0, "scale_embeddings": True},
}
_TIED_DEFAULT = {"llama": False, "qwen2": False, "gemma": True}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "gemma": "GemmaForCausalLM"}
# ModelConfig fields that config.json does not describe (kept from the caller on export).
_NON_ARCHITECTURE_FIELDS = ("param_dtype", "dtype", "remat_policy", "remat_save_names")

# (HF name, our path, layout). Layouts: "same" (identical shape), "flat" (HF keeps it 1-D),
# "in1"/"in2" (a torch Linear weight [out, in] <-> our kernel whose first 1/2 dims are "in").
_GLOBAL_TENSORS = (
    ("model.embed_tokens.weight", ("embedding",), "same"),
    ("model.norm.weight", ("final_norm", "scale"), "same"),
    ("lm_head.weight", ("lm_head",), "in1"),
)
_LAYER_TENSORS = (
    ("input_layernorm.weight", ("attn_norm", "scale"), "same"),
    ("post_attention_layernorm.weight", ("mlp_norm", "scale"), "same"),
    ("self_attn.q_proj.weight", ("attn", "q"), "in1"),
    ("self_attn.k_proj.weight", ("attn", "k"), "in1"),
    ("self_attn.v_proj.weight", ("attn", "v"), "in1"),
    ("self_attn.q_proj.bias", ("attn", "q_bias"), "flat"),
    ("self_attn.k_proj.bias", ("attn", "k_bias"), "flat"),
    ("self_attn.v_proj.bias", ("attn", "v_bias"), "flat"),
    ("self_attn.o_proj.weight", ("attn", "o"), "in2"),
    ("mlp.gate_proj.weight", ("mlp", "gate"), "in1"),
    ("mlp.up_proj.weight", ("mlp", "up"), "in1"),
    ("mlp.down_proj.weight", ("mlp", "down"), "in1"),
)
# Buffers some exporters write that carry no parameters.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> ModelConfig:
  """Builds a ModelConfig from a Hugging Face config.json dict (+ e.g. dtype overrides)."""
  model_type = hf_config.get("model_type")
  if model_type not in _FAMILIES:
    raise ValueError(f"config.json model_type={model_type!r} is not supported; "
                     f"supported: {sorted(_FAMILIES)}.")
  _check_supported(hf_config)
  activation = hf_config.get("hidden_activation") or hf_config.get("hidden_act", "silu")
  if activation not in _ACTIVATIONS:
    raise ValueError(f"config.json activation {activation!r} is not supported; "
                     f"supported: {sorted(_ACTIVATIONS)}.")
  fields = dict(
      vocab_size=hf_config["vocab_size"],
      d_model=hf_config["hidden_size"],
      num_layers=hf_config["num_hidden_layers"],
      num_heads=hf_config["num_attention_heads"],
      num_kv_heads=hf_config.get("num_key_value_heads") or hf_config["num_attention_heads"],
      mlp_dim=hf_config["intermediate_size"],
      head_dim=hf_config.get("head_dim"),
      rope_theta=float(_rope_parameters(hf_config).get("rope_theta", 10_000.0)),
      norm_eps=hf_config.get("rms_norm_eps", 1e-6),
      mlp_activation=_ACTIVATIONS[activation],
      tie_embeddings=hf_config.get("tie_word_embeddings", _TIED_DEFAULT[model_type]),
      init_std=hf_config.get("initializer_range", 0.02),
      **_FAMILIES[model_type])
  return ModelConfig(**{**fields, **overrides})


def _rope_parameters(hf_config: dict[str, Any]) -> dict[str, Any]:
  """RoPE settings from either transformers>=5 (`rope_parameters`) or older config.json."""
  params = dict(hf_config.get("rope_parameters") or {})
  if "rope_theta" in hf_config:
    params.setdefault("rope_theta", hf_config["rope_theta"])
  scaling = hf_config.get("rope_scaling") or {}
  params.setdefault("rope_type", scaling.get("rope_type") or scaling.get("type") or "default")
  return params


def _check_supported(hf_config: dict[str, Any]) -> None:
  """Raises for config.json features our model does not implement."""
  rope_type = _rope_parameters(hf_config)["rope_type"]
  unsupported = {
      f"rope_type={rope_type!r} (only 'default' RoPE)": rope_type != "default",
      "attention_bias=true on o_proj (Llama)": (hf_config.get("model_type") == "llama"
                                                and hf_config.get("attention_bias", False)),
      "mlp_bias=true": hf_config.get("mlp_bias", False),
      "use_sliding_window=true": hf_config.get("use_sliding_window", False),
      "use_bidirectional_attention=true": hf_config.get("use_bidirectional_attention", False),
  }
  found = [name for name, present in unsupported.items() if present]
  if found:
    raise ValueError(f"config.json uses unsupported features: {', '.join(found)}.")


def tensor_table(config: ModelConfig) -> dict[str, tuple[tuple[str, ...], int | None, str]]:
  """Maps each HF tensor name of `config` to (our path, layer index or None, layout)."""
  present = _paths(abstract_params(config))
  table = {}
  for name, path, layout in _GLOBAL_TENSORS:
    if path in present:
      table[name] = (path, None, layout)
  for layer in range(config.num_layers):
    for suffix, path, layout in _LAYER_TENSORS:
      if ("layers",) + path in present:
        table[f"model.layers.{layer}.{suffix}"] = (("layers",) + path, layer, layout)
  return table


def _paths(tree: dict[str, Any]) -> dict[tuple[str, ...], Any]:
  """Flattens a nested dict into {path tuple: leaf}."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(k.key for k in path): leaf for path, leaf in flat}


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def safetensors_files(directory: PathLike) -> list[pathlib.Path]:
  """Lists the checkpoint's safetensors files, checking every shard named by the index exists."""
  directory = pathlib.Path(directory)
  index = directory / "model.safetensors.index.json"
  if index.exists():
    names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [n for n in names if not (directory / n).exists()]
    if missing:
      raise FileNotFoundError(f"{index} names safetensors shard(s) that are absent: "
                              f"{', '.join(missing)}; the download is incomplete.")
    return [directory / n for n in names]
  single = directory / "model.safetensors"
  if single.exists():
    return [single]
  raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {directory}.")


def _iter_tensors(files: list[pathlib.Path]) -> Iterator[tuple[str, pathlib.Path, np.ndarray]]:
  """Yields (name, file, host array) one tensor at a time.

  The "flax" framework reads bfloat16 (numpy's cannot); the CPU device keeps tensors in host
  memory even when an accelerator is the default device.
  """
  for file in files:
    with safetensors.safe_open(file, framework="flax") as f:
      for name in f.keys():
        with jax.default_device(jax.devices("cpu")[0]):
          tensor = np.asarray(f.get_tensor(name))
        yield name, file, tensor


def _to_ours(tensor: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
  """HF tensor -> our layout: linear weights [out, in] are transposed, then reshaped."""
  if layout.startswith("in"):
    tensor = tensor.T
  if tensor.size != math.prod(shape):
    raise ValueError(f"has {tensor.size} elements, expected shape {shape}")
  return tensor.reshape(shape)


def _to_hf(array: np.ndarray, layout: str) -> np.ndarray:
  """Our layout -> HF tensor: kernels [in..., out...] become [out, in]; "flat" is raveled."""
  if layout == "same":
    return array
  if layout == "flat":
    return array.reshape(-1)
  return array.reshape(math.prod(array.shape[:int(layout[2:])]), -1).T


def load_hf_checkpoint(directory: PathLike, shardings: Any = None,
                       **config_overrides: Any) -> tuple[ModelConfig, dict[str, Any]]:
  """Imports a Hugging Face checkpoint directory (config.json + safetensors).

  Args:
    directory: folder written by `save_pretrained` (or a Hub snapshot).
    shardings: optional pytree of jax.sharding.Sharding matching the params, to place them
      directly on a mesh; default puts them on the default device.
    **config_overrides: ModelConfig fields to override (e.g. dtype='bfloat16',
      param_dtype='bfloat16', remat_policy='full').

  Returns:
    (config, params) with params a plain pytree of jax arrays in config.param_dtype.
  """
  directory = pathlib.Path(directory)
  config_file = directory / "config.json"
  if not config_file.exists():
    raise FileNotFoundError(f"{config_file} is missing; a Hugging Face checkpoint needs it.")
  config = config_from_hf(json.loads(config_file.read_text()), **config_overrides)
  table = tensor_table(config)
  targets = {path: np.empty(leaf.shape, leaf.dtype)
             for path, leaf in _paths(abstract_params(config)).items()}
  filled, unexpected = set(), []
  for name, file, tensor in _iter_tensors(safetensors_files(directory)):
    if name not in table:
      tied_head = name == "lm_head.weight" and config.tie_embeddings
      if not (tied_head or name.endswith(_IGNORED_SUFFIXES)):
        unexpected.append(name)
      continue
    path, layer, layout = table[name]
    target = targets[path] if layer is None else targets[path][layer]
    try:
      target[...] = _to_ours(tensor, layout, target.shape)
    except ValueError as e:
      raise ValueError(f"tensor {name} {tensor.shape} in {file.name}: {e} for our {'/'.join(path)}"
                       ) from None
    filled.add(name)
  missing = sorted(set(table) - filled)
  if missing or unexpected:
    raise ValueError(f"checkpoint {directory} does not match its config.json: missing tensors "
                     f"{missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected tensors "
                     f"{sorted(unexpected)[:8]}.")
  params: dict[str, Any] = {}
  for path, array in targets.items():
    _set_path(params, path, array)
  return config, jax.device_put(params, shardings)


def hf_config_dict(config: ModelConfig, model_type: str) -> dict[str, Any]:
  """The config.json dict of `config` as Hugging Face `model_type` (llama, qwen2 or gemma)."""
  activation = {"gelu_tanh": "gelu_pytorch_tanh"}.get(config.mlp_activation,
                                                       config.mlp_activation)
  hf = {"architectures": [_ARCHITECTURES[model_type]], "model_type": model_type,
        "vocab_size": config.vocab_size, "hidden_size": config.d_model,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "intermediate_size": config.mlp_dim,
        "head_dim": config.head_dim, "rms_norm_eps": config.norm_eps, "hidden_act": activation,
        "tie_word_embeddings": config.tie_embeddings, "initializer_range": config.init_std,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta}}
  kept = {f: getattr(config, f) for f in _NON_ARCHITECTURE_FIELDS}
  back = config_from_hf(hf, **kept)
  differing = [f for f in config.to_dict() if getattr(back, f) != getattr(config, f)]
  if differing:
    raise ValueError(f"config cannot be written as Hugging Face {model_type!r}: fields "
                     f"{differing} differ from that family's.")
  return hf


def export_hf_checkpoint(params: dict[str, Any], config: ModelConfig, directory: PathLike,
                         model_type: str, dtype: str = "float32") -> None:
  """Writes config.json and model.safetensors that transformers' from_pretrained can load."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  hf = hf_config_dict(config, model_type)
  ours = _paths(params)
  tensors = {}
  for name, (path, layer, layout) in tensor_table(config).items():
    array = np.asarray(ours[path] if layer is None else ours[path][layer])
    tensors[name] = jnp.asarray(_to_hf(array, layout), dtype)
  safetensors.flax.save_file(tensors, str(directory / "model.safetensors"),
                             metadata={"format": "pt"})
  (directory / "config.json").write_text(json.dumps({**hf, "torch_dtype": dtype}, indent=2))
