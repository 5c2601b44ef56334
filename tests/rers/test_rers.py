"""RERS: reflection turn, keep rules, synthesis (cache continuation, provenance, determinism, plain
rejection mode, resumption) and the report.

Synthesis runs the real sampler on a tiny random model; what the model "writes" is scripted by a
test vocabulary: `encode` maps words to token ids, `decode` returns the next canned response of
the current call (first sampling, then reflection round 1, 2, ...), tagged with the first sampled
tokens. The grader, filters, KV cache and resume path are all real; only the text is scripted,
so every outcome below is exact.
"""
import dataclasses
import json
import zlib

import jax
import numpy as np
import pytest

from rarejax import cases
from rarejax import export as export_lib
from rarejax import knowledge
from rarejax.data import format as format_lib
from rarejax.data import trajectory as trajectory_lib
from rarejax.evaluate import generation
from rarejax.evaluate import grader
from rarejax.model import config as model_config
from rarejax.model import transformer
from rarejax.rers import filters
from rarejax.rers import reflection
from rarejax.rers import report
from rarejax.rers import synthesize
from rarejax.sample import Sampler
from rarejax.sample import loop

MARFAN, NOONAN = "OMIM:154700", "OMIM:163950"
OBSERVED = ("HP:0001166", "HP:0001083", "HP:0000098", "HP:0001634")  # arachnodactyly, ectopia
EXCLUDED = ("HP:0001250",)  # seizure                        lentis, tall stature, MVP


def _response(reasoning: str, ranked) -> str:
  return format_lib.format_response(reasoning, ranked)


CORRECT = _response("The note describes tall stature and arachnodactyly. Findings known in "
                    "Marfan syndrome: ectopia lentis. Overall, Marfan syndrome explains the "
                    "findings best. Sample {tag}.", [("Marfan syndrome", MARFAN)])
WRONG = _response("The note describes tall stature. Sample {tag}.",
                  [("Noonan syndrome 1", NOONAN), ("Marfan syndrome", MARFAN)])
LEAKY = _response("As the feedback says, Marfan syndrome fits. Sample {tag}.",
                  [("Marfan syndrome", MARFAN)])
UNSUPPORTED = _response("The note describes hypsarrhythmia. Sample {tag}.",
                        [("Marfan syndrome", MARFAN)])
# Per call: the canned response of each output row, in order (cycled).
SCRIPT = {"generate": [WRONG, CORRECT, LEAKY, UNSUPPORTED, WRONG, WRONG],
          "resume1": [WRONG], "resume2": [CORRECT]}


class ScriptedVocabulary:
  """Word-level `encode`; `decode` gives the next canned response of the current call."""
  eos_id, bos_id, pad_id = 1, 3, 0

  def __init__(self, script):
    self.script, self.phase, self.row = script, "generate", 0

  def start(self, phase: str) -> None:
    self.phase, self.row = phase, 0

  def encode(self, text: str) -> list[int]:
    return [4 + zlib.crc32(w.encode()) % 250 for w in text.split()]

  def decode(self, ids) -> str:
    canned = self.script[self.phase]
    text = canned[self.row % len(canned)]
    self.row += 1
    return text.replace("{tag}", "-".join(map(str, ids[:3])))


class SpySampler(Sampler):
  """The real sampler, recording generate/resume calls and the prefills each one ran."""

  def __init__(self, *args, vocabulary, fail_on_generate: int = 0, answers=None, **kwargs):
    super().__init__(*args, **kwargs)
    self.vocabulary, self.fail_on_generate = vocabulary, fail_on_generate
    self.answers = answers  # prompt ids → the response every sample of it "writes"
    self.calls = []

  def generate(self, params, prompts, **kwargs):
    if len(self.calls_of("generate")) + 1 == self.fail_on_generate:
      raise KeyboardInterrupt("simulated preemption")
    if self.answers is not None:
      self.vocabulary.script["generate"] = [self.answers[tuple(p)] for p in prompts
                                            for _ in range(kwargs["num_samples"])]
    self.vocabulary.start("generate")
    return self._record("generate", prompts, super().generate, params, prompts, **kwargs)

  def resume(self, params, state, tokens, **kwargs):
    rounds = 0
    for call in reversed(self.calls):
      if call["kind"] == "generate":
        break
      rounds += 1
    self.vocabulary.start(f"resume{rounds + 1}")
    return self._record("resume", tokens, super().resume, params, state, tokens, **kwargs)

  def _record(self, kind, tokens, fn, *args, **kwargs):
    before = PREFILLS["calls"]
    out = fn(*args, **kwargs)
    self.calls.append({"kind": kind, "tokens": [list(t) for t in tokens],
                       "prefills": PREFILLS["calls"] - before, "rows": len(out.lengths)})
    return out

  def calls_of(self, kind):
    return [c for c in self.calls if c["kind"] == kind]


