"""Tests for first-entry ranking: disease ids as vocabulary pieces, the answer prefix, the ranker
(left padding gives the logits of an unpadded forward), and the model method reading an export
that records 'first_entry' into candidates graded by the one grader."""
import json

import jax
import numpy as np
import pytest

from rarejax.data import format as fmt
from rarejax.data import vocab as vocab_lib
from rarejax import export as export_lib
from rarejax.evaluate import generation, model_method
from rarejax.knowledge import grounding
from rarejax.model import config as model_config
from rarejax.model import transformer
from rarejax.sample import answer_prior
from rarejax.sample import first_entry
from rarejax.train import checkpoint

IDS = ["OMIM:154700", "OMIM:609192", "OMIM:236200", "OMIM:999999"]
INDEX = grounding.GroundingIndex(
    [("OMIM:154700", ["Marfan syndrome"]), ("OMIM:609192", ["Loeys-Dietz syndrome 1"]),
     ("OMIM:236200", ["Homocystinuria"])])
RESPONSE = lambda disease_id: fmt.format_response("", [("", disease_id)])  # noqa: E731
TEXTS = [fmt.build_prompt("A tall boy with long fingers and lens dislocation.",
                          instruction="none"),
         *(fmt.format_response("", [("", i)]) for i in IDS),
         "Arachnodactyly, ectopia lentis, scoliosis, tall stature, aortic root dilatation."]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  folder = tmp_path_factory.mktemp("first_entry")
  vocab_path = vocab_lib.train_sentencepiece(TEXTS * 5, folder / "spm.model", vocab_size=400,
                                             extra_symbols=IDS)
  vocabulary = vocab_lib.load_vocabulary(vocab_path)
  config = model_config.preset("tiny_llama", vocab_size=vocabulary.vocab_size, init_std=0.2)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  out = folder / "export"
  checkpoint.export_params(out, params, {"model_config": config.to_dict(),
                                         "vocabulary": str(vocab_path), "knowledge": {},
                                         "prompt_instruction": "none",
                                         export_lib.ANSWER_RANKING: "first_entry"})
  return out


def test_id_pieces_and_prefix(export):
  model = export_lib.load_model(export)
  pieces = first_entry.id_pieces(model.vocabulary)
  assert sorted(pieces.values()) == sorted(IDS)
  response = fmt.format_response("", [("", "OMIM:154700")])
  prefix = first_entry.answer_prefix_ids(model.vocabulary, response, "OMIM:154700")
  assert model.vocabulary.decode(prefix) == response[:response.index("OMIM:154700")]
  assert first_entry.id_answer_prefix(model.vocabulary) == prefix  # the same for every id
  with pytest.raises(ValueError, match="not one vocabulary piece"):
    first_entry.answer_prefix_ids(model.vocabulary, "1. OMIM:123", "OMIM:123")


def test_left_padded_rows_give_the_unpadded_logits(export):
  model = export_lib.load_model(export)
  ranker = first_entry.FirstEntryRanker(model.config, model.vocabulary, RESPONSE, batch_size=2,
                                        length_step=16)
  prefix = ranker.answer_prefix
  assert model.vocabulary.decode(prefix) == RESPONSE("OMIM:1")[:-len("OMIM:1\n</answer>")]
  prompts = [generation.prompt_ids(model.vocabulary, p) for p in
             (TEXTS[0], fmt.build_prompt("Seizures.", instruction="none"))]
  ranked = ranker.rank(model.params, prompts, top_k=len(IDS))
  for prompt, row in zip(prompts, ranked):
    logits, _ = transformer.Decoder(model.config).apply(
        {"params": model.params}, np.array([prompt + prefix], np.int32))
    log_probs = jax.nn.log_softmax(logits[0, -1])
    expected = sorted(((model.vocabulary.decode([t]), float(np.exp(log_probs[t])))
                       for t in ranker.id_tokens), key=lambda x: -x[1])
    assert [d for d, _ in row] == [d for d, _ in expected]
    np.testing.assert_allclose([p for _, p in row], [p for _, p in expected], rtol=1e-4)


def test_model_method_reads_first_entry_from_metadata(export):
  model = export_lib.load_model(export)
  assert model.answer_ranking == "first_entry"
  method = model_method.ModelMethod(model, INDEX, batch_size=2, top_k=3)
  diagnoses = method.diagnose(["A tall boy with long fingers.", "Seizures since infancy."])
  for diagnosis in diagnoses:
    assert len(diagnosis.candidates) == 3
    assert diagnosis.parsed.well_formed
    assert {c.disease_id for c in diagnosis.candidates} <= set(IDS)
    assert 0 < diagnosis.candidates[0].confidence <= 1
    assert diagnosis.candidates[1].confidence is None
  assert method.config["ranking"] == "first_entry"


