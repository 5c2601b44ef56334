"""Tests for the 'import_hf' stage: a Hugging Face checkpoint exported as the training stages load it."""
import pathlib

import jax
import numpy as np
import pytest

from rarejax import export as export_lib
from rarejax import pipeline
from rarejax.model import pipeline_stage as import_hf
from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.train import stage as train_stage_lib


def test_import_hf_stage_exports_params_the_training_stages_can_load(tmp_path):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=64)
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
  ctx = pipeline.StageContext("import_hf", tmp_path, tmp_path / "import_hf", {})
  result = import_hf.import_hf_stage(ctx, checkpoint_dir=str(tmp_path / "hf"))
  export = pathlib.Path(result["export"])
  model_config = train_stage_lib.resolve_model_config(
      ModelConfig(**result["model_config"]), 64)
  params = export_lib.load_params(export, model_config)
  assert transformer.count_params(params) == sum(p.numel() for p in
                                                 transformers.LlamaForCausalLM(config).parameters())
  embed = next(v for k, v in jax.tree_util.tree_leaves_with_path(params) if "embed" in str(k))
  assert np.isfinite(np.asarray(embed)).all()