PREFILLS = {"calls": 0}


@pytest.fixture(autouse=True)
def count_prefills(monkeypatch):
  """Counts every prefill of a prompt into a fresh cache (rarejax.sample.loop.prefill)."""
  original = loop.prefill

  def counting(*args, **kwargs):
    PREFILLS["calls"] += 1
    return original(*args, **kwargs)
  monkeypatch.setattr(loop, "prefill", counting)


@pytest.fixture(scope="module")
def model():
  config = model_config.preset("tiny_llama")
  return config, jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))


@pytest.fixture(scope="module")
def tools(kb):
  return knowledge.GroundingIndex.from_knowledge(kb), filters.TrajectoryFilter(kb)


@pytest.fixture(scope="module")
def marfan_cases(kb):
  base = [cases.Case(id=f"marfan-{i}", note="", gold_ids=(MARFAN,), observed=OBSERVED,
                     excluded=EXCLUDED, age=12.0 + i, sex="FEMALE", source="simulated",
                     split="train") for i in range(3)]
  return cases.render_cases(base, kb, cases.RenderConfig(synonym_rate=0, layperson_rate=0))


def _synthesizer(kb, model, tools, script=SCRIPT, fail_on_generate=0, instruction="full",
                 **overrides):
  config, params = model
  vocabulary = ScriptedVocabulary(script)
  sampler = SpySampler(config, cache_length=512, max_batch_size=2, vocabulary=vocabulary,
                       fail_on_generate=fail_on_generate)
  settings = dict(samples=2, rounds=2, reflect_per_case=1, max_new_tokens=6, mask_rate=0.0,
                  chunk_cases=3, temperature=1.0, seed=0)
  teacher = synthesize.Teacher(sampler=sampler, params=params, vocabulary=vocabulary,
                               name="tiny-teacher")
  return synthesize.Synthesizer(teacher, kb, synthesize.SynthesisConfig(**{**settings,
                                                                           **overrides}),
                                index=tools[0], trajectory_filter=tools[1],
                                instruction=instruction)


def _run(synthesizer, marfan_cases, folder):
  chunks = synthesizer.run(marfan_cases, folder)
  return [t for c in chunks for t in c.trajectories], [s for c in chunks for s in c.cases]


# ---- reflection turn --------------------------------------------------------------------------


def test_reflection_turn_gives_gold_knowledge_and_contrasts_the_wrong_answer(kb, tools):
  grade = grader.grade(WRONG, [MARFAN], tools[0])
  wrong = reflection.top_wrong_candidate(grade, kb)
  assert wrong.id == NOONAN
  first = reflection.reflection_turn(kb, MARFAN, "Marfan syndrome", wrong, 1)
  assert first.startswith("\n\nFeedback: the answer above is wrong; Noonan syndrome 1 "
                          f"({NOONAN}) is not the diagnosis.")
  assert first.endswith(format_lib.RESPONSE_HEADER)
  assert f"Reference knowledge about Marfan syndrome ({MARFAN}):" in first
  assert "Inheritance of Marfan syndrome: autosomal dominant inheritance." in first
  assert "arachnodactyly (frequent, 30–79%)" in first  # a key finding with its frequency band
  assert "Unlike Marfan syndrome, Noonan syndrome 1 typically shows" in first
  second = reflection.reflection_turn(kb, MARFAN, "Marfan syndrome", wrong, 2)
  assert "still wrong" in second and "Reference knowledge about" not in second
  assert reflection.gold_knowledge(kb, "OMIM:999999999") == []


# ---- keep rules -------------------------------------------------------------------------------

