"""Tests for the model as an evaluation method: the grading path on hand-made answers (ranks, top-k,
synonyms and xrefs grounded), the first-line confidence, the thinking budget, and a tiny evaluation
run with a random-init export next to Resnik that writes the whole report."""
import dataclasses
import json
import math
import pathlib

import jax
import pytest

from rarejax import export as export_lib
from rarejax import release
from rarejax.cases import Case, PatientSimulator, render_cases, write_jsonl
from rarejax.data import format as fmt
from rarejax.data import vocab as vocab_lib
from rarejax.evaluate import generation, grader, model_method, report, run
from rarejax.evaluate import benchmarks
from rarejax.knowledge import grounding
from rarejax.model import config as model_config
from rarejax.model import transformer
from rarejax.train import checkpoint

INDEX = grounding.GroundingIndex(
    [("OMIM:154700", ["Marfan syndrome", "MFS"]), ("ORPHA:558", ["Marfan syndrome"]),
     ("OMIM:609192", ["Loeys-Dietz syndrome 1"]), ("OMIM:236200", ["Homocystinuria"]),
     ("OMIM:607014", ["Mucopolysaccharidosis type IH", "Hurler syndrome"])],
    xrefs={"OMIM:154700": ["ORPHA:558"]})
VOCAB_TEXTS = [fmt.SYSTEM_INSTRUCTION, fmt.build_prompt("A tall boy with long fingers."),
               fmt.format_response("Findings known in Marfan syndrome: arachnodactyly.",
                                   [("Marfan syndrome", "OMIM:154700"),
                                    ("Loeys-Dietz syndrome 1", "OMIM:609192")]),
               "Arachnodactyly, ectopia lentis, scoliosis, tall stature, café-au-lait spots."]


def tiny_export(folder: pathlib.Path, knowledge_stamp: dict | None = None) -> pathlib.Path:
  """A random-init tiny Llama export with its SentencePiece vocabulary (as training writes it)."""
  vocab_path = vocab_lib.train_sentencepiece(VOCAB_TEXTS * 3, folder / "spm.model",
                                             vocab_size=700)
  vocabulary = vocab_lib.load_vocabulary(vocab_path)
  config = model_config.preset("tiny_llama", vocab_size=vocabulary.vocab_size, init_std=0.2)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  export = folder / "export"
  checkpoint.export_params(export, params, {"model_config": config.to_dict(),
                                            "vocabulary": str(vocab_path),
                                            "knowledge": knowledge_stamp or {}})
  return export


@pytest.fixture(scope="module")
def export(kb, tmp_path_factory):
  return tiny_export(tmp_path_factory.mktemp("model"), kb.version.as_dict())


@pytest.fixture(scope="module")
def method(export):
  model = export_lib.load_model(export)
  return model_method.ModelMethod(model, INDEX, generation.GenerationConfig(max_new_tokens=12),
                                  batch_size=4, max_cache_length=1024)


def _response(method, text: str, logprob: float = 0.0) -> generation.Response:
  tokens = tuple(method.model.vocabulary.encode(text))
  return generation.Response(text, tokens, (logprob,) * len(tokens))


def _answer(*entries: str) -> str:
  lines = "\n".join(f"{i}. {e}" for i, e in enumerate(entries, 1))
  return f"<think>\nreasoning\n</think>\n<answer>\n{lines}\n</answer>"


