"""seqio Tasks and Mixtures over built datasets, registered on demand with digest-bearing names.

Nothing is registered at import time. Each `register_*` function takes a builder config (the
dataset must be built: `builders.prepare`), a data_dir and a vocabulary, checks the dataset's
knowledge stamp, and registers a Task named

  rarejax_<kind>_<config hash>_kb<knowledge digest>_v<vocabulary hash>

(re-registering the same name replaces it). Every task has text features "inputs" (no loss,
no EOS) and "targets" (loss, EOS appended), tokenized by the vocabulary:

  kind               from               inputs → targets
  knowledge_lm       KnowledgeConfig    '' → document, or 'Question: q\\nAnswer: a'
  knowledge_qa       KnowledgeConfig    'Question: q\\nAnswer: ' → answer
  diagnosis[_final]  Simulated/Real     case prompt → templated reference response
  trajectories       TrajectoryConfig   original prompt → RERS response
  prompts[_final]    Simulated/Real     case prompt → reference response, plus case_id, gold_ids,
                                        task level and difficulty tier (RL rollouts; its
                                        'validation' split is the evaluation task)
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Callable, Mapping, Sequence

from rarejax.data import builders
from rarejax.data import preprocessors
from rarejax.data import vocab as vocab_lib
from rarejax.data.tf_setup import tf

import seqio  # pylint: disable=g-bad-import-order  (after tf_setup hid the accelerators)

CASE_CONFIGS = (builders.SimulatedConfig, builders.RealConfig)


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """The two text features every rarejax task has."""
  return {"inputs": seqio.Feature(vocabulary, add_eos=False),
          "targets": seqio.Feature(vocabulary, add_eos=True)}


def task_name(kind: str, config: builders.RarejaxConfig, vocabulary: seqio.Vocabulary) -> str:
  """'rarejax_<kind>_<config hash>_kb<digest>_v<vocabulary hash>'."""
  return f"rarejax_{kind}_{config.name.replace('-', '_')}_v{vocab_lib.fingerprint(vocabulary)[:8]}"


def built_builder(config: builders.RarejaxConfig, data_dir: str | os.PathLike,
                  expected: Sequence[type] = ()) -> builders.RarejaxBuilder:
  """The prepared builder of `config`, after checking its type and knowledge stamp."""
  if expected and not isinstance(config, tuple(expected)):
    raise TypeError(f"expected a config of type {[t.__name__ for t in expected]}, got "
                    f"{type(config).__name__}")
  builder = builders.builder_for(config, data_dir)
  builder.check_knowledge()
  return builder


def _source(builder: builders.RarejaxBuilder) -> seqio.FunctionDataSource:
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    return builder.dataset(split, shuffle_files=shuffle_files, seed=seed)
  splits = builder.info.splits
  return seqio.FunctionDataSource(
      dataset_fn, splits=list(splits),
      num_input_examples={name: splits[name].num_examples for name in splits})


def _register(name: str, builder: builders.RarejaxBuilder, vocabulary: seqio.Vocabulary,
              steps: Sequence[Callable], keep_text: bool = False) -> str:
  """Registers (or replaces) a Task: steps, then tokenization and EOS."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=_source(builder), output_features=output_features(vocabulary),
      preprocessors=[*steps,
                     functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=keep_text),
                     seqio.preprocessors.append_eos])
  return name


def register_knowledge_lm(config: builders.KnowledgeConfig, data_dir: str | os.PathLike,
                          vocabulary: seqio.Vocabulary) -> str:
  """Knowledge corpus as plain language modelling (continued pretraining)."""
  builder = built_builder(config, data_dir, [builders.KnowledgeConfig])
  return _register(task_name("knowledge_lm", config, vocabulary), builder, vocabulary,
                   [preprocessors.knowledge_lm])


def register_knowledge_qa(config: builders.KnowledgeConfig, data_dir: str | os.PathLike,
                          vocabulary: seqio.Vocabulary) -> str:
  """Knowledge QA pairs as prompt → answer (loss on the answer)."""
  builder = built_builder(config, data_dir, [builders.KnowledgeConfig])
  return _register(task_name("knowledge_qa", config, vocabulary), builder, vocabulary,
                   [preprocessors.knowledge_qa])


def _level_suffix(level: str) -> str:
  return "" if level == "differential" else f"_{level}"


def register_diagnosis(config: builders.SimulatedConfig | builders.RealConfig,
                       data_dir: str | os.PathLike, vocabulary: seqio.Vocabulary,
                       level: str = "differential") -> str:
  """Diagnosis SFT: case prompt → templated reference response (loss on the response)."""
  builder = built_builder(config, data_dir, CASE_CONFIGS)
  return _register(task_name(f"diagnosis{_level_suffix(level)}", config, vocabulary), builder,
                   vocabulary, [functools.partial(preprocessors.diagnosis, level=level)])


def register_trajectories(config: builders.TrajectoryConfig, data_dir: str | os.PathLike,
                          vocabulary: seqio.Vocabulary) -> str:
  """Trajectory SFT: original prompt → RERS response (loss on the response)."""
  builder = built_builder(config, data_dir, [builders.TrajectoryConfig])
  return _register(task_name("trajectories", config, vocabulary), builder, vocabulary,
                   [preprocessors.trajectory])


def register_prompts(config: builders.SimulatedConfig | builders.RealConfig,
                     data_dir: str | os.PathLike, vocabulary: seqio.Vocabulary,
                     level: str = "differential", tiers: Mapping[str, int] | None = None) -> str:
  """RL / evaluation prompts with gold ids, task level and difficulty tier (case_id → tier)."""
  builder = built_builder(config, data_dir, CASE_CONFIGS)
  kind = f"prompts{_level_suffix(level)}"
  if tiers:
    kind += "_t" + hashlib.sha256(json.dumps(sorted(tiers.items())).encode()).hexdigest()[:6]
  return _register(task_name(kind, config, vocabulary), builder, vocabulary,
                   [functools.partial(preprocessors.prompts, level=level, tiers=tiers)],
                   keep_text=True)


def register_mixture(rates: Mapping[str, float]) -> str:
  """A Mixture of registered tasks or mixtures with sampling rates; named by a hash of (name,
  rate). A sub-mixture's rate is shared among its tasks by their own rates (seqio)."""
  if not rates:
    raise ValueError("a mixture needs at least one task")
  items = sorted((name, float(rate)) for name, rate in rates.items())
  for name, _ in items:
    if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
      raise ValueError(f"task {name!r} is not registered; register it before the mixture")
  name = "rarejax_mix_" + hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, items)
  return name