# From the turn: a list of facts (terms cut it into short runs) and a sentence of its prose.
TURN_FACTS = ("dural ectasia (very frequent, 80–99%); aortic root aneurysm (frequent, 30–79%); "
              "thoracic lordosis")
TURN_PROSE = "Arguing against it: the absence of its most frequent findings"


@pytest.mark.parametrize("response, failed", [
    (CORRECT, ()),
    # the turn's facts, naming the gold disease's findings the note lacks: not from the note
    (CORRECT.replace("Sample", f"Marfan shows {TURN_FACTS}. Sample"), ("findings_supported",)),
    (WRONG, ("correct",)),
    (CORRECT.replace("</answer>", ""), ("well_formed",)),
    (LEAKY, ("no_feedback_phrase",)),
    (CORRECT.replace("Sample", f"{TURN_PROSE}. Sample"), ("no_hint_copy",)),
    (UNSUPPORTED, ("findings_supported",)),
])
def test_filters_accept_a_clean_trajectory_and_reject_each_planted_problem(
    kb, tools, marfan_cases, response, failed):
  index, trajectory_filter = tools
  case = marfan_cases[0]
  turn = reflection.reflection_turn(kb, MARFAN, "Marfan syndrome", None, 1)
  assert TURN_FACTS in turn and TURN_PROSE in turn
  parsed = format_lib.parse_response(response)
  judgment = trajectory_filter.judge(
      response, parsed, grader.grade(parsed, case.gold_ids, index),
      trajectory_filter.note_context(case.note, (*case.observed, *case.excluded)), turn,
      cases.forbidden_names(case, kb) + reflection.turn_terms(kb, [MARFAN]))
  assert judgment.failed == failed and judgment.kept == (not failed)
  assert set(judgment.to_json()) == set(filters.RULES)


def test_copied_runs_skip_names_ids_and_text_the_note_holds():
  shown = "Marfan syndrome: tall stature and long thin fingers are frequent findings in it"
  response = "In Marfan syndrome tall stature and long thin fingers are frequent"
  assert filters.copied_runs(response, shown, "", 9) == [
      "marfan syndrome tall stature and long thin fingers are",
      "syndrome tall stature and long thin fingers are frequent"]
  names = filters.name_pattern(["Marfan syndrome"])
  assert filters.copied_runs(response, shown, "", 9, names) == []  # a name cuts the run
  with_id = "OMIM:154700 tall stature and long thin fingers are frequent"
  assert filters.copied_runs(with_id, f"OMIM:154700 {shown}", "", 9) == []  # so does an id
  copied = "tall stature and long thin fingers are frequent findings"
  assert filters.copied_runs(copied, shown, "", 9, names) == [copied]
  assert filters.copied_runs(copied, shown, f"Note: {copied}.", 9, names) == []


def test_findings_annotated_for_a_cited_disease_pass_unless_the_feedback_named_them(
    kb, tools, marfan_cases):
  index, trajectory_filter = tools
  context = trajectory_filter.note_context(marfan_cases[0].note)
  # Dural ectasia is not in the note but is annotated for Marfan syndrome, the cited disease.
  response = _response("Dural ectasia would also fit.", [("Marfan syndrome", MARFAN)])
  parsed = format_lib.parse_response(response)
  judgment = trajectory_filter.judge(response, parsed, grader.grade(parsed, [MARFAN], index),
                                     context)
  assert judgment.kept
  assert "HP:0001166" in context.supported and "HP:0000001" in context.supported  # + ancestors
  # After a reflection turn that named dural ectasia, the same reasoning asserts the feedback's
  # finding about the patient: accepted from the note alone.
  turn = reflection.reflection_turn(kb, MARFAN, "Marfan syndrome", None, 1)
  assert "dural ectasia" in turn
  judgment = trajectory_filter.judge(response, parsed, grader.grade(parsed, [MARFAN], index),
                                     context, turn)
  verdict = next(v for v in judgment.verdicts if v.rule == "findings_supported")
  assert not verdict.passed and "named by the feedback" in verdict.detail, verdict


# ---- synthesis --------------------------------------------------------------------------------