def test_metrics_on_hand_made_answers_follow_the_grader(method):
  golds = ["OMIM:154700", "OMIM:154700", "OMIM:236200", "OMIM:154700", "OMIM:154700"]
  texts = [_answer("Marfan syndrome (OMIM:154700)", "Homocystinuria"),
           _answer("Loeys-Dietz syndrome 1", "Homocystinuria", "MFS"),  # synonym at rank 3
           _answer("Marfan syndrome (OMIM:154700)"),                    # gold absent
           "1. Homocystinuria\n2. Marfan syndrome",                     # no tags: fallback list
           _answer(*[f"Unknown disease {i}" for i in range(10)], "Marfan syndrome")]  # rank 11
  cases = [Case(id=f"c{i}", note="A note.", gold_ids=(g,)) for i, g in enumerate(golds)]
  outputs = [method.output(c, method.read(_response(method, t))) for c, t in zip(cases, texts)]
  ranks = [o.gold_rank(c.gold_ids, INDEX.equivalence) for o, c in zip(outputs, cases)]
  assert ranks == [1, 3, None, 2, None]
  for text, case, rank in zip(texts[:4], cases, ranks):  # the one grader agrees within top-k
    assert grader.grade(text, case.gold_ids, INDEX).gold_rank == rank
  assert grader.grade(texts[4], cases[4].gold_ids, INDEX).gold_rank == 11  # beyond top_k=10
  assert len(outputs[4].candidates) == 10
  assert [o.well_formed for o in outputs] == [True, True, True, False, True]
  bench = benchmarks.Benchmark("hand", tuple(cases), "5 hand-made answers",
                               from_publications=False)
  result = report.BenchmarkResult(bench, [report.MethodResult(
      method.name, method.config, outputs, ranks)], [1] * 5, None)
  metrics = report.metrics_json([result], {}, n_bootstrap=20)["benchmarks"]["hand"][
      "methods"]["model.text"]["metrics"]["all"]
  assert metrics["top1"]["value"] == pytest.approx(1 / 5)
  assert metrics["top3"]["value"] == pytest.approx(3 / 5)
  assert metrics["mrr"]["value"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 5)


def test_synonyms_and_xrefs_ground_to_ids_with_primary_labels(method):
  diagnosis = method.read(_response(method, _answer(
      "Hurler syndrome", "Marfan syndrome (ORPHA:558)", "Marfan syndrome (OMIM:154700)",
      "Some unknown thing")))
  ids = [c.disease_id for c in diagnosis.candidates]
  assert ids == ["OMIM:607014", "ORPHA:558", None]  # the OMIM repeat of ORPHA:558 collapses
  assert diagnosis.candidates[0].label == "Mucopolysaccharidosis type IH"
  assert [e.grounding.kind for e in diagnosis.ranked] == ["exact", "id", "none"]
  output = method.output(Case(id="c", note="n", gold_ids=("OMIM:154700",)), diagnosis)
  assert output.gold_rank(["OMIM:154700"], INDEX.equivalence) == 2


def test_confidence_is_the_probability_of_the_first_answer_line(method):
  vocabulary = method.model.vocabulary
  head, line, tail = ("<think>\nr\n</think>\n<answer>\n", "1. Homocystinuria (OMIM:236200)",
                      "\n2. MFS\n</answer>")
  parts = [list(vocabulary.encode(p)) for p in (head, line, tail)]
  tokens = tuple(parts[0] + parts[1] + parts[2])
  logprobs = (-5.0,) * len(parts[0]) + (-0.1,) * len(parts[1]) + (-5.0,) * len(parts[2])
  response = generation.Response(vocabulary.decode(list(tokens)), tokens, logprobs)
  assert response.text == head + line + tail
  diagnosis = method.read(response)
  assert diagnosis.candidates[0].confidence == pytest.approx(math.exp(-0.1 * len(parts[1])))
  assert diagnosis.candidates[1].confidence is None
  assert method.read(_response(method, "no answer at all")).candidates == ()


def test_model_ranks_a_batch_of_notes(method):
  notes = ["Tall boy, arachnodactyly.", "Ectopia lentis and scoliosis; Zürich.", "Tall stature."]
  cases = [Case(id=f"c{i}", note=n, gold_ids=("OMIM:154700",)) for i, n in enumerate(notes)]
  outputs = method.rank(cases)
  assert [o.case_id for o in outputs] == ["c0", "c1", "c2"]
  assert all(isinstance(o.raw_text, str) and not o.flags for o in outputs)
  again = method.diagnose(notes[1:2])[0]  # greedy: the same answer alone as in a batch
  assert again.response.text == outputs[1].raw_text
  assert all(-1e9 < lp <= 0 for lp in again.response.logprobs)


