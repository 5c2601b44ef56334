"""The 'data' stage of the pipeline, registered here: the experiment's knowledge, datasets and tokenizer (rarejax.data.stage)."""
from __future__ import annotations

from rarejax import experiment
from rarejax import pipeline


def _data_stage(ctx: pipeline.StageContext) -> dict:
  kb, data, names = experiment.experiment_data(ctx.workdir)
  vocabulary = data.vocabulary()
  return {"knowledge": kb.version.as_dict(), "tasks": names,
          "vocabulary": str(data.vocabulary_path), "vocab_size": vocabulary.vocab_size,
          "summary": f"{len(names)} tasks, vocab {vocabulary.vocab_size}"}


pipeline.register_stage("data", _data_stage)