def test_reflection_continues_from_the_kept_cache_without_prefill(kb, model, tools, marfan_cases,
                                                                  tmp_path):
  synthesizer = _synthesizer(kb, model, tools)
  trajectories, _ = _run(synthesizer, marfan_cases, tmp_path)
  sampler, vocabulary = synthesizer.teacher.sampler, synthesizer.teacher.vocabulary
  kinds = [c["kind"] for c in sampler.calls]
  assert kinds == ["generate", "resume", "resume"]
  generate, *resumes = sampler.calls
  # Each prompt is prefilled once (max_batch_size 2 = one prompt's K=2 rows per chunk) and its
  # cache repeated for the K samples; reflection never re-reads anything.
  assert generate["prefills"] == 3 and generate["rows"] == 3 * 2
  assert all(r["prefills"] == 0 for r in resumes)
  reflected = [t for t in trajectories if t.method == "reflection"]
  assert len(reflected) == 1
  turns = reflected[0].provenance["reflection_turns"]
  # Each resume appends only its reflection turn to the one row being continued.
  assert [r["tokens"] for r in resumes] == [[vocabulary.encode(t)] for t in turns]
  assert turns[0].startswith("\n\nFeedback: the answer above is wrong; Noonan syndrome 1")


def test_trajectories_and_statistics_follow_the_script(kb, model, tools, marfan_cases, tmp_path):
  trajectories, stats = _run(_synthesizer(kb, model, tools), marfan_cases, tmp_path)
  # case 0: WRONG, CORRECT → kept in round 0; case 1: LEAKY, UNSUPPORTED → correct answers are
  # not reflected; case 2: WRONG, WRONG → one reflected: WRONG (round 1), CORRECT (round 2).
  assert [(t.case_id, t.provenance["round"]) for t in trajectories] == [("marfan-0", 0),
                                                                         ("marfan-2", 2)]
  assert [s["kept"] for s in stats] == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
  assert [s["sampled"] for s in stats] == [[2, 0, 0], [2, 0, 0], [2, 1, 1]]
  summary = report.summarize(stats)
  assert summary["n_covered"] == 2 and summary["sampled_responses"] == 8
  assert [r["rejected"] for r in summary["rounds"]] == [
      {"correct": 3, "no_feedback_phrase": 1, "findings_supported": 1}, {"correct": 1}, {}]
  assert [r["newly_covered"] for r in summary["rounds"]] == [1, 0, 1]
  markdown = report.markdown(summary, {"mode": "rers"})
  assert "| 2 | 1 | 1 | 100.0% | 1 |" in markdown and "no_feedback_phrase" in markdown


def test_provenance_is_complete(kb, model, tools, marfan_cases, tmp_path):
  trajectories, _ = _run(_synthesizer(kb, model, tools), marfan_cases, tmp_path)
  for t in trajectories:
    p = t.provenance
    assert t.teacher == "tiny-teacher" and t.kb_digest == kb.version.digest
    assert t.gold_ids == (MARFAN,) and t.reward == 1.0 and 0 <= t.sample_index < 2
    assert t.method == ("rejection" if p["round"] == 0 else "reflection")
    assert {"round", "mode", "samples", "rounds", "reflect_per_case", "seed", "temperature",
            "top_p", "max_new_tokens", "masked_findings", "gold_rank", "filters",
            "filter_config", "reflection_turns", "failed_responses", "case_source"} <= set(p)
    assert all(v["passed"] for v in p["filters"].values()) and set(p["filters"]) == set(
        filters.RULES)
    assert len(p["reflection_turns"]) == len(p["failed_responses"]) == p["round"]
    # Re-paired with the original prompt: the note, never the feedback.
    case = next(c for c in marfan_cases if c.id == t.case_id)
    assert t.prompt == format_lib.build_prompt(case.note) and "Feedback" not in t.prompt
    assert "Feedback" not in t.response


