"""The experiment-level helpers every stage shares: knowledge, data, held-out cases, evaluation.

What a stage (the pipeline_stage modules of data, train, evaluate and model, rarejax.rers.stage,
rarejax.rl.stage) asks of the experiment it runs in, the same in every stage:
  experiment_knowledge  the knowledge base, with the honest protocol's publication exclusions (gin)
  experiment_data       (kb, prepared data, task names by role) of the workdir (gin: the DataSpec)
  held_out_cases        the first held-out simulated cases of a split (simulated_rows: all of them)
  make_eval_fn          the periodic held-out evaluation of a training stage (gin)
  grounding_index       the knowledge's grounding index, built once per knowledge base
  export_metadata       what a training stage records with its checkpoints and export
This module imports no stage module, so every stage module can import it.
"""
from __future__ import annotations

import functools
import itertools
import logging
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import gin

from rarejax import cases
from rarejax import export as export_lib
from rarejax import knowledge
from rarejax.data import builders
from rarejax.data import stage as data_stage
from rarejax.evaluate import generation
from rarejax.model.config import ModelConfig
from rarejax.sample import Sampler
from rarejax.train import stage as train_stage_lib

gin.external_configurable(data_stage.DataSpec, module="rarejax.data")
gin.external_configurable(cases.SimulatorConfig, module="rarejax.cases")
gin.external_configurable(cases.RenderConfig, module="rarejax.cases")


@gin.configurable
def experiment_knowledge(exclude_pmids: Sequence[str] = (),
                         exclude_pmids_files: Sequence[str] = (),
                         heldout_phenopackets: Sequence[str] = (),
                         validation_fraction: float = 0.2, split_seed: int = 0,
                         inner_split: bool = False,
                         ordo_path: str | None = None,
                         mondo_sssom_paths: Sequence[str] = (),
                         skip_missing_heldout: bool = False) -> knowledge.KnowledgeBase:
  """The knowledge base of the experiment (cached on disk by rarejax.knowledge).

  The honest protocol: the validation publications of `heldout_phenopackets` (split by
  publication exactly as the real-case dataset splits them: same fraction and seed) are added
  to `exclude_pmids`, so no annotation row citing an evaluated paper reaches any stage. With
  `inner_split` (developing on the inner split of the training publications,
  cases.development_split), the inner validation and the outer validation publications are both
  excluded: the knowledge of the inner experiment is what the outer one would be, one split deeper.
  `exclude_pmids_files` add the PubMed ids of text files (one per line, 'PMID:123' or '123', '#'
  comments; knowledge.read_pmid_file), e.g. the benchmark publications a released model must not
  have read: ../shared/data/phenopacket-store/benchmark_pmids.txt.
  With `skip_missing_heldout`, a held-out source that does not exist is skipped with a warning
  (the knowledge's version stamp then records fewer exclusions, and an evaluation on those
  cases reports the checkpoint as not honest); otherwise it is an error.
  """
  excluded = [p for path in exclude_pmids_files for p in knowledge.read_pmid_file(path)]
  for source in heldout_phenopackets:
    if skip_missing_heldout and not pathlib.Path(source).exists():
      logging.warning("experiment_knowledge: held-out phenopackets %s not found; their "
                      "publications are not excluded from the knowledge", source)
      continue
    read, _ = cases.read_phenopackets(source)
    split = cases.development_split(read, validation_fraction, split_seed, inner_split)
    excluded += cases.pmids(c for c in split if c.split != "train")
  return knowledge.load_knowledge(exclude_pmids=(*exclude_pmids, *excluded), ordo_path=ordo_path,
                                  mondo_sssom_paths=mondo_sssom_paths)


@gin.configurable
def experiment_data(workdir: pathlib.Path, spec: data_stage.DataSpec | None = None):
  """(kb, prepared data, task names by role); builds once, then reuses the cached datasets."""
  spec = spec or data_stage.DataSpec()  # checked before the knowledge base loads
  kb = experiment_knowledge()
  data = data_stage.prepare_data(kb, workdir / "data", spec)
  return kb, data, data_stage.register_tasks(data)


def held_out_cases(data, num_cases: int, split: str = "validation") -> list[dict[str, Any]]:
  """The first `num_cases` held-out simulated cases (note, prompt, gold, structured phenotypes)
  of `split`: 'validation' for checks during training, 'test' for the eval stage's report."""
  if split == "test" and not data.simulated.n_test:
    raise ValueError("the eval stage reports on the simulated 'test' split, but the data has "
                     "none: set DataSpec.n_test >= 1")
  return list(itertools.islice(simulated_rows(data, split), num_cases))


def simulated_rows(data, split: str) -> Iterator[dict[str, Any]]:
  return builders.examples(builders.builder_for(data.simulated, data.data_dir), split)


@gin.configurable(denylist=["data", "vocabulary"])
def make_eval_fn(data, vocabulary, *, num_cases: int = 32, max_new_tokens: int = 256,
                 cache_length: int = 2048, model_config: ModelConfig | None = None):
  """(params, step) → top-k metrics of greedy diagnoses on the first simulated validation notes
  (None when num_cases is 0, e.g. `cpt/make_eval_fn.num_cases = 0`)."""
  if num_cases == 0:
    return None
  rows = held_out_cases(data, num_cases)
  prompts, golds = [r["prompt"] for r in rows], [r["gold_ids"] for r in rows]
  kb = experiment_knowledge()
  index = grounding_index(kb)
  model_config = train_stage_lib.resolve_model_config(model_config or ModelConfig(),
                                                      vocabulary.vocab_size)
  sampler = Sampler(model_config, cache_length=cache_length, max_batch_size=num_cases,
                    pad_id=vocabulary.pad_id)
  config = generation.GenerationConfig(max_new_tokens=max_new_tokens)

  def eval_fn(params, step):
    del step
    result = generation.evaluate_prompts(sampler, params, vocabulary, prompts, golds, index,
                                         config)
    return {k: result.metrics[k] for k in ("top1", "top3", "top10", "mrr", "well_formed")}
  return eval_fn


@functools.lru_cache(maxsize=4)
def grounding_index(kb: knowledge.KnowledgeBase) -> knowledge.GroundingIndex:
  return knowledge.GroundingIndex.from_knowledge(kb)


def export_metadata(kb: knowledge.KnowledgeBase, data) -> dict[str, Any]:
  """What a training stage records with its checkpoints and export: the knowledge version, the
  vocabulary, the prompt style and the number of diseases its prompts ask for, and how the
  differential is read — the first entry's id
  distribution for a model that answers first with id pieces (read back by model_method when
  the export is evaluated)."""
  return {"knowledge": kb.version.as_dict(with_pmids=True),
          "vocabulary": str(data.vocabulary_path),
          export_lib.PROMPT_INSTRUCTION: data.spec.instruction,
          export_lib.PROMPT_CANDIDATES: data.spec.n_ranked,
          export_lib.ANSWER_RANKING: ("first_entry" if data.spec.first_entry_ranking
                                        else "generate")}
