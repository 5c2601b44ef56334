"""Tests for the answer prior: first-answer counts read from a token cache, the mixture's rates
weighting tasks by rate / size, the file an export carries, and the floor of unseen ids."""
import json

import numpy as np
import pytest

from rarejax.data import cached_batches
from rarejax.sample import answer_prior
from rarejax.sample import first_entry

PREFIX = [4, 5]  # '<answer>\n1. ' in this toy vocabulary
PIECES = {7: "OMIM:100000", 8: "OMIM:200000", 9: "OMIM:300000"}


class ToyVocabulary:
  vocab_size = 10

  def decode(self, tokens):
    return "".join(PIECES.get(t, f"<{t}>") for t in tokens)


def write_split(data_dir, task, targets):
  folder = cached_batches.split_dir(data_dir, task, "train")
  folder.mkdir(parents=True)
  for feature, rows in (("inputs", [[3, 2]] * len(targets)), ("targets", targets)):
    np.save(folder / f"{feature}.npy", np.array([t for r in rows for t in r], np.int32))
    np.save(folder / f"{feature}_offsets.npy",
            np.cumsum([0] + [len(r) for r in rows]).astype(np.int64))
  (folder / cached_batches.META).write_text(json.dumps({"examples": len(targets)}))


@pytest.fixture()
def data_dir(tmp_path):
  # real cases (rate 2): OMIM:100000 twice, OMIM:200000 once, one answer that is no id piece
  write_split(tmp_path, "real", [[4, 5, 7, 1], [4, 5, 7, 1], [4, 5, 8, 1], [4, 5, 6, 1]])
  # simulated + QA (rate 1): OMIM:300000 once; a QA target and one too short to hold an answer
  write_split(tmp_path, "sim", [[4, 5, 9, 1], [6, 7, 7], [4, 5]])
  path = cached_batches.rates_path(tmp_path, "mix")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"real": 2.0, "sim": 1.0}))
  return tmp_path


def test_first_answer_counts(data_dir):
  split = cached_batches.open_split(cached_batches.split_dir(data_dir, "real", "train"))
  counts = answer_prior.first_answer_counts(split, PREFIX, np.array([7, 8, 9]))
  assert counts.tolist() == [2, 1, 0]


def test_prior_weights_each_task_by_rate_over_size(data_dir):
  prior = answer_prior.from_token_cache(data_dir, "mix", ToyVocabulary(), PREFIX)
  # 2/4 * {100000: 2, 200000: 1} + 1/3 * {300000: 1} = {1, 1/2, 1/3}, normalized
  total = 1 + 1 / 2 + 1 / 3
  assert prior == pytest.approx({"OMIM:100000": 1 / total, "OMIM:200000": 0.5 / total,
                                 "OMIM:300000": 1 / 3 / total})


def test_a_mixture_without_answers_has_no_prior(data_dir):
  """E.g. a cpt stage of an id-piece experiment: nothing to write, and no error."""
  assert answer_prior.from_token_cache(data_dir, "mix", ToyVocabulary(), [4, 4]) == {}


def test_write_read_and_the_floor_of_ids_never_answered(tmp_path):
  prior = {"OMIM:100000": 0.75, "OMIM:200000": 0.25}
  answer_prior.write(tmp_path, prior, {"provider": "mix"})
  assert answer_prior.read(tmp_path) == prior
  vector = first_entry.log_prior_vector(prior, ["OMIM:200000", "OMIM:999999", "OMIM:100000"])
  np.testing.assert_allclose(vector, np.log([0.25, 0.25, 0.75]))
  assert answer_prior.read(tmp_path / "nothing") is None
  (tmp_path / answer_prior.FILE).write_text("[1, 2]")
  with pytest.raises(ValueError, match="not an answer prior"):
    answer_prior.read(tmp_path)