def test_prompts_follow_the_experiment_instruction_style(kb, model, tools, marfan_cases,
                                                       tmp_path):
  synthesizer = _synthesizer(kb, model, tools, instruction="none")
  trajectories, _ = _run(synthesizer, marfan_cases, tmp_path)
  prompts = {c.id: format_lib.build_prompt(c.note, instruction="none") for c in marfan_cases}
  assert trajectories and all(t.prompt == prompts[t.case_id] for t in trajectories)
  assert all(t.provenance["prompt_instruction"] == "none" for t in trajectories)
  vocabulary = synthesizer.teacher.vocabulary
  first = synthesizer.teacher.sampler.calls_of("generate")[0]
  assert first["tokens"] == [generation.prompt_ids(vocabulary, prompts[c.id])
                             for c in marfan_cases]  # what the teacher read
  full = _synthesizer(kb, model, tools)
  assert full.fingerprint(marfan_cases) != synthesizer.fingerprint(marfan_cases)
  with pytest.raises(ValueError, match="instruction must be one of"):
    _synthesizer(kb, model, tools, instruction="short")


def test_synthesis_is_deterministic_given_the_seed(kb, model, tools, marfan_cases, tmp_path):
  def run(seed, folder):
    trajectories, _ = _run(_synthesizer(kb, model, tools, seed=seed, mask_rate=0.5),
                           marfan_cases, tmp_path / folder)
    return [t.to_json() for t in trajectories]
  first = run(0, "a")
  assert run(0, "b") == first
  other = run(1, "c")
  assert other != first  # other samples (the tagged tokens) and other masks
  assert any(t["provenance"]["masked_findings"] for t in first + other)


def test_plain_rejection_mode_spends_the_same_budget_without_reflection(kb, model, tools,
                                                                         marfan_cases, tmp_path):
  synthesizer = _synthesizer(kb, model, tools, mode="rejection")
  trajectories, stats = _run(synthesizer, marfan_cases, tmp_path)
  calls = synthesizer.teacher.sampler.calls
  assert [c["kind"] for c in calls] == ["generate"] and calls[0]["rows"] == 3 * 4  # K + R·M
  assert [s["sampled"] for s in stats] == [[4]] * 3  # one round: no reflection
  assert trajectories and all(t.method == "rejection" and not t.provenance["reflection_turns"]
                              for t in trajectories)
  assert synthesizer.config.budget_per_case == 4


def test_a_preempted_run_resumes_at_the_first_unfinished_chunk(kb, model, tools, marfan_cases,
                                                               tmp_path):
  straight, _ = _run(_synthesizer(kb, model, tools, chunk_cases=1), marfan_cases,
                     tmp_path / "straight")
  with pytest.raises(KeyboardInterrupt):
    _run(_synthesizer(kb, model, tools, chunk_cases=1, fail_on_generate=2), marfan_cases,
         tmp_path / "resumed")
  assert sorted(p.name for p in (tmp_path / "resumed").glob("chunk-*")) == [
      "chunk-00000.json", "chunk-00000.jsonl"]
  again = _synthesizer(kb, model, tools, chunk_cases=1)
  resumed, stats = _run(again, marfan_cases, tmp_path / "resumed")
  assert len(again.teacher.sampler.calls_of("generate")) == 2  # chunks 1 and 2 only
  assert len(stats) == 3 and [t.to_json() for t in resumed] == [t.to_json() for t in straight]
  # Another configuration in the same folder starts over.
  other = _synthesizer(kb, model, tools, chunk_cases=1, seed=5)
  _run(other, marfan_cases, tmp_path / "resumed")
  assert len(other.teacher.sampler.calls_of("generate")) == 3


def test_masking_rerenders_the_note_without_the_masked_findings(kb, marfan_cases):
  case = marfan_cases[0]
  masked = synthesize.mask_findings(case, 1.0, 2, np.random.default_rng(0))
  assert masked == OBSERVED[:2]
  shown = synthesize.masked_case(case, masked, kb)
  assert shown.observed == OBSERVED[2:] and shown.note != case.note
  for hpo_id in OBSERVED:
    name = kb.ontology.name(hpo_id).lower()
    assert name in case.note.lower()
    assert (name in shown.note.lower()) == (hpo_id not in masked)
  free_text = dataclasses.replace(case, provenance={})  # a note rarejax did not write
  assert synthesize.mask_findings(free_text, 1.0, 0, np.random.default_rng(0)) == ()


def test_bad_config_is_refused():
  with pytest.raises(ValueError, match="mode"):
    synthesize.SynthesisConfig(mode="greedy")
  with pytest.raises(ValueError, match="samples"):
    synthesize.SynthesisConfig(samples=0)
  with pytest.raises(ValueError, match="required_rank"):
    filters.FilterConfig(required_rank=0)