def test_a_note_too_long_for_the_cache_is_cut(method):
  vocabulary = method.model.vocabulary
  prompt, cut = generation.fit_prompt(vocabulary, "Arachnodactyly. " * 400, 400)
  assert cut and len(generation.prompt_ids(vocabulary, prompt)) <= 400
  assert "Arachnodactyly." in prompt and prompt.endswith(fmt.RESPONSE_HEADER)
  assert generation.fit_prompt(vocabulary, "Short note.", 400) == (fmt.build_prompt(
      "Short note."), False)
  with pytest.raises(ValueError, match="prompt template alone"):
    generation.fit_prompt(vocabulary, "Short note.", 20)
  bare, cut = generation.fit_prompt(vocabulary, "Arachnodactyly. " * 400, 400, 10, "none")
  assert cut and len(generation.prompt_ids(vocabulary, bare)) <= 400
  assert bare.startswith("Clinical note:\nArachnodactyly.")
  # The tokens the instruction took go to the note.
  assert len(bare) > len(prompt.removeprefix(fmt.SYSTEM_INSTRUCTION + "\n\n"))


def test_prompts_follow_the_style_the_export_records(method, caplog):
  assert export_lib.PROMPT_INSTRUCTION not in method.model.metadata  # an older export
  assert method.instruction == "full" and method.model.prompt_instruction == "full"
  assert method.prompt("Short note.") == (fmt.build_prompt("Short note."), False)
  model = dataclasses.replace(method.model, metadata={**method.model.metadata,
                                                      export_lib.PROMPT_INSTRUCTION: "none"})
  bare = model_method.ModelMethod(model, INDEX, method.generation, max_cache_length=1024)
  assert bare.instruction == "none" and bare.config["prompt_instruction"] == "none"
  assert bare.prompt("Short note.") == (fmt.build_prompt("Short note.", instruction="none"), False)
  asked = model_method.ModelMethod(model, INDEX, method.generation, max_cache_length=1024,
                                   instruction="full")  # e.g. the eval stage's DataSpec
  assert asked.prompt("Short note.")[0] == fmt.build_prompt("Short note.")
  assert "trained on 'none' prompts but is asked with 'full'" in caplog.text
  with pytest.raises(ValueError, match="instruction must be one of"):
    model_method.ModelMethod(model, INDEX, method.generation, instruction="short")


def test_an_unknown_prompt_style_in_metadata_is_refused(tmp_path):
  (tmp_path / "params").mkdir()
  (tmp_path / "metadata.json").write_text(json.dumps(
      {"model_config": {}, export_lib.PROMPT_INSTRUCTION: "terse"}))
  with pytest.raises(ValueError, match=r"metadata.json: 'prompt_instruction' must be one of"):
    export_lib.read_metadata(tmp_path)


def _eval_jsonl(kb, tmp_path):
  simulator = PatientSimulator(kb)
  diseases = ["OMIM:154700", "OMIM:219700", "OMIM:143100"]
  cases = render_cases(simulator.simulate_many(diseases, 1, seed=3), kb, seed=3)
  cases = [dataclasses.replace(c, pmid=f"PMID:7000{i}") for i, c in enumerate(cases)]
  write_jsonl(cases, tmp_path / "eval.jsonl")
  return cases


def _run_model(tmp_path, export, out, *flags):
  return run.main(["--benchmark", f"jsonl:{tmp_path / 'eval.jsonl'}", "--methods", "resnik",
                   "--modes", "oracle,text", "--checkpoint", str(export), "--max_new_tokens",
                   "12", "--max_cache_length", "1024", "--model_batch_size", "4",
                   "--n_bootstrap", "20", "--out", str(out), "--quiet", *flags])


def test_a_dishonest_export_is_refused_and_nothing_is_written(kb, export, tmp_path, capsys):
  _eval_jsonl(kb, tmp_path)
  out = tmp_path / "out"
  with pytest.raises(SystemExit) as exit_info:
    _run_model(tmp_path, export, out)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2
  assert f"refusing to evaluate {export}: its training knowledge is not_honest" in err
  assert "--allow_dishonest" in err and not out.exists()


