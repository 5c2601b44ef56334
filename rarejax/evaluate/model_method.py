"""The reasoning model as a diagnosis method: an exported checkpoint reads each note and answers.

  model = export.load_model("runs/quickstart/sft/export")    # rarejax.export: the one loader
  method = ModelMethod(model, GroundingIndex.from_knowledge(kb))
  outputs = method.rank(cases)       # MethodOutputs, judged like any ranker's (methods.py)
  diagnoses = method.diagnose([note])   # the same without gold: candidates, reasoning, response

Prompts are the training prompts (format.build_prompt, differential task, asking for as many
candidates as the training prompts did — metadata.json 'prompt_candidates', `top_k` when it
records none —, in the instruction style the export's metadata.json records under
'prompt_instruction': 'full' when it records none, as older exports do); a note too long for
the cache is cut at its end (flagged 'note_cut'). Answers come from the shared sampler (greedy
by default, batched; generation.py, thinking budget included) and go through the shared
grader's grounding (grader.ground_entries): entries are grounded to disease ids by written id,
name or synonym, repeats collapse, and the first `top_k` distinct diseases are the candidates,
scored 1/rank and labelled with the knowledge base's primary names.

An export trained with ranker hints (metadata.json 'ranker_hints', rarejax.data.ranker_hints)
gets them at inference too: each prompt ends with the knowledge's Resnik ranker's best diseases
for the note, computed over `hint_knowledge` (for an honest evaluation, the knowledge the
evaluated rankers get) exactly as training computed them; first-entry ranking only.

Confidence (the calibration plot): the first candidate carries the probability the model gave
its whole first answer line ('1. Name (ID)'), exp(sum of the line's token log-probs) — the
chance that, at that point, it names this disease first. Other candidates carry none, so the
calibration is top-1 calibration. Forced tokens count with probability 1.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import pathlib
from typing import Any, Mapping, Sequence

from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import release
from rarejax.cases import Case
from rarejax.data import format as format_lib
from rarejax.data import ranker_hints
from rarejax.evaluate import generation
from rarejax.evaluate import grader as grader_lib
from rarejax.evaluate import methods as methods_lib
from rarejax.sample import Sampler
from rarejax.sample import answer_prior
from rarejax.sample import first_entry

DEFAULT_GENERATION = generation.GenerationConfig(max_new_tokens=768)
CACHE_STEP = 256  # cache lengths are rounded up to a multiple of this (few compiled shapes)
CONFIDENCE = "probability of the first answer line (top-1 calibration)"
def _token_range(vocabulary: generation.Tokenizer, tokens: Sequence[int], start: int,
                 end: int) -> tuple[int, int]:
  """Tokens [first, last) whose text overlaps characters [start, end) of decode(tokens).

  Binary search over decoded prefix lengths (a byte-fallback piece splitting a character may
  shift a bound by one token).
  """
  def length(n: int) -> int:
    return len(vocabulary.decode(list(tokens[:n])))

  positions = range(len(tokens))
  first = bisect.bisect_left(positions, True, key=lambda n: length(n + 1) > start)
  last = bisect.bisect_left(positions, True, key=lambda n: length(n) >= end)
  return first, max(last, first + 1)


def first_entry_confidence(vocabulary: generation.Tokenizer, response: generation.Response,
                           parsed: format_lib.ParsedAnswer) -> float | None:
  """Probability of the first answer line's tokens (module docstring); None without entries."""
  if not parsed.entries or not response.tokens:
    return None
  line = parsed.entries[0].raw_line.strip()
  answer_at = response.text.rfind(format_lib.ANSWER_OPEN)
  start = (response.text.find(line, answer_at) if answer_at >= 0 else
           response.text.rfind(line))  # without tags the parser reads the last list
  if start < 0 or not line:
    return None
  first, last = _token_range(vocabulary, response.tokens, start, start + len(line))
  return math.exp(sum(response.logprobs[first:last]))


@dataclasses.dataclass(frozen=True)
class Diagnosis:
  """The model's answer to one note.

  Attributes:
    response: the generated text with tokens and log-probs.
    parsed: what the one parser read from it (reasoning, entries, problems).
    ranked: the first top_k distinct entries with their groundings (grader.ground_entries).
    candidates: the same as evaluation candidates (ids, labels, scores, confidence).
    note_cut: the note was cut to fit the cache.
  """
  response: generation.Response
  parsed: format_lib.ParsedAnswer
  ranked: tuple[grader_lib.GroundedEntry, ...]
  candidates: tuple[methods_lib.Candidate, ...]
  note_cut: bool = False


