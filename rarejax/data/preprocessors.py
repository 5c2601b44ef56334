"""seqio preprocessors: builder examples → {"inputs": prompt text, "targets": text with loss}.

Every training task yields the same two text features, so any of them mix: "inputs" is read
without loss (empty for plain language modelling), "targets" is learned (EOS appended later).
Prompt tasks also keep case_id, gold_ids, task level and difficulty tier for RL and evaluation.
"""
from __future__ import annotations

from typing import Mapping

from rarejax.data import format as format_lib
from rarejax.data.tf_setup import tf

QUESTION_PREFIX, ANSWER_PREFIX = "Question: ", "\nAnswer: "
UNKNOWN_TIER = -1


def _qa_prompt(question: tf.Tensor) -> tf.Tensor:
  return tf.strings.join([QUESTION_PREFIX, question, ANSWER_PREFIX])


def knowledge_lm(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Documents as they are, QA pairs as 'Question: q\\nAnswer: a', all as targets."""
  def convert(ex):
    text = tf.where(tf.equal(ex["question"], ""), ex["answer"],
                    tf.strings.join([_qa_prompt(ex["question"]), ex["answer"]]))
    return {"inputs": tf.constant(""), "targets": text}
  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def knowledge_qa(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """QA pairs only: 'Question: q\\nAnswer: ' → answer."""
  dataset = dataset.filter(lambda ex: tf.not_equal(ex["question"], ""))
  return dataset.map(lambda ex: {"inputs": _qa_prompt(ex["question"]), "targets": ex["answer"]},
                     num_parallel_calls=tf.data.AUTOTUNE)


def _level_fields(level: str) -> tuple[str, str]:
  if level not in format_lib.TASKS:
    raise ValueError(f"task level must be one of {format_lib.TASKS}, got {level!r}")
  return ("prompt", "response") if level == "differential" else ("prompt_final", "response_final")


def diagnosis(dataset: tf.data.Dataset, level: str = "differential") -> tf.data.Dataset:
  """Case prompt → reference response of one task level ('differential' or 'final')."""
  prompt, response = _level_fields(level)
  return dataset.map(lambda ex: {"inputs": ex[prompt], "targets": ex[response],
                                 "case_id": ex["case_id"], "gold_ids": ex["gold_ids"]},
                     num_parallel_calls=tf.data.AUTOTUNE)


def trajectory(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """RERS trajectory: original prompt → kept response."""
  return dataset.map(lambda ex: {"inputs": ex["prompt"], "targets": ex["response"],
                                 "case_id": ex["case_id"], "gold_ids": ex["gold_ids"]},
                     num_parallel_calls=tf.data.AUTOTUNE)


def prompts(dataset: tf.data.Dataset, level: str = "differential",
            tiers: Mapping[str, int] | None = None) -> tf.data.Dataset:
  """Prompts for RL rollouts and evaluation: prompt, reference response, gold ids, task level
  and difficulty tier (from `tiers` by case id; UNKNOWN_TIER when absent)."""
  prompt, response = _level_fields(level)
  table = None
  if tiers:
    keys, values = zip(*sorted(tiers.items()))
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values, tf.int32)),
        default_value=UNKNOWN_TIER)

  def convert(ex):
    tier = table.lookup(ex["case_id"]) if table is not None else tf.constant(UNKNOWN_TIER)
    return {"inputs": ex[prompt], "targets": ex[response], "case_id": ex["case_id"],
            "gold_ids": ex["gold_ids"], "task": tf.constant(level), "tier": tier}
  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