def test_evaluation_run_with_the_model_next_to_resnik_writes_the_report(kb, export, tmp_path,
                                                                        capsys):
  cases = _eval_jsonl(kb, tmp_path)
  out = tmp_path / "out"
  assert _run_model(tmp_path, export, out, "--allow_dishonest") == 0
  captured = capsys.readouterr()
  assert "| model.text | 3 |" in captured.out
  assert "training knowledge is not_honest" in captured.err  # export knew the 3 publications
  doc = json.loads((out / "metrics.json").read_text())
  methods = doc["benchmarks"]["jsonl"]["methods"]
  assert list(methods) == ["model.text", "resnik.oracle", "resnik.text"]
  model = methods["model.text"]
  assert model["n_applicable"] == 3 and model["config"]["kind"] == "model"
  assert model["config"]["knowledge_check"]["status"] == "not_honest"
  assert model["config"]["generation"]["max_new_tokens"] == 12
  responses = (out / "responses" / "jsonl" / "model.text.jsonl").read_text().splitlines()
  assert [json.loads(r)["case_id"] for r in responses] == [c.id for c in cases]
  markdown = (out / "report.md").read_text()
  assert "- `model.text`: checkpoint" in markdown and "not_honest" in markdown


def test_rankers_get_the_exclusions_of_the_export_and_of_files(kb, tmp_path, capsys):
  _eval_jsonl(kb, tmp_path)
  trained = dataclasses.replace(kb.version, excluded_pmids=(
      "PMID:70000", "PMID:70001", "PMID:70002", "PMID:31772430"))
  export = tiny_export(tmp_path / "model", trained.as_dict(with_pmids=True))
  (tmp_path / "more.txt").write_text("# also excluded\n555\n")
  out = tmp_path / "out"
  assert _run_model(tmp_path, export, out, "--exclude_pmids", str(tmp_path / "more.txt")) == 0
  assert "refusing" not in capsys.readouterr().err
  doc = json.loads((out / "metrics.json").read_text())
  config = doc["provenance"]["config"]
  assert (config["n_evaluated_publications"], config["n_excluded_from_files"],
          config["n_excluded_from_model"], config["n_excluded_pmids"]) == (3, 1, 4, 5)
  stamp = doc["provenance"]["knowledge"]
  assert stamp["n_excluded_pmids"] == 5 and stamp["n_excluded_rows"] > 0  # 31772430: Marfan rows
  model = doc["benchmarks"]["jsonl"]["methods"]["model.text"]
  assert model["config"]["knowledge_check"]["status"] == "honest"


def test_knowledge_check_compares_training_and_evaluation_exclusions(kb):
  evaluated = ("PMID:1", "PMID:2")
  listed = dataclasses.replace(kb.version, excluded_pmids=("PMID:1", "PMID:2", "PMID:3"))
  old_style = dataclasses.replace(kb.version, excluded_pmids=evaluated)
  check = export_lib.knowledge_check
  assert check({"knowledge": listed.as_dict(with_pmids=True)}, evaluated)["status"] == "honest"
  assert check({"knowledge": listed.as_dict(with_pmids=True)}, ["4"])["status"] == "not_honest"
  assert check({"knowledge": old_style.as_dict()}, evaluated)["status"] == "honest"  # same hash
  assert check({"knowledge": kb.version.as_dict()}, ())["status"] == "honest"
  assert check({"knowledge": kb.version.as_dict()}, evaluated)["status"] == "not_honest"
  assert check({}, evaluated)["status"] == "unverified"
  assert check({"knowledge": listed.as_dict()}, evaluated)["status"] == "unverified"  # hash only
  assert export_lib.trained_exclusions({"knowledge": listed.as_dict()}) is None
  # hash only, but the same list as the evaluation knowledge, which holds every evaluated one
  assert check({"knowledge": listed.as_dict()}, evaluated,
               listed.excluded_pmids)["status"] == "honest"
  assert check({"knowledge": listed.as_dict()}, ["PMID:4"],
               listed.excluded_pmids)["status"] == "unverified"


@pytest.mark.parametrize("argv, message", [
    (["--methods", "model"], "method 'model' needs --checkpoint"),
    (["--checkpoint", "/no/such/export"], "checkpoint not found: /no/such/export"),
])
def test_model_flags_give_clear_errors(capsys, tmp_path, monkeypatch, argv, message):
  monkeypatch.setattr(release, "DEFAULT_RELEASE", tmp_path / "no_release")
  with pytest.raises(SystemExit) as exit_info:
    run.main(["--benchmark", "simulated:2:1", "--out", str(tmp_path), *argv])
  assert exit_info.value.code == 2 and message in capsys.readouterr().err
