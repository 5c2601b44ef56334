"""The data stage: build the datasets of a knowledge base, train or load the vocabulary, tasks.

  spec = stage.DataSpec(n_diseases=30)                       # the quickstart's 30 OMIM diseases
  data = stage.prepare_data(kb, workdir / "data", spec)      # TFDS builds + SentencePiece model
  names = stage.register_tasks(data)                         # {'knowledge_lm': 'rarejax_...', ...}
  batches.get_batches(names["sft_mixture"], 1024, 16)

Everything is deterministic and cached by name: a second call with the same knowledge base and
spec reuses the built datasets and vocabulary.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Sequence

from rarejax import cases as cases_lib
from rarejax import knowledge
from rarejax.data import builders
from rarejax.data import corpus
from rarejax.data import format as format_lib
from rarejax.data import targets
from rarejax.data import tasks
from rarejax.data import vocab as vocab_lib

import seqio  # pylint: disable=g-bad-import-order  (tf_setup ran through the imports above)


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What to build. Real sources are optional; `tokenizer` selects a pretrained vocabulary."""
  n_diseases: int | None = 50  # OMIM subset size; None = every disease with ≥ min_findings
  # 1: the subset is drawn at random; k > 1: n_diseases / k differential groups of k look-alike
  # diseases (corpus.select_differential_groups), the harder task of telling similar diseases apart
  differential_group_size: int = 1
  min_findings: int = 5
  disease_seed: int = 0
  seed: int = 0
  findings_questions: int = 3
  n_train: int = 10  # simulated patients per disease
  n_validation: int = 2  # ... for checks during training and choices made while developing
  n_test: int = 2  # ... reported by the eval stage, never looked at before
  simulator: cases_lib.SimulatorConfig = cases_lib.SimulatorConfig()
  render: cases_lib.RenderConfig = cases_lib.RenderConfig()
  n_ranked: int = 10
  # reference reasoning of diagnosis targets: 'full', 'brief' or 'none' (answer first)
  reasoning: str = "full"
  answer: str = "name_id"  # answer lines: 'Name (ID)' or the 'id' alone (targets.ANSWER_STYLES)
  # every disease id a target can name (the experiment's diseases and the gold ids of real
  # 'train' cases) becomes one vocabulary piece; `vocab_size` then counts the other pieces
  id_pieces: bool = False
  # prompt style of every diagnosis prompt (data, RERS, evaluation; recorded in exports): 'full'
  # opens with the system instruction, 'none' (models trained from scratch) drops it
  instruction: str = "full"
  phenopackets: tuple[str, ...] = ()
  texts: tuple[str, ...] = ()
  jsonl: tuple[str, ...] = ()
  validation_fraction: float = 0.2
  # develop on the inner split of the training publications (builders.RealConfig.inner_split)
  inner_split: bool = False
  real_renderings: int = 1  # notes per real 'train' case (builders.RealConfig.renderings)
  real_mask_rate: float = 0.0  # findings dropped from each further rendering
  vocab_size: int = 8192
  tokenizer: str = ""  # a pretrained .model / tokenizer.json; '' = train SentencePiece
  qa_rate: float = 1.0  # SFT mixture rates: knowledge QA, diagnosis (ranked differential) and
  diagnosis_rate: float = 1.0
  final_rate: float = 0.0  # ... diagnosis at the final level (one diagnosis: half the tokens)
  real_rate: float | None = None  # ... real-case diagnosis (None: diagnosis_rate)

  @property
  def first_entry_ranking(self) -> bool:
    """Answers name one disease-id piece first with no reasoning: the differential is read from
    the first entry's distribution (rarejax.sample.first_entry), not decoded."""
    return self.id_pieces and self.answer == "id" and self.reasoning == "none"

  def __post_init__(self):  # a typo in gin fails here, before the knowledge base loads
    targets.check_reasoning(self.reasoning, "DataSpec.reasoning")
    targets.check_answer(self.answer, "DataSpec.answer")
    format_lib.check_instruction(self.instruction, "DataSpec.instruction")


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """Built datasets (configs under data_dir), the vocabulary file and the spec they came from."""
  spec: DataSpec
  data_dir: pathlib.Path
  knowledge: builders.KnowledgeConfig
  simulated: builders.SimulatedConfig
  real: builders.RealConfig | None
  vocabulary_path: pathlib.Path

  def vocabulary(self) -> seqio.Vocabulary:
    """The vocabulary the tasks tokenize with."""
    return vocab_lib.load_vocabulary(self.vocabulary_path)