class ModelMethod:
  """An exported model as an evaluation method (see the module docstring).

  Args:
    model: the loaded export.
    index: grounding of written names/ids (use the full knowledge: names are not case data).
    generation_config: decoding settings (greedy, 768 tokens by default).
    top_k: candidates kept (and asked for in the prompt when the export records no count).
    batch_size: rows decoded at once.
    max_cache_length: cache slots per row at most (prompt + response); longer notes are cut.
    grader_config: how entries' alternatives count (GraderConfig.match_alternatives).
    instruction: the prompts' style (format.INSTRUCTION_STYLES); None: the one the export
      records (rarejax.export.LoadedModel.prompt_instruction).
    ranking: 'generate' or 'first_entry' (rarejax.export.RANKINGS); None: the one the export
      records (rarejax.export.LoadedModel.answer_ranking).
    prior_weight: first-entry ranking only: w of log p(d) - w * log prior(d), the training
      answers' prior divided out (rarejax.sample.answer_prior); None: the weight the export's
      metadata.json records (answer_prior.PRIOR_WEIGHT), 0 when it records none.
    name: the method's name in reports.
    notes: extra entries for `config` (e.g. the knowledge check).
    hint_knowledge: the knowledge the ranker hints are computed over, for an export trained
      with them (module docstring): required then, unused otherwise.
  """

  def __init__(self, model: export_lib.LoadedModel, index: knowledge.GroundingIndex,
               generation_config: generation.GenerationConfig = DEFAULT_GENERATION, *,
               top_k: int = 10, batch_size: int = 16, max_cache_length: int = 4096,
               grader_config: grader_lib.GraderConfig = grader_lib.GraderConfig(),
               instruction: str | None = None, ranking: str | None = None,
               prior_weight: float | None = None, name: str = "model.text",
               notes: Mapping[str, Any] | None = None,
               hint_knowledge: knowledge.KnowledgeBase | None = None):
    if top_k < 1 or batch_size < 1:
      raise ValueError(f"ModelMethod needs top_k >= 1 and batch_size >= 1, got {top_k}, "
                       f"{batch_size}")
    self.model = model
    self.index = index
    self.generation = generation_config
    self.top_k = top_k
    self.batch_size = batch_size
    self.grader_config = grader_config
    self.instruction = _instruction(model, instruction)
    self.name = name
    self.notes = dict(notes or {})
    self.after_prompt = generation.tokens_after_prompt(model.vocabulary, generation_config)
    self.max_cache_length = max_cache_length
    if max_cache_length <= self.after_prompt + 1:
      raise ValueError(f"max_cache_length={max_cache_length} leaves no room for a prompt: "
                       f"the response alone needs {self.after_prompt} slots")
    self._samplers: dict[int, Sampler] = {}
    self.ranking = ranking or model.answer_ranking
    if self.ranking not in export_lib.RANKINGS:
      raise ValueError(f"ranking must be one of {export_lib.RANKINGS}, got {self.ranking!r}")
    self._first_entry = None
    self.prior_weight = float(model.metadata.get(answer_prior.PRIOR_WEIGHT, 0.0)
                              if prior_weight is None else prior_weight)
    if self.prior_weight and self.ranking != "first_entry":
      raise ValueError(f"prior_weight={self.prior_weight} applies to first-entry ranking only; "
                       f"{model.export_dir} ranks by {self.ranking!r}")
    if self.ranking == "first_entry":
      self._first_entry = first_entry.FirstEntryRanker(
          model.config, model.vocabulary, first_entry.id_answer, batch_size=batch_size,
          prior=self._prior() if self.prior_weight else None, prior_weight=self.prior_weight)
      self.after_prompt = len(self._first_entry.answer_prefix) + 1
    self.hints = self._hint_ranker(hint_knowledge)
    if self.hints is not None:  # the hints sit between the prompt and the response
      self.after_prompt += len(self.hints.prefix) + self.hints.config.k

  def _hint_ranker(self, kb: knowledge.KnowledgeBase | None) -> ranker_hints.HintRanker | None:
    """The export's ranker hints over `kb` (None when it was trained without them)."""
    config = ranker_hints.RankerHints.from_metadata(self.model.metadata)
    if config is None:
      return None
    if kb is None:
      raise ValueError(f"{self.model.export_dir} was trained with ranker hints ({config}): give "
                       "ModelMethod the knowledge to compute them over (hint_knowledge)")
    if self.ranking != "first_entry":
      raise ValueError(f"ranker hints need first-entry ranking; {self.model.export_dir} ranks by "
                       f"{self.ranking!r}")
    return ranker_hints.HintRanker(kb, self.model.vocabulary, config)

  def _prior(self) -> dict[str, float]:
    """The export's answer prior (answer_prior.FILE)."""
    prior = answer_prior.read(self.model.export_dir)
    if prior is None:  # the error check_prior gives the command lines before any loading
      check_prior(self.model.export_dir, self.model.metadata, [self.prior_weight])
    return prior

  @property
  def config(self) -> dict[str, Any]:
    """What reports record about the method."""
    return {"kind": "model", "checkpoint": str(self.model.export_dir),
            "vocabulary": str(self.model.vocabulary_path),
            "model_config": self.model.config.to_dict(),
            "generation": dataclasses.asdict(self.generation), "top_k": self.top_k,
            "max_cache_length": self.max_cache_length, "confidence": CONFIDENCE,
            "prompt_instruction": self.instruction, "ranking": self.ranking,
            "prior_weight": self.prior_weight,
            "ranker_hints": self.hints.config.metadata() if self.hints is not None else None,
            "training_knowledge": self.model.metadata.get("knowledge"), **self.notes}

  def applies(self, case: Case) -> bool:
    return bool(case.note.strip())

  def _sampler(self, longest_prompt: int) -> Sampler:
    """A sampler whose cache fits the prompt and response (lengths rounded up to CACHE_STEP)."""
    needed = longest_prompt + self.after_prompt
    length = min(self.max_cache_length, -(-needed // CACHE_STEP) * CACHE_STEP)
    if length not in self._samplers:
      self._samplers[length] = Sampler(
          self.model.config, cache_length=length, max_batch_size=self.batch_size,
          pad_id=getattr(self.model.vocabulary, "pad_id", 0))
    return self._samplers[length]

  def prompt(self, note: str) -> tuple[str, bool]:
    """(the prompt of `note`, whether the note was cut to fit the cache)."""
    return generation.fit_prompt(self.model.vocabulary, note,
                                 self.max_cache_length - self.after_prompt,
                                 self.model.metadata.get(export_lib.PROMPT_CANDIDATES, self.top_k),
                                 self.instruction)

  def prompt_tokens(self, note: str) -> tuple[list[int], bool]:
    """(the prompt's tokens, BOS first and the ranker hints last when the export has them —
    what training's cached example reads after BOS —, whether the note was cut)."""
    prompt, cut = self.prompt(note)
    ids = generation.prompt_ids(self.model.vocabulary, prompt)
    return (ids + self.hints.tokens(note) if self.hints is not None else ids), cut

  def diagnose(self, notes: Sequence[str]) -> list[Diagnosis]:
    """Generates and grounds an answer for each note (no gold needed)."""
    if self._first_entry is not None:
      fitted = [self.prompt_tokens(note) for note in notes]
      ranked = self._first_entry.rank(self.model.params, [ids for ids, _ in fitted], self.top_k)
      return [self.read_ranked(r, cut) for r, (_, cut) in zip(ranked, fitted)]
    vocabulary = self.model.vocabulary
    fitted = [self.prompt(note) for note in notes]
    prompts = [prompt for prompt, _ in fitted]
    longest = max(len(generation.prompt_ids(vocabulary, p)) for p in prompts)
    responses = generation.generate_responses(self._sampler(longest), self.model.params,
                                              vocabulary, prompts, self.generation)
    return [self.read(response, cut) for response, (_, cut) in zip(responses, fitted)]

  def read(self, response: generation.Response, note_cut: bool = False) -> Diagnosis:
    """Parses and grounds one response into top_k candidates (the grader's grounding rules)."""
    parsed = format_lib.parse_response(response.text)
    ranked = grader_lib.ground_entries(parsed.entries, self.index)[:self.top_k]
    confidences = None
    if ranked:
      confidences = [first_entry_confidence(self.model.vocabulary, response, parsed)]
      confidences += [None] * (len(ranked) - 1)
    candidates = methods_lib.graded_candidates(ranked, confidences, self.grader_config,
                                               self.index.primary_names)
    return Diagnosis(response, parsed, ranked, candidates, note_cut)

  def read_ranked(self, ranked: Sequence[tuple[str, float]], note_cut: bool = False) -> Diagnosis:
    """A first-entry ranking ([(disease id, probability)]) as a written answer read by the one
    parser and grader; the first candidate's confidence is its probability."""
    text = format_lib.format_response("", [("", disease_id) for disease_id, _ in ranked])
    parsed = format_lib.parse_response(text)
    grounded = grader_lib.ground_entries(parsed.entries, self.index)[:self.top_k]
    probability = {disease_id: p for disease_id, p in ranked}
    confidences = [probability.get(e.entry.id) if i == 0 else None
                   for i, e in enumerate(grounded)]
    candidates = methods_lib.graded_candidates(grounded, confidences or None, self.grader_config,
                                               self.index.primary_names)
    return Diagnosis(generation.Response(text, (), ()), parsed, grounded, candidates, note_cut)

  def output(self, case: Case, diagnosis: Diagnosis) -> methods_lib.MethodOutput:
    """The diagnosis of a case as a MethodOutput (its gold rank is the grader's, within top_k)."""
    flags = (("note_cut",) if diagnosis.note_cut else ()) + (
        ("answer_forced",) if diagnosis.response.forced_answer else ())
    return methods_lib.MethodOutput(case.id, diagnosis.candidates,
                                    raw_text=diagnosis.response.text,
                                    well_formed=diagnosis.parsed.well_formed, flags=flags)

  def rank(self, cases: Sequence[Case]) -> list[methods_lib.MethodOutput]:
    return [self.output(case, d) for case, d in zip(cases, self.diagnose([c.note for c in cases]))]


def _instruction(model: export_lib.LoadedModel, instruction: str | None) -> str:
  """The prompt style to use: `instruction` (warned when the export records another), else the
  export's."""
  trained = model.prompt_instruction
  if instruction is None:
    return trained
  format_lib.check_instruction(instruction)
  if export_lib.PROMPT_INSTRUCTION in model.metadata and instruction != trained:
    logging.warning("%s was trained on %r prompts but is asked with %r prompts", model.export_dir,
                    trained, instruction)
  return instruction


def add_model_flags(parser, checkpoint_required: bool) -> None:
  """The model flags shared by `rarejax evaluate` and `rarejax diagnose` (an argparse parser or
  argument group): checkpoint, vocabulary, generation budget, batch and cache sizes."""
  parser.add_argument("--checkpoint", required=checkpoint_required, default=None,
                      help="a training stage's export folder or a release folder (default: the "
                      f"released model, {release.DEFAULT_RELEASE})")
  parser.add_argument("--vocabulary", default=None,
                      help="the model's vocabulary (default: the one its metadata.json names)")
  parser.add_argument("--max_new_tokens", type=int, default=768,
                      help="response tokens at most (reasoning + answer)")
  parser.add_argument("--think_tokens", type=int, default=0,
                      help="reasoning budget in tokens (0: none); the answer always follows")
  parser.add_argument("--model_batch_size", type=int, default=16, help="notes decoded at once")
  parser.add_argument("--max_cache_length", type=int, default=4096,
                      help="tokens per row (prompt + response); longer notes are cut")
  parser.add_argument("--prior_weight", type=prior_weights, default=None,
                      help="first-entry models: rank by log p(d) - w * log prior(d), the training "
                      "answers' prior divided out (rarejax.sample.answer_prior); default: the w "
                      "the export records (0 when none). `rarejax evaluate` takes a comma list "
                      "and reports one model method per weight")


def check_prior(export_dir: str | pathlib.Path, metadata: Mapping[str, Any],
                weights: Sequence[float] | None) -> None:
  """Raises ValueError, before anything heavy is loaded, when a prior weight in effect (`weights`,
  or the export's recorded one when None) needs an answer prior the export does not have."""
  export_dir = pathlib.Path(export_dir)
  weights = [metadata.get(answer_prior.PRIOR_WEIGHT, 0.0)] if weights is None else weights
  if any(weights) and not (export_dir / answer_prior.FILE).is_file():
    raise ValueError(
        f"prior weight {max(weights):g} needs {export_dir / answer_prior.FILE}, the training "
        "answers' prior: write it with `python -m rarejax.sample.answer_prior --workdir "
        "WORKDIR` (the export's pipeline workdir), or pass --prior_weight 0")
  if any(weights) and metadata.get(export_lib.ANSWER_RANKING) != "first_entry":
    ranking = metadata.get(export_lib.ANSWER_RANKING, "generate")
    raise ValueError(f"{export_dir} ranks by {ranking!r}: a "
                     "prior weight applies to first-entry ranking only; pass --prior_weight 0")


def prior_weights(text: str) -> list[float]:
  """The --prior_weight flag: comma-separated weights >= 0."""
  import argparse  # pylint: disable=import-outside-toplevel
  try:
    weights = [float(t) for t in text.split(",") if t.strip()]
  except ValueError as err:
    raise argparse.ArgumentTypeError(f"--prior_weight takes numbers >= 0, got {text!r}") from err
  if not weights or any(w < 0 or not math.isfinite(w) for w in weights):
    raise argparse.ArgumentTypeError(f"--prior_weight takes numbers >= 0, got {text!r}")
  return weights
