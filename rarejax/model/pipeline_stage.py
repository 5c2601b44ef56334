"""The 'import_hf' stage of the pipeline, registered here: a Hugging Face checkpoint as the export later stages start from."""
from __future__ import annotations

import gin

from rarejax import pipeline
from rarejax.model import hf_import
from rarejax.train import checkpoint


@gin.configurable(denylist=["ctx"])
def import_hf_stage(ctx: pipeline.StageContext, checkpoint_dir: str = gin.REQUIRED) -> dict:
  """Imports a Hugging Face checkpoint (config.json + safetensors) as the export later stages
  start from (e.g. DeepSeek-R1-Distill-Qwen); pair it with DataSpec.tokenizer = its tokenizer."""
  model_config, params = hf_import.load_hf_checkpoint(checkpoint_dir)
  export = ctx.folder / pipeline.EXPORT_DIR
  checkpoint.export_params(export, params, {"model_config": model_config.to_dict(),
                                            "source": str(checkpoint_dir)})
  return {"export": str(export), "model_config": model_config.to_dict(),
          "summary": f"imported {checkpoint_dir}"}


pipeline.register_stage("import_hf", import_hf_stage)