def make_configs(kb: knowledge.KnowledgeBase, spec: DataSpec,
                 ) -> tuple[builders.KnowledgeConfig, builders.SimulatedConfig,
                            builders.RealConfig | None]:
  """The builder configs a spec stands for."""
  if spec.differential_group_size > 1:
    if spec.n_diseases is None or spec.n_diseases % spec.differential_group_size:
      raise ValueError(f"DataSpec.n_diseases ({spec.n_diseases}) must be a multiple of "
                       f"DataSpec.differential_group_size ({spec.differential_group_size})")
    diseases = corpus.select_differential_groups(
        kb, spec.n_diseases // spec.differential_group_size, spec.differential_group_size,
        spec.disease_seed, "OMIM", spec.min_findings)
  else:
    diseases = corpus.select_diseases(kb, spec.n_diseases, spec.disease_seed, "OMIM",
                                      spec.min_findings)
  knowledge_config = builders.KnowledgeConfig.create(
      kb, diseases=diseases, seed=spec.seed, findings_questions=spec.findings_questions)
  simulated = builders.SimulatedConfig.create(
      kb, diseases=diseases, seed=spec.seed, n_train=spec.n_train,
      n_validation=spec.n_validation, n_test=spec.n_test, simulator=spec.simulator,
      render=spec.render, n_ranked=spec.n_ranked, reasoning=spec.reasoning,
      instruction=spec.instruction, answer=spec.answer)
  real = None
  if spec.phenopackets or spec.texts or spec.jsonl:
    real = builders.RealConfig.create(
        kb, diseases=diseases if spec.n_diseases is not None else (), seed=spec.seed,
        phenopackets=spec.phenopackets, texts=spec.texts, jsonl=spec.jsonl,
        validation_fraction=spec.validation_fraction, inner_split=spec.inner_split,
        render=spec.render, n_ranked=spec.n_ranked, reasoning=spec.reasoning, instruction=spec.instruction,
        answer=spec.answer, renderings=spec.real_renderings, mask_rate=spec.real_mask_rate)
  return knowledge_config, simulated, real


def prepare_data(kb: knowledge.KnowledgeBase, data_dir: str | pathlib.Path,
                 spec: DataSpec = DataSpec()) -> PreparedData:
  """Builds (or reuses) the datasets of `spec` and trains (or reuses) the vocabulary."""
  data_dir = pathlib.Path(data_dir)
  knowledge_config, simulated, real = make_configs(kb, spec)
  built = [builders.prepare(c, data_dir, kb)
           for c in (knowledge_config, simulated, real) if c is not None]
  if spec.tokenizer:
    vocabulary_path = pathlib.Path(spec.tokenizer)
  else:
    ids = answer_ids(built) if spec.id_pieces else []
    key = json.dumps([[c.name for c in (knowledge_config, simulated, real) if c],
                      spec.vocab_size, spec.seed] + ([len(ids)] if ids else [])).encode()
    vocabulary_path = data_dir / "vocab" / f"spm-{hashlib.sha256(key).hexdigest()[:12]}.model"
    if not vocabulary_path.is_file():
      vocab_lib.train_sentencepiece(builders.texts(built), vocabulary_path,
                                    spec.vocab_size + len(ids), seed=spec.seed, extra_symbols=ids)
  return PreparedData(spec, data_dir, knowledge_config, simulated, real, vocabulary_path)


def answer_ids(built: Sequence[builders.RarejaxBuilder]) -> list[str]:
  """Every disease id a training target can name: the diseases of the built knowledge and
  simulated datasets, and the gold ids of the real 'train' cases (never 'validation' ones)."""
  ids = {d for builder in built for d in builder.builder_config.diseases}
  ids.update(g for builder in built if isinstance(builder.builder_config, builders.RealConfig)
             for example in builders.examples(builder, "train") for g in example["gold_ids"])
  return sorted(ids)


def register_tasks(data: PreparedData, vocabulary: seqio.Vocabulary | None = None,
                   trajectories: builders.TrajectoryConfig | None = None) -> dict[str, str]:
  """Registers every task of the prepared data; returns their names by role.

  Roles: knowledge_lm, knowledge_qa, diagnosis, diagnosis_final, prompts, prompts_final (RL on
  'train', evaluation on 'validation') for simulated cases; real_diagnosis, real_prompts when
  real cases were built; sft_mixture (knowledge QA + diagnosis SFT at the differential level,
  and at the final level when DataSpec.final_rate > 0); trajectories (RERS trajectory SFT)
  when a built `trajectories` dataset is given.
  """
  vocabulary = vocabulary or data.vocabulary()
  d = data.data_dir
  names = {"knowledge_lm": tasks.register_knowledge_lm(data.knowledge, d, vocabulary),
           "knowledge_qa": tasks.register_knowledge_qa(data.knowledge, d, vocabulary)}
  for level in ("differential", "final"):
    suffix = "" if level == "differential" else "_final"
    names[f"diagnosis{suffix}"] = tasks.register_diagnosis(data.simulated, d, vocabulary, level)
    names[f"prompts{suffix}"] = tasks.register_prompts(data.simulated, d, vocabulary, level)
  spec = data.spec
  rates = {names["knowledge_qa"]: spec.qa_rate, names["diagnosis"]: spec.diagnosis_rate}
  if spec.final_rate:
    rates[names["diagnosis_final"]] = spec.final_rate
  if data.real is not None:
    names["real_diagnosis"] = tasks.register_diagnosis(data.real, d, vocabulary)
    names["real_prompts"] = tasks.register_prompts(data.real, d, vocabulary)
    rates[names["real_diagnosis"]] = (spec.diagnosis_rate if spec.real_rate is None
                                      else spec.real_rate)
  names["sft_mixture"] = tasks.register_mixture(rates)
  if trajectories is not None:
    names["trajectories"] = tasks.register_trajectories(trajectories, d, vocabulary)
  return names