def test_chunk_files_round_trip(tmp_path, kb, model, tools, marfan_cases):
  synthesizer = _synthesizer(kb, model, tools)
  result = synthesizer.chunk(marfan_cases, 0)
  synthesize.save_chunk(tmp_path, 0, result)
  loaded = synthesize.load_chunk(tmp_path, 0)
  assert [t.to_json() for t in loaded.trajectories] == [t.to_json() for t in result.trajectories]
  assert loaded.cases == json.loads(json.dumps(result.cases))
  assert synthesize.load_chunk(tmp_path, 1) is None


# ---- the stage --------------------------------------------------------------------------------


@pytest.mark.integration
def test_rers_stage_feeds_trajectory_sft_in_the_tiny_pipeline(tmp_path, monkeypatch):
  """data → cpt → rers → sft on ['knowledge_qa', 'trajectories'] with prompts without the system
  instruction; the teacher is the real cpt export whose text is scripted to be each case's
  reference response (keyed by the dataset's prompts: RERS must build the same ones)."""
  from rarejax import main as main_lib  # pylint: disable=g-import-not-at-top
  from rarejax import experiment  # pylint: disable=g-import-not-at-top
  from rarejax.data import builders  # pylint: disable=g-import-not-at-top
  from rarejax.rers import stage as rers_stage  # pylint: disable=g-import-not-at-top
  real_load_teacher = rers_stage.load_teacher

  def scripted_teacher(export, vocabulary, cache_length, max_batch_size):
    teacher = real_load_teacher(export, vocabulary, cache_length, max_batch_size)
    scripted = ScriptedVocabulary(dict(SCRIPT))
    _, data, _ = experiment.experiment_data(tmp_path)
    builder = builders.builder_for(data.simulated, data.data_dir)
    answers = {tuple(generation.prompt_ids(scripted, e["prompt"])): e["response"]
               for e in builders.examples(builder, "train")}
    sampler = SpySampler(teacher.sampler.config, cache_length=cache_length,
                         max_batch_size=max_batch_size, vocabulary=scripted, answers=answers)
    return dataclasses.replace(teacher, sampler=sampler, vocabulary=scripted)
  monkeypatch.setattr(rers_stage, "load_teacher", scripted_teacher)
  bindings = ["run_pipeline.stages = ['data', 'cpt', 'rers', 'sft']",
              "DataSpec.instruction = 'none'",
              "sft/train_stage.tasks = ['knowledge_qa', 'trajectories']",
              "rers/rers_stage.num_cases = 6", "rers/rers_stage.cache_length = 512",
              "rers/SynthesisConfig.samples = 2",  # apply with no rers_stage.config binding "rers/SynthesisConfig.max_new_tokens = 4",
              "rers/SynthesisConfig.mask_rate = 0.0"]
  args = ["--workdir", str(tmp_path), "--gin_file", "experiments/tiny.gin"]
  assert main_lib.main(args + [a for b in bindings for a in ("--gin_bindings", b)]) == 0
  result = json.loads((tmp_path / "rers" / "result.json").read_text())
  # Both samples of a case are its reference response: one kept, one a duplicate.
  assert result["n_trajectories"] == 6 and result["coverage"] == 1.0
  report_json = json.loads((tmp_path / "rers" / "report.json").read_text())
  assert report_json["summary"]["rounds"][0]["rejected"] == {"duplicate": 6}
  assert "Cases covered: 6 / 6" in (tmp_path / "rers" / "report.md").read_text()
  assert (tmp_path / "data" / "rarejax_trajectories" / result["dataset"]).is_dir()
  sft = json.loads((tmp_path / "sft" / "result.json").read_text())
  assert sft["stopped"] == "completed" and sft["steps"] == 6
  trajectories = trajectory_lib.read_trajectories(result["trajectories"])
  assert all(t.prompt.startswith("Clinical note:\n") for t in trajectories)
  for stage in ("cpt", "sft"):  # what `rarejax evaluate` / `diagnose` read back
    metadata = export_lib.read_metadata(tmp_path / stage / "export")
    assert metadata[export_lib.PROMPT_INSTRUCTION] == "none"
