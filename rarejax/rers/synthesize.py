"""RERS synthesis: K samples per training case, reflection on failures from the cache, filtering.

For each chunk of cases (its trajectories and statistics written atomically, so a stopped run
resumes at the first unfinished chunk):

  mask     each observed finding is hidden with probability mask_rate (at least
           min_kept_findings stay) and the note is re-rendered, with the renderer settings that
           wrote it, from the remaining findings — for structured cases whose note rarejax
           rendered (simulated patients, phenopackets); free-text notes are used as written
  sample   K samples per case (one prefill, shared cache) at the configured temperature
  judge    parse → grade (the one grader) → keep rules (rarejax.rers.filters); identical kept
           responses of one case are kept once
  reflect  (mode 'rers') for every case with nothing kept yet, up to M samples whose answer is
           wrong get a reflection turn (rarejax.rers.reflection) appended to their own KV cache
           (Sampler.resume: no re-prefill) and continue; judged again; up to R rounds

A kept response is paired with the prompt the teacher read before any reflection turn (the
masked note when findings were masked), never with the feedback. Prompts are in the experiment's
instruction style (`Synthesizer(instruction=...)`, the rers stage passes DataSpec.instruction);
reflection turns continue them and carry no instruction of their own. Mode 'rejection' is plain
rejection sampling on the same budget: K + R·M samples per case and no reflection (RERS spends
at most that: reflections go only to cases still uncovered). Every random draw derives from
(seed, chunk, round) or (seed, case id): a run is deterministic given its seed, and a resumed
run writes what an uninterrupted one would.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import pathlib
import time
import zlib
from typing import Any, Sequence

import jax
import numpy as np

from rarejax import atomic_io
from rarejax import cases as cases_lib
from rarejax import knowledge
from rarejax.data import format as format_lib
from rarejax.data import trajectory as trajectory_lib
from rarejax.evaluate import generation
from rarejax.evaluate import grader as grader_lib
from rarejax.rers import filters as filters_lib
from rarejax.rers import reflection
from rarejax.sample import Sampler, SequenceState

MODES = ("rers", "rejection")
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
  """How trajectories are sampled.

  Attributes:
    samples: K, samples per case.
    rounds: R, reflection rounds.
    reflect_per_case: M, failed samples of an uncovered case continued in each round.
    mode: 'rers' (reflect on failures) or 'rejection' (K + R·M plain samples per case).
    temperature, top_k, top_p: sampling knobs (rarejax.sample.sampling).
    max_new_tokens: tokens per response (first response and each reflection) at most.
    mask_rate: chance that each observed finding of a rendered case is hidden.
    min_kept_findings: findings that always stay visible (when the case has that many).
    task, n_ranked: the prompt's task level and differential length (format.build_prompt).
    chunk_cases: cases per chunk (the unit of progress and resumption; the kept KV caches of
      one chunk, chunk_cases · K rows, are in memory at once).
    contrast: name the top wrong candidate's contrasting findings in reflection turns.
    seed: every random draw (masks, samples) derives from it.
  """
  samples: int = 4
  rounds: int = 2
  reflect_per_case: int = 1
  mode: str = "rers"
  temperature: float = 0.8
  top_k: int = 0
  top_p: float = 0.95
  max_new_tokens: int = 300
  mask_rate: float = 0.15
  min_kept_findings: int = 2
  task: str = "differential"
  n_ranked: int = 10
  chunk_cases: int = 16
  contrast: bool = True
  seed: int = 0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"SynthesisConfig.mode must be one of {MODES}, got {self.mode!r}")
    if self.task not in format_lib.TASKS:
      raise ValueError(f"SynthesisConfig.task must be one of {format_lib.TASKS}, got "
                       f"{self.task!r}")
    if min(self.samples, self.reflect_per_case, self.max_new_tokens, self.chunk_cases,
           self.n_ranked) < 1 or min(self.rounds, self.min_kept_findings) < 0:
      raise ValueError("SynthesisConfig needs samples, reflect_per_case, max_new_tokens, "
                       "chunk_cases, n_ranked >= 1 and rounds, min_kept_findings >= 0; got "
                       f"{self}")
    if not 0.0 <= self.mask_rate <= 1.0 or self.temperature < 0:
      raise ValueError(f"SynthesisConfig needs mask_rate in [0, 1] and temperature >= 0, got "
                       f"{self.mask_rate}, {self.temperature}")

  @property
  def budget_per_case(self) -> int:
    """Responses sampled per case at most, in either mode: K + R·M."""
    return self.samples + self.rounds * self.reflect_per_case

  @property
  def first_samples(self) -> int:
    """Samples drawn from the prompt itself: K (rers) or the whole budget (rejection)."""
    return self.samples if self.mode == "rers" else self.budget_per_case

  @property
  def reflection_rounds(self) -> int:
    return self.rounds if self.mode == "rers" else 0


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The model that writes trajectories, and the name its trajectories are stamped with."""
  sampler: Sampler
  params: Any
  vocabulary: generation.Tokenizer
  name: str  # the checkpoint (export path or model name)


