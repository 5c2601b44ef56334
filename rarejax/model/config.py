"""Model configuration: one frozen dataclass whose fields select the decoder family, plus presets.

Families differ only by field values (no `if family == ...` anywhere):

  field              Llama      Qwen2      Gemma 1
  qkv_bias           False      True       False
  mlp_activation     silu       silu       gelu_tanh   (GeGLU with the tanh approximation)
  norm_offset        0.0        0.0        1.0         (RMSNorm scale is `offset + weight`)
  scale_embeddings   False      False      True        (embeddings times sqrt(d_model))
  tie_embeddings     False      either     True        (output projection = embedding table)

`ModelConfig` is gin-configurable: a gin file binds its fields (`ModelConfig.d_model = 512`),
see gin_configs/models/*.gin. Python code starts from `preset(name, **overrides)`.
"""
import dataclasses
from typing import Any

import gin

ACTIVATIONS = ("silu", "gelu_tanh", "gelu")
REMAT_POLICIES = ("none", "full", "dots", "names")
DTYPES = ("float32", "bfloat16", "float16")


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Shapes and family switches of a decoder-only transformer.

  Attributes:
    vocab_size: rows of the embedding table.
    d_model: width of the residual stream.
    num_layers: decoder layers (scanned with `nn.scan`).
    num_heads: query heads.
    num_kv_heads: key/value heads (GQA); must divide `num_heads`.
    mlp_dim: hidden width of the gated MLP.
    head_dim: per-head width; `None` means `d_model // num_heads` (which must divide evenly).
    rope_theta: RoPE base wavelength.
    norm_eps: RMSNorm epsilon.
    norm_offset: RMSNorm multiplies by `norm_offset + scale` (Gemma stores scale - 1).
    mlp_activation: gate activation, one of ACTIVATIONS.
    qkv_bias: biases on the q/k/v projections (Qwen2).
    scale_embeddings: multiply embeddings by sqrt(d_model) (Gemma).
    tie_embeddings: reuse the embedding table as the output projection.
    init_std: stddev of the normal initializer for kernels and embeddings.
    param_dtype: dtype the parameters are stored in (name of a jnp dtype).
    dtype: compute dtype of activations and matmuls; logits are always float32.
    remat_policy: one of REMAT_POLICIES: 'none' (store everything), 'full' (recompute the
      layer), 'dots' (save matmul outputs without batch dims), 'names' (save only the
      activations named in `remat_save_names`, see model.transformer.CHECKPOINT_NAMES).
    remat_save_names: activation names kept by the 'names' policy.
  """
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  mlp_dim: int
  head_dim: int | None = None
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  norm_offset: float = 0.0
  mlp_activation: str = "silu"
  qkv_bias: bool = False
  scale_embeddings: bool = False
  tie_embeddings: bool = False
  init_std: float = 0.02
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"
  remat_save_names: tuple[str, ...] = ()

  def __post_init__(self):
    if self.head_dim is None:
      if self.d_model % self.num_heads:
        raise ValueError(
            f"ModelConfig: d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
            "change num_heads or set head_dim explicitly.")
      object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig: num_heads={self.num_heads} is not divisible by "
          f"num_kv_heads={self.num_kv_heads} (grouped-query attention needs whole groups).")
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig: head_dim={self.head_dim} must be even for RoPE.")
    _check_choice("mlp_activation", self.mlp_activation, ACTIVATIONS)
    _check_choice("remat_policy", self.remat_policy, REMAT_POLICIES)
    _check_choice("param_dtype", self.param_dtype, DTYPES)
    _check_choice("dtype", self.dtype, DTYPES)
    object.__setattr__(self, "remat_save_names", tuple(self.remat_save_names))

  def to_dict(self) -> dict[str, Any]:
    """Returns the fields as a JSON-serializable dict (inverse: `ModelConfig(**d)`)."""
    d = dataclasses.asdict(self)
    d["remat_save_names"] = list(self.remat_save_names)
    return d


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"ModelConfig: {field}={value!r} is not one of {choices}.")


_LLAMA = dict(mlp_activation="silu")
_QWEN2 = dict(mlp_activation="silu", qkv_bias=True)
_GEMMA = dict(mlp_activation="gelu_tanh", norm_offset=1.0, scale_embeddings=True,
              tie_embeddings=True)
_TINY = dict(vocab_size=256, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128)

PRESETS: dict[str, dict[str, Any]] = {
    # Test sizes (~0.1M parameters).
    "tiny_llama": {**_LLAMA, **_TINY},
    "tiny_qwen2": {**_QWEN2, **_TINY},
    "tiny_gemma": {**_GEMMA, **_TINY, "head_dim": 32},
    # CPU benchmark / quickstart sizes (Llama family, 8k SentencePiece vocab).
    "small_7m": {**_LLAMA, "vocab_size": 8192, "d_model": 256, "num_layers": 4, "num_heads": 4,
                 "num_kv_heads": 4, "mlp_dim": 768},
    "small_30m": {**_LLAMA, "vocab_size": 8192, "d_model": 512, "num_layers": 6, "num_heads": 8,
                  "num_kv_heads": 4, "mlp_dim": 1536},
    "small_100m": {**_LLAMA, "vocab_size": 8192, "d_model": 768, "num_layers": 12,
                   "num_heads": 12, "num_kv_heads": 4, "mlp_dim": 2304},
    # GPU benchmark size: Llama-3.2-1B shapes (1.24B parameters; plain RoPE, no llama3 scaling).
    "llama_1b": {**_LLAMA, "vocab_size": 128256, "d_model": 2048, "num_layers": 16,
                 "num_heads": 32, "num_kv_heads": 8, "mlp_dim": 8192, "rope_theta": 500_000.0,
                 "norm_eps": 1e-5, "tie_embeddings": True},
    # Published architectures (import weights with model.hf_import).
    "llama3_8b": {**_LLAMA, "vocab_size": 128256, "d_model": 4096, "num_layers": 32,
                  "num_heads": 32, "num_kv_heads": 8, "mlp_dim": 14336, "rope_theta": 500_000.0,
                  "norm_eps": 1e-5},
    # DeepSeek-R1-Distill-Qwen-1.5B (the paper's base family).
    "qwen2_1_5b": {**_QWEN2, "vocab_size": 151936, "d_model": 1536, "num_layers": 28,
                   "num_heads": 12, "num_kv_heads": 2, "mlp_dim": 8960, "rope_theta": 10_000.0},
    "gemma_2b": {**_GEMMA, "vocab_size": 256000, "d_model": 2048, "num_layers": 18,
                 "num_heads": 8, "num_kv_heads": 1, "mlp_dim": 16384, "head_dim": 256},
}


def preset(name: str, **overrides: Any) -> ModelConfig:
  """Returns the named preset config with `overrides` applied (e.g. dtype='bfloat16')."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}.")
  return ModelConfig(**{**PRESETS[name], **overrides})
