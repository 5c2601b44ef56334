"""The training answers' first-entry distribution over disease ids: the prior a first-entry
ranking can divide out (logit adjustment).

A model trained to name diseases first (rarejax.sample.first_entry) learns p(disease | note),
which carries the training mixture's answer frequencies: a disease with many real training
cases, each rendered several times, is the first answer far more often than one known only from
a few simulated patients. Logit adjustment (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021) ranks by log p(d | note) - w * log prior(d) instead, so that rarely
trained answers are not ranked down for their rarity alone; w = 0 is the model's own ranking,
w = 1 the balanced one. The weight is a choice: made on the inner split of the training
publications (README, "Honest evaluation"), recorded in the export's metadata.json under
PRIOR_WEIGHT.

prior(d) is exact, read from the token cache the training stage streamed
(rarejax.data.cached_batches): the mixture draws task t with probability rate_t / sum(rates)
and then one of its N_t examples uniformly, so

  prior(d) ∝ sum_t rate_t / N_t * #{examples of t whose target starts with the answer prefix
                                    followed by d's id piece}

  prior = from_token_cache(data_dir, provider, vocabulary, answer_prefix)
  write(export_dir, prior, source={...});  read(export_dir) -> {disease id: probability}
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rarejax import atomic_io
from rarejax import release
from rarejax import tokenizer as tokenizer_lib
from rarejax.data import cached_batches
from rarejax.sample import first_entry

FILE = release.ANSWER_PRIOR_FILE  # next to metadata.json in an export or a release
PRIOR_WEIGHT = "answer_prior_weight"  # metadata.json key: the weight w chosen for the export


def first_answer_counts(split: cached_batches.CachedSplit, answer_prefix: Sequence[int],
                        id_tokens: np.ndarray) -> np.ndarray:
  """Per id token (aligned with `id_tokens`): how many of the split's targets start with
  `answer_prefix` followed by that token."""
  prefix = np.asarray(answer_prefix, np.int64)
  targets, offsets = split.tokens["targets"], split.offsets["targets"]
  starts, lengths = offsets[:-1], np.diff(offsets)
  usable = starts[lengths > len(prefix)]
  if not len(usable):
    return np.zeros(len(id_tokens), np.int64)
  window = np.asarray(targets)[usable[:, None] + np.arange(len(prefix) + 1)]
  answer = window[(window[:, :len(prefix)] == prefix).all(axis=1), len(prefix)]
  position = np.minimum(np.searchsorted(id_tokens, answer), len(id_tokens) - 1)
  return np.bincount(position[id_tokens[position] == answer], minlength=len(id_tokens))


def from_token_cache(data_dir: str | os.PathLike, provider: str, vocabulary: Any,
                     answer_prefix: Sequence[int]) -> dict[str, float]:
  """{disease id: prior probability} of the first answer entry under the mixture `provider`
  (module docstring); ids never trained as a first answer are left out. Empty when no target
  names a disease first (a stage that trains no diagnosis, e.g. cpt on knowledge text)."""
  pieces = first_entry.id_pieces(vocabulary)
  id_tokens = np.array(sorted(pieces), np.int64)
  rates = cached_batches.read_rates(data_dir, provider)
  total = np.zeros(len(id_tokens))
  for task, rate in rates.items():
    split = cached_batches.open_split(cached_batches.split_dir(data_dir, task, "train"))
    if len(split):
      total += rate / len(split) * first_answer_counts(split, answer_prefix, id_tokens)
  if not total.any():
    return {}
  total /= total.sum()
  return {pieces[int(t)]: float(p) for t, p in zip(id_tokens, total) if p > 0}


def write(export_dir: str | os.PathLike, prior: Mapping[str, float],
          source: Mapping[str, Any]) -> pathlib.Path:
  """Writes FILE into `export_dir` (atomically): the prior and where it was read from."""
  path = pathlib.Path(export_dir) / FILE
  doc = {"source": dict(source), "n_ids": len(prior), "prior": dict(sorted(prior.items()))}
  atomic_io.write_atomic(path, json.dumps(doc, indent=0))
  return path


def read(export_dir: str | os.PathLike) -> dict[str, float] | None:
  """The export's prior ({disease id: probability}), or None when it has no FILE."""
  path = pathlib.Path(export_dir) / FILE
  if not path.is_file():
    return None
  try:
    prior = json.loads(path.read_text())["prior"]
  except (json.JSONDecodeError, KeyError, TypeError) as err:
    raise ValueError(f"{path} is not an answer prior ({err}); write it again with "
                     "rarejax.sample.answer_prior.write") from err
  return {str(k): float(v) for k, v in prior.items()}


def write_for_export(export_dir: str | os.PathLike, data_dir: str | os.PathLike, provider: str,
                     vocabulary: Any) -> pathlib.Path | None:
  """Computes the prior of the mixture `provider` an id-piece model trained on (its token cache
  under `data_dir`) and writes it into the model's export; None, writing nothing, when the
  mixture names no disease first."""
  prior = from_token_cache(data_dir, provider, vocabulary,
                           first_entry.id_answer_prefix(vocabulary))
  if not prior:
    return None
  return write(export_dir, prior, {"data_dir": str(data_dir), "provider": provider,
                                   "rates": cached_batches.read_rates(data_dir, provider)})


def main(argv: Sequence[str] | None = None) -> int:
  """Writes the answer prior into a finished pipeline's export (one trained before the training
  stage wrote it itself)."""
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      prog="python -m rarejax.sample.answer_prior", description=main.__doc__)
  parser.add_argument("--workdir", required=True, help="the pipeline's workdir")
  parser.add_argument("--stage", default="sft", help="the training stage whose export gets it")
  parser.add_argument("--provider", default=None,
                      help="the mixture the stage trained on (default: the data stage's "
                      "sft_mixture)")
  args = parser.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  data_result, export = workdir / "data" / "result.json", workdir / args.stage / "export"
  for path in (data_result, export / "metadata.json"):
    if not path.is_file():
      parser.error(f"{path} is missing: --workdir must be a pipeline workdir whose data and "
                   f"{args.stage} stages have finished")
  data = json.loads(data_result.read_text())
  provider = args.provider or data["tasks"]["sft_mixture"]
  vocabulary = tokenizer_lib.load_tokenizer(data["vocabulary"])  # the ids training used, no TF
  try:
    path = write_for_export(export, workdir / "data", provider, vocabulary)
  except (FileNotFoundError, ValueError) as err:
    parser.error(str(err))
  if path is None:
    parser.error(f"no training target of {provider!r} names a disease first with an id piece: "
                 f"{export} was not trained to answer first with id pieces (DataSpec.id_pieces)")
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