@dataclasses.dataclass(frozen=True)
class ChunkResult:
  """Kept trajectories and per-case statistics (JSON dicts, see `_CaseRun.stats`) of a chunk."""
  trajectories: list[trajectory_lib.Trajectory]
  cases: list[dict[str, Any]]


def mask_findings(case: cases_lib.Case, rate: float, min_kept: int,
                  rng: np.random.Generator) -> tuple[str, ...]:
  """Observed findings to hide: each with probability `rate`, while at least `min_kept` stay.
  Only cases whose note rarejax rendered (provenance 'renderer') can be masked."""
  if "renderer" not in case.provenance or not case.observed:
    return ()
  drawn = [h for h, hide in zip(case.observed, rng.random(len(case.observed)) < rate) if hide]
  return tuple(drawn[:max(0, len(case.observed) - min_kept)])


def masked_case(case: cases_lib.Case, masked: Sequence[str],
                kb: knowledge.KnowledgeBase) -> cases_lib.Case:
  """The case without the `masked` findings, its note re-rendered with its renderer settings."""
  if not masked:
    return case
  settings = case.provenance["renderer"]
  config = cases_lib.RenderConfig(**{f.name: settings[f.name]
                                     for f in dataclasses.fields(cases_lib.RenderConfig)})
  hidden = set(masked)
  shown = dataclasses.replace(case, observed=tuple(h for h in case.observed if h not in hidden))
  return dataclasses.replace(shown, note=cases_lib.render_note(shown, kb, config,
                                                               settings["seed"]))


def gold_of(case: cases_lib.Case, kb: knowledge.KnowledgeBase) -> tuple[str, str]:
  """(id, name) of the gold disease the feedback is about: the first gold id the knowledge base
  knows (else the first), named as the knowledge base, the source label or the id says."""
  index = next((i for i, g in enumerate(case.gold_ids) if g in kb.diseases), 0)
  gold_id = case.gold_ids[index]
  labels = case.provenance.get("gold_labels", ())
  name = kb.diseases[gold_id].name if gold_id in kb.diseases else (
      labels[index] if index < len(labels) else gold_id)
  return gold_id, name


@dataclasses.dataclass
class _CaseRun:
  """One case being synthesized: its prompt, note context and running statistics."""
  case: cases_lib.Case
  masked: tuple[str, ...]
  prompt: str
  prompt_ids: list[int]
  context: filters_lib.NoteContext
  gold: tuple[str, str]
  names: list[str]  # every name of the gold disease: never counted as copied text
  sampled: list[int]  # responses judged in each round
  kept_by_round: list[int]
  rejected: list[collections.Counter]  # keep rule → responses failing it, in each round
  skipped: str = ""
  kept: list[trajectory_lib.Trajectory] = dataclasses.field(default_factory=list)
  not_reflected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  tokens: int = 0

  def stats(self) -> dict[str, Any]:
    return {"case_id": self.case.id, "source": self.case.source, "masked": list(self.masked),
            "skipped": self.skipped, "sampled": self.sampled, "kept": self.kept_by_round,
            "tokens": self.tokens, "rejected": [dict(sorted(c.items())) for c in self.rejected],
            "not_reflected": dict(sorted(self.not_reflected.items()))}


@dataclasses.dataclass(frozen=True)
class _Row:
  """One sampled lineage: a first response and the reflections that continued it."""
  run: _CaseRun
  sample: int
  slot: int  # row of the sampler state it lives in
  used: int  # tokens in its cache row: prompt, responses, turns
  responses: tuple[str, ...]
  turns: tuple[str, ...] = ()
  shown_ids: tuple[str, ...] = ()  # wrong candidates the turns named
  grade: grader_lib.GradeResult | None = None
  judgment: filters_lib.Judgment | None = None