def test_prompts_ask_for_as_many_diseases_as_training_prompts_did(export):
  """A model trained on prompts asking for 1 disease (DataSpec.n_ranked = 1, the full recipe) is
  asked for 1 at inference too, whatever top_k it is ranked to; without a recorded count, for
  top_k."""
  model = export_lib.load_model(export)
  note = "A tall boy with long fingers."
  recorded = export_lib.LoadedModel(model.export_dir, model.config, model.params,
                                    model.vocabulary, model.vocabulary_path,
                                    {**model.metadata, export_lib.PROMPT_CANDIDATES: 1})
  prompt, _ = model_method.ModelMethod(recorded, INDEX, top_k=10).prompt(note)
  assert prompt == fmt.build_prompt(note, "differential", 1, "none")
  prompt, _ = model_method.ModelMethod(model, INDEX, top_k=10).prompt(note)
  assert prompt == fmt.build_prompt(note, "differential", 10, "none")


def test_unknown_ranking_in_metadata_is_an_error(export, tmp_path):
  model = export_lib.load_model(export)
  bad = export_lib.LoadedModel(model.export_dir, model.config, model.params, model.vocabulary,
                                 model.vocabulary_path,
                                 {**model.metadata, export_lib.ANSWER_RANKING: "beam"})
  with pytest.raises(ValueError, match="answer_ranking"):
    model_method.ModelMethod(bad, INDEX)


def test_vocabulary_without_id_pieces_is_refused(tmp_path):
  vocab_path = vocab_lib.train_sentencepiece(TEXTS * 5, tmp_path / "spm.model", vocab_size=400)
  vocabulary = vocab_lib.load_vocabulary(vocab_path)
  config = model_config.preset("tiny_llama", vocab_size=vocabulary.vocab_size)
  with pytest.raises(ValueError, match="id_pieces"):
    first_entry.FirstEntryRanker(config, vocabulary, RESPONSE)


def test_prior_weight_ranks_by_the_adjusted_log_probs(export, tmp_path):
  model = export_lib.load_model(export)
  prior = {"OMIM:154700": 0.7, "OMIM:609192": 0.2, "OMIM:236200": 0.1}  # OMIM:999999: the floor
  prompts = [generation.prompt_ids(model.vocabulary, TEXTS[0])]
  plain = first_entry.FirstEntryRanker(model.config, model.vocabulary, RESPONSE, batch_size=1)
  p = dict(plain.rank(model.params, prompts, top_k=len(IDS))[0])
  for weight in (0.5, 3.0):
    ranker = first_entry.FirstEntryRanker(
        model.config, model.vocabulary, RESPONSE, batch_size=1, prior_weight=weight,
        prior=prior)
    row = ranker.rank(model.params, prompts, top_k=len(IDS))[0]
    adjusted = {d: np.log(p[d]) - weight * np.log(prior.get(d, 0.1)) for d in IDS}
    assert [d for d, _ in row] == sorted(IDS, key=lambda d: -adjusted[d])
    assert dict(row) == pytest.approx(p, rel=1e-5)  # the probabilities stay the model's
  # a strong enough weight puts the rarest training answers first
  assert {d for d, _ in row[:2]} == {"OMIM:236200", "OMIM:999999"}
  with pytest.raises(ValueError, match="needs a prior"):
    first_entry.FirstEntryRanker(model.config, model.vocabulary, RESPONSE, prior_weight=1.0)


def test_model_method_prior_weight_from_metadata_and_missing_prior(export, tmp_path):
  model = export_lib.load_model(export)
  assert model_method.ModelMethod(model, INDEX, batch_size=2).prior_weight == 0.0
  weighted = export_lib.LoadedModel(
      tmp_path, model.config, model.params, model.vocabulary, model.vocabulary_path,
      {**model.metadata, answer_prior.PRIOR_WEIGHT: 0.5})
  with pytest.raises(ValueError, match="python -m rarejax.sample.answer_prior"):
    model_method.ModelMethod(weighted, INDEX, batch_size=2)
  answer_prior.write(tmp_path, {i: 0.25 for i in IDS}, {"provider": "test"})
  method = model_method.ModelMethod(weighted, INDEX, batch_size=2, top_k=4)
  assert method.config["prior_weight"] == 0.5
  # a uniform prior changes nothing but the bookkeeping
  plain = model_method.ModelMethod(model, INDEX, batch_size=2, top_k=4)
  notes = ["A tall boy with long fingers.", "Seizures since infancy."]
  assert ([[c.disease_id for c in d.candidates] for d in method.diagnose(notes)] ==
          [[c.disease_id for c in d.candidates] for d in plain.diagnose(notes)])


def test_prior_weight_flag():
  assert model_method.prior_weights("0,0.5, 1") == [0.0, 0.5, 1.0]
  for bad in ("-1", "x", ",", "nan"):
    with pytest.raises(Exception, match="numbers >= 0"):
      model_method.prior_weights(bad)