class Synthesizer:
  """Writes trajectories for cases with one teacher, one grader and one set of keep rules."""

  def __init__(self, teacher: Teacher, kb: knowledge.KnowledgeBase,
               config: SynthesisConfig = SynthesisConfig(),
               filter_config: filters_lib.FilterConfig = filters_lib.FilterConfig(),
               grader_config: grader_lib.GraderConfig = grader_lib.GraderConfig(),
               index: knowledge.GroundingIndex | None = None,
               trajectory_filter: filters_lib.TrajectoryFilter | None = None,
               instruction: str = "full"):
    """`instruction`: the prompts' style (format.INSTRUCTION_STYLES), the experiment's
    DataSpec.instruction, so trajectories pair with prompts like the SFT data's."""
    self.teacher = teacher
    self.kb = kb
    self.config = config
    self.instruction = format_lib.check_instruction(instruction)
    self.grader_config = grader_config
    self.index = index or knowledge.GroundingIndex.from_knowledge(kb)
    self.filter = trajectory_filter or filters_lib.TrajectoryFilter(kb, filter_config)
    self.stop_ids = generation.stop_ids(teacher.vocabulary)

  # ---- chunks and resumption ----------------------------------------------------------------

  def fingerprint(self, cases: Sequence[cases_lib.Case]) -> dict[str, Any]:
    """Everything a chunk's content depends on; a folder made with another one is restarted."""
    digest = hashlib.sha256(json.dumps([[c.id, c.note, list(c.gold_ids)] for c in cases])
                            .encode()).hexdigest()[:16]
    return {"config": dataclasses.asdict(self.config), "instruction": self.instruction,
            "filter": dataclasses.asdict(self.filter.config),
            "grader": dataclasses.asdict(self.grader_config), "teacher": self.teacher.name,
            "cache_length": self.teacher.sampler.cache_length, "kb": self.kb.version.digest,
            "cases": digest, "n_cases": len(cases)}

  def run(self, cases: Sequence[cases_lib.Case], folder: str | pathlib.Path) -> list[ChunkResult]:
    """Synthesizes every chunk not yet in `folder` (chunk-NNNNN.jsonl + .json); returns all."""
    folder = pathlib.Path(folder)
    _claim(folder, self.fingerprint(cases))
    size = self.config.chunk_cases
    chunks = [cases[i:i + size] for i in range(0, len(cases), size)]
    results, start, fresh = [], time.perf_counter(), 0
    for number, chunk in enumerate(chunks):
      result = load_chunk(folder, number)
      if result is None:
        result = self.chunk(chunk, number)
        save_chunk(folder, number, result)
        fresh += len(chunk)
      results.append(result)
      done = sum(len(r.cases) for r in results)
      left = len(cases) - done
      eta = (time.perf_counter() - start) / fresh * left if fresh else 0.0
      covered = sum(1 for r in results for s in r.cases if sum(s["kept"]))
      logging.info("rers chunk %d/%d: %d/%d cases, %d covered, %d trajectories, ETA %.0f s",
                   number + 1, len(chunks), done, len(cases), covered,
                   sum(len(r.trajectories) for r in results), eta)
    return results

  def chunk(self, cases: Sequence[cases_lib.Case], number: int) -> ChunkResult:
    """Masks, samples, judges and reflects for one chunk of cases."""
    runs = [self._prepare(case) for case in cases]
    active = [run for run in runs if not run.skipped]
    key = jax.random.fold_in(jax.random.key(self.config.seed), number)
    if active:
      rows, state = self._first_round(active, key)
      for round_index in range(1, self.config.reflection_rounds + 1):
        rows, state = self._reflect(rows, state, round_index, key)
        if not rows:
          break
    return ChunkResult([t for run in runs for t in run.kept], [run.stats() for run in runs])

  # ---- steps ----------------------------------------------------------------------------------

  def _prepare(self, case: cases_lib.Case) -> _CaseRun:
    config = self.config
    rng = np.random.default_rng([config.seed, zlib.crc32(case.id.encode())])
    masked = mask_findings(case, config.mask_rate, config.min_kept_findings, rng)
    shown = masked_case(case, masked, self.kb)
    prompt = format_lib.build_prompt(shown.note, config.task, config.n_ranked, self.instruction)
    prompt_ids = generation.prompt_ids(self.teacher.vocabulary, prompt)
    rounds = 1 + config.reflection_rounds
    run = _CaseRun(case=case, masked=masked, prompt=prompt, prompt_ids=prompt_ids,
                   context=self.filter.note_context(shown.note, (*shown.observed,
                                                                 *shown.excluded)),
                   gold=gold_of(case, self.kb), names=cases_lib.forbidden_names(case, self.kb),
                   sampled=[0] * rounds, kept_by_round=[0] * rounds,
                   rejected=[collections.Counter() for _ in range(rounds)])
    if len(prompt_ids) + config.max_new_tokens > self.teacher.sampler.max_tokens_per_row:
      run.skipped = "prompt_too_long"
    return run

  def _sample_knobs(self) -> dict[str, Any]:
    c = self.config
    return dict(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=c.top_k,
                top_p=c.top_p, stop_ids=self.stop_ids)

  def _first_round(self, runs: list[_CaseRun],
                   key: jax.Array) -> tuple[list[_Row], SequenceState | None]:
    """K samples of every prompt (the whole budget in 'rejection' mode), judged."""
    teacher, samples = self.teacher, self.config.first_samples
    out = teacher.sampler.generate(
        teacher.params, [run.prompt_ids for run in runs], num_samples=samples,
        rng=jax.random.fold_in(key, 0), keep_state=self.config.reflection_rounds > 0,
        **self._sample_knobs())
    rows = []
    for slot, (text, length) in enumerate(zip(self._texts(out), out.lengths)):
      run = runs[slot // samples]
      row = _Row(run=run, sample=slot % samples, slot=slot,
                 used=len(run.prompt_ids) + int(length), responses=(text,))
      rows.append(self._judge(row, 0, int(length)))
    return rows, out.state

  def _reflect(self, rows: list[_Row], state: SequenceState, round_index: int,
               key: jax.Array) -> tuple[list[_Row], SequenceState | None]:
    """Continues the picked failures of uncovered cases with a reflection turn, judged."""
    picked = []
    for row in self._failures(rows):
      gold_id, gold_name = row.run.gold
      wrong = reflection.top_wrong_candidate(row.grade, self.kb)
      turn = reflection.reflection_turn(self.kb, gold_id, gold_name, wrong, round_index,
                                        self.config.contrast)
      tokens = list(self.teacher.vocabulary.encode(turn))
      if row.used + len(tokens) + self.config.max_new_tokens > \
          self.teacher.sampler.max_tokens_per_row:
        row.run.not_reflected["no_cache_room"] += 1
        continue
      picked.append((row, turn, tokens, wrong))
    if not picked:
      return [], None
    teacher = self.teacher
    last = round_index == self.config.reflection_rounds
    out = teacher.sampler.resume(
        teacher.params, state.take(np.array([row.slot for row, *_ in picked])),
        [tokens for _, _, tokens, _ in picked], rng=jax.random.fold_in(key, round_index),
        keep_state=not last, **self._sample_knobs())
    new_rows = []
    for slot, ((row, turn, tokens, wrong), text, length) in enumerate(
        zip(picked, self._texts(out), out.lengths)):
      shown_ids = row.shown_ids + ((wrong.id,) if wrong is not None else ())
      new = dataclasses.replace(row, slot=slot, used=row.used + len(tokens) + int(length),
                                responses=row.responses + (text,), turns=row.turns + (turn,),
                                shown_ids=shown_ids, grade=None, judgment=None)
      new_rows.append(self._judge(new, round_index, int(length)))
    return new_rows, out.state

  def _failures(self, rows: list[_Row]) -> list[_Row]:
    """Up to M rows per case with nothing kept whose answer is wrong, well-formed ones first."""
    by_case: dict[int, list[_Row]] = {}
    for row in rows:
      if not row.run.kept and not row.judgment.passed("correct"):
        by_case.setdefault(id(row.run), []).append(row)
    picked = []
    for candidates in by_case.values():
      candidates.sort(key=lambda r: (not r.judgment.passed("well_formed"), r.sample))
      picked += candidates[:self.config.reflect_per_case]
    return picked

  def _texts(self, out) -> list[str]:
    eos = self.teacher.vocabulary.eos_id
    return [self.teacher.vocabulary.decode([t for t in row if t != eos])
            for row in out.to_lists()]

  def _judge(self, row: _Row, round_index: int, length: int) -> _Row:
    """Grades and filters the row's last response; records the verdicts and keeps it if good."""
    run, text = row.run, row.responses[-1]
    run.sampled[round_index] += 1
    run.tokens += length
    parsed = format_lib.parse_response(text)
    grade = grader_lib.grade(parsed, run.case.gold_ids, self.index, self.grader_config)
    terms = run.names + reflection.turn_terms(self.kb, (run.gold[0], *row.shown_ids)) \
        if row.turns else ()
    judgment = self.filter.judge(text, parsed, grade, run.context, "".join(row.turns), terms)
    if not judgment.kept:
      run.rejected[round_index].update(judgment.failed)
    elif any(t.response == text for t in run.kept):
      run.rejected[round_index]["duplicate"] += 1
    else:
      run.kept.append(self._trajectory(row, text, grade, judgment, round_index))
      run.kept_by_round[round_index] += 1
    return dataclasses.replace(row, grade=grade, judgment=judgment)

  def _trajectory(self, row: _Row, text: str, grade: grader_lib.GradeResult,
                  judgment: filters_lib.Judgment, round_index: int) -> trajectory_lib.Trajectory:
    c, run = self.config, row.run
    return trajectory_lib.Trajectory(
        case_id=run.case.id, prompt=run.prompt, response=text, gold_ids=run.case.gold_ids,
        task=c.task, method="rejection" if round_index == 0 else "reflection",
        teacher=self.teacher.name, sample_index=row.sample, reward=grade.rank_reward,
        kb_digest=self.kb.version.digest,
        provenance={
            "round": round_index, "mode": c.mode, "samples": c.samples, "rounds": c.rounds,
            "reflect_per_case": c.reflect_per_case, "first_samples": c.first_samples,
            "seed": c.seed, "temperature": c.temperature, "top_k": c.top_k, "top_p": c.top_p,
            "max_new_tokens": c.max_new_tokens, "prompt_instruction": self.instruction,
            "case_source": run.case.source,
            "masked_findings": list(run.masked), "mask_rate": c.mask_rate,
            "gold_rank": grade.gold_rank, "filters": judgment.to_json(),
            "filter_config": dataclasses.asdict(self.filter.config),
            "reflection_turns": list(row.turns), "failed_responses": list(row.responses[:-1])})


# ---- chunk files ------------------------------------------------------------------------------


def _chunk_paths(folder: pathlib.Path, number: int) -> tuple[pathlib.Path, pathlib.Path]:
  stem = folder / f"chunk-{number:05d}"
  return stem.with_suffix(".jsonl"), stem.with_suffix(".json")


def save_chunk(folder: pathlib.Path, number: int, result: ChunkResult) -> None:
  """Writes a chunk's trajectories, then its statistics (which mark the chunk complete)."""
  trajectories, stats = _chunk_paths(folder, number)
  trajectory_lib.write_trajectories(result.trajectories, trajectories)
  atomic_io.write_atomic(stats, json.dumps({"chunk": number, "cases": result.cases},
                                           sort_keys=True))


def load_chunk(folder: pathlib.Path, number: int) -> ChunkResult | None:
  """A completed chunk, or None when it was never finished."""
  trajectories, stats = _chunk_paths(folder, number)
  if not stats.is_file():
    return None
  return ChunkResult(trajectory_lib.read_trajectories(trajectories),
                     json.loads(stats.read_text())["cases"])


def _claim(folder: pathlib.Path, fingerprint: dict[str, Any]) -> None:
  """Makes `folder` hold chunks of this fingerprint: chunks of another one are deleted."""
  folder.mkdir(parents=True, exist_ok=True)
  manifest = folder / MANIFEST
  text = json.dumps(fingerprint, indent=2, sort_keys=True)
  if manifest.is_file() and json.loads(manifest.read_text()) != json.loads(text):
    stale = sorted(folder.glob("chunk-*.json*"))
    logging.warning("%s holds %d chunk files of another configuration; starting over", folder,
                    len(stale))
    for path in stale:
      path.unlink()
  atomic_io.write_atomic(manifest, text)
