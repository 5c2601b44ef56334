"""Diagnosis methods behind one interface: ranked candidates per case, judged by one gold-rank rule.

Every method — classical phenotype rankers here, the reasoning model in model_method — turns
cases into `MethodOutput`s: ranked `Candidate`s (disease id or None when ungrounded, label,
score, optional confidence, optional equally good alternative ids), plus the raw model text when
there is one. `MethodOutput.gold_rank` is the only place a rank is judged, with the grader's rules
(rarejax.evaluate.grader): the first candidate whose id — or one of its alternatives — is a gold
id or an exact-match equivalent (`IdEquivalence`) gives the rank; candidates are only the top-k
a method returns, so rank > k counts as not found. `MethodOutput.from_grade` converts a
`GradeResult`, so a model's answers are judged exactly like a ranker's list.

Classical methods come in two modes that read different phenotypes:
  'oracle'  the case's structured observed/excluded HPO ids (only cases that have them);
  'text'    HPO concepts recognized in the note (rarejax.phenotypes.concepts).
The case-based rankers (kNN, case Resnik) read training cases' structured phenotypes (the curated
case database such a pipeline would have); the fusions' weights are chosen on a separate tuning
set, in the same mode: 'fusion' (resnik, likelihood ratio, kNN; baselines.FusionRanker) and
'rrf' (the same plus case Resnik; baselines.RankFusion, which keeps the annotation rankers so that
a disease without training cases is still ranked). DEFAULT_CLASSICAL are the methods reports
show unless asked otherwise: the case ranker and fusion that won on the inner split.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from rarejax import knowledge
from rarejax.cases import Case
from rarejax.evaluate import grader as grader_lib
from rarejax.knowledge import grounding
from rarejax.phenotypes import baselines
from rarejax.phenotypes import concepts
from rarejax.phenotypes.phenotype_index import PhenotypeIndex

MODES = ("oracle", "text")
CLASSICAL = ("resnik", "likelihood_ratio", "case_knn", "case_resnik", "fusion", "rrf")
DEFAULT_CLASSICAL = ("resnik", "likelihood_ratio", "case_resnik", "rrf")
CASE_RANKERS = ("case_knn", "case_resnik")
FUSIONS = ("fusion", "rrf")
NEEDS_TRAINING_CASES = (*CASE_RANKERS, *FUSIONS)
# What each fusion combines, and the rank fusion's weight grid per base ranker.
FUSED = {"fusion": ("resnik", "likelihood_ratio", "case_knn"),
         "rrf": ("resnik", "likelihood_ratio", "case_knn", "case_resnik")}
RRF_GRIDS = (baselines.ANNOTATION_WEIGHTS, baselines.ANNOTATION_WEIGHTS, baselines.CASE_WEIGHTS,
             baselines.CASE_WEIGHTS)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One ranked disease. `disease_id` is None for an answer entry that grounded to nothing."""
  disease_id: str | None
  label: str
  score: float
  confidence: float | None = None  # the method's probability that this candidate is right
  alternatives: tuple[str, ...] = ()  # ids that the entry names equally well (ambiguous names)


@dataclasses.dataclass(frozen=True)
class MethodOutput:
  """One method's answer for one case.

  Attributes:
    case_id: the case answered.
    candidates: best first (at most the method's top-k).
    raw_text: the model's full response, when the method is a model.
    well_formed: the response followed the answer format (always True for rankers).
    observed, excluded: the HPO ids a phenotype method ranked from (empty for a model).
    flags: remarks on this answer that reports count, e.g. 'note_cut', 'answer_forced'.
  """
  case_id: str
  candidates: tuple[Candidate, ...]
  raw_text: str | None = None
  well_formed: bool = True
  observed: tuple[str, ...] = ()
  excluded: tuple[str, ...] = ()
  flags: tuple[str, ...] = ()

  def gold_rank(self, gold_ids: Sequence[str], equivalence: grounding.IdEquivalence
                ) -> int | None:
    """1-based rank of the first candidate naming a gold disease (grader rules), else None."""
    if isinstance(gold_ids, str) or not gold_ids:
      raise ValueError(f"gold_ids must be a non-empty sequence of ids, got {gold_ids!r}")
    for rank, candidate in enumerate(self.candidates, 1):
      ids = (candidate.disease_id, *candidate.alternatives) if candidate.disease_id else ()
      if any(equivalence.matches_any(i, gold_ids) for i in ids):
        return rank
    return None

  @classmethod
  def from_grade(cls, case_id: str, grade: grader_lib.GradeResult, raw_text: str | None = None,
                 confidences: Sequence[float | None] | None = None,
                 config: grader_lib.GraderConfig = grader_lib.GraderConfig(),
                 labels: Mapping[str, str] | None = None) -> MethodOutput:
    """A graded model answer as candidates; its gold_rank equals `grade.gold_rank`.

    See `graded_candidates` for scores, confidences and labels.
    """
    return cls(case_id, graded_candidates(grade.ranked, confidences, config, labels),
               raw_text=raw_text, well_formed=grade.well_formed)


def graded_candidates(ranked: Sequence[grader_lib.GroundedEntry],
                      confidences: Sequence[float | None] | None = None,
                      config: grader_lib.GraderConfig = grader_lib.GraderConfig(),
                      labels: Mapping[str, str] | None = None) -> tuple[Candidate, ...]:
  """A model's grounded answer entries (grader.ground_entries) as ranked candidates.

  The score of entry r is 1/r (answers carry ranks, not scores); `confidences`, when given,
  align with `ranked`. The label is `labels[id]` (e.g. the knowledge base's primary names),
  else the indexed name the entry matched, else the name as written.
  """
  if confidences is not None and len(confidences) != len(ranked):
    raise ValueError(f"{len(confidences)} confidences for {len(ranked)} ranked entries")
  labels = labels or {}
  candidates = []
  for i, entry in enumerate(ranked):
    result = entry.grounding
    label = labels.get(result.id) if result.id else None
    candidates.append(Candidate(
        disease_id=result.id, label=label or result.matched_name or entry.entry.name,
        score=1.0 / entry.rank, confidence=None if confidences is None else confidences[i],
        alternatives=result.alternatives if config.match_alternatives else ()))
  return tuple(candidates)


class Method(Protocol):
  """What the evaluation runner needs from a method (a model method implements the same three)."""
  name: str  # unique in a run, file-name safe, e.g. 'fusion.text' or 'raredx.text'
  config: Mapping[str, Any]  # recorded in reports

  def applies(self, case: Case) -> bool:
    """Whether the method can answer this case (e.g. oracle mode needs structured phenotypes)."""

  def rank(self, cases: Sequence[Case]) -> list[MethodOutput]:
    """One output per case, in order."""


# ---- phenotype readers: where a classical method's phenotypes come from ----------------------


@dataclasses.dataclass(frozen=True)
class Phenotypes:
  """Observed and excluded HPO ids (satisfies baselines.PhenotypeCase)."""
  observed: tuple[str, ...]
  excluded: tuple[str, ...]


class OraclePhenotypes:
  """The case's own structured phenotypes."""
  mode = "oracle"

  def applies(self, case: Case) -> bool:
    return bool(case.observed)

  def read(self, case: Case) -> Phenotypes:
    return Phenotypes(case.observed, case.excluded)


class TextPhenotypes:
  """Concepts recognized in the note (memoized per note text, shared by the methods of a mode)."""
  mode = "text"

  def __init__(self, recognizer: concepts.Recognizer):
    self.recognizer = recognizer
    self._memo: dict[str, Phenotypes] = {}

  def applies(self, case: Case) -> bool:
    return bool(case.note.strip())

  def read(self, case: Case) -> Phenotypes:
    found = self._memo.get(case.note)
    if found is None:
      recognized = self.recognizer.recognize(case.note)
      found = self._memo[case.note] = Phenotypes(recognized.observed, recognized.excluded)
    return found


# ---- classical rankers as methods ---------------------------------------------------------


@dataclasses.dataclass
class RankerMethod:
  """A classical ranker reading phenotypes in one mode; returns its top-k diseases."""
  ranker: baselines.Ranker
  index: PhenotypeIndex
  reader: OraclePhenotypes | TextPhenotypes
  labels: Mapping[str, str]
  tie_break: np.ndarray
  top_k: int = 10
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  suffix: str = ""  # told apart from the same ranker over other diseases ('.all_omim')

  @property
  def name(self) -> str:
    return f"{self.ranker.name}.{self.reader.mode}{self.suffix}"

  def applies(self, case: Case) -> bool:
    return self.reader.applies(case)

  def rank(self, cases: Sequence[Case]) -> list[MethodOutput]:
    outputs = []
    for case in cases:
      phenotypes = self.reader.read(case)
      scores = self.ranker.scores(self.index.query(phenotypes.observed, phenotypes.excluded))
      order = baselines.rank_order(scores, self.tie_break)[:self.top_k]
      ids = [self.index.disease_ids[i] for i in order]
      candidates = tuple(Candidate(d, self.labels.get(d, ""), float(scores[i]))
                         for i, d in zip(order, ids))
      outputs.append(MethodOutput(case.id, candidates, observed=phenotypes.observed,
                                  excluded=phenotypes.excluded))
    return outputs


@dataclasses.dataclass(frozen=True)
class FusionTuning:
  """The separate set fusion weights are chosen on, with its own honest knowledge.

  Attributes:
    kb: knowledge with the tuning cases' publications excluded too.
    train_cases: the case rankers' database while tuning (never the tuning cases themselves).
    cases: the tuning cases (with notes, for text mode).
  """
  kb: knowledge.KnowledgeBase
  train_cases: Sequence[Case]
  cases: Sequence[Case]


@dataclasses.dataclass(frozen=True)
class FusionChoice:
  """Reciprocal-rank-fusion weights per base ranker and k (and, for 'rrf', whether scores are
  averaged over the rankers that rank a disease), with the tuning MRR they reached."""
  weights: dict[str, float]
  k: float
  tuning_mrr: float
  n_tuning_cases: int
  mean: bool | None = None


def base_rankers(index: PhenotypeIndex, train_cases: Sequence[Case]) -> dict[str, baselines.Ranker]:
  """Resnik and likelihood ratio, plus kNN and case Resnik over the training cases' structured
  phenotypes (when there are any)."""
  train = [c for c in train_cases if c.observed]
  gold = [c.gold_ids for c in train]
  rankers = dict(baselines.default_rankers(index, train, gold))
  if train:
    rankers["case_resnik"] = baselines.CaseResnikRanker(index, train, gold)
  return rankers


def choose_fusion(tuning: FusionTuning, readers: Sequence[OraclePhenotypes | TextPhenotypes],
                  seed: int = 0, fusions: Sequence[str] = ("fusion",)
                  ) -> dict[tuple[str, str], FusionChoice]:
  """Per (fusion, reader mode): weights and k maximizing MRR on the tuning cases read that way."""
  index = PhenotypeIndex(tuning.kb)
  rankers = {n: baselines.Memoized(r) for n, r in base_rankers(index, tuning.train_cases).items()}
  tie_break = baselines.make_tie_break(len(index.disease_ids), seed)
  choices = {}
  for reader in readers:
    cases = [c for c in tuning.cases if reader.applies(c)]
    if not cases:
      raise ValueError(f"fusion tuning: no tuning case can be read in {reader.mode!r} mode")
    phenotypes, gold = [reader.read(c) for c in cases], [c.gold_ids for c in cases]
    for fusion in fusions:
      fused = [rankers[n] for n in FUSED[fusion]]
      if fusion == "rrf":
        choice = baselines.choose_rank_fusion(fused, index, phenotypes, gold, tie_break,
                                              RRF_GRIDS)
        weights, k, mrr, mean = choice.weights, choice.k, choice.mrr, choice.mean
      else:
        (weights, k, mrr), mean = baselines.choose_fusion_weights(
            fused, index, phenotypes, gold, tie_break), None
      choices[fusion, reader.mode] = FusionChoice(dict(zip(FUSED[fusion], weights)), k, mrr,
                                                  len(cases), mean)
  return choices


def fusion_ranker(name: str, choice: FusionChoice, rankers: Mapping[str, baselines.Ranker],
                  tie_break: np.ndarray) -> baselines.Ranker:
  """The fusion `name` ('fusion' or 'rrf') with a tuned choice, over the base `rankers`."""
  fused = [rankers[n] for n in choice.weights]
  weights = list(choice.weights.values())
  if name == "rrf":
    return baselines.RankFusion(fused, weights, tie_break, k=choice.k, mean=choice.mean)
  return baselines.FusionRanker(fused, weights, tie_break, k=choice.k)


def classical_methods(kb: knowledge.KnowledgeBase, names: Sequence[str] = DEFAULT_CLASSICAL,
                      modes: Sequence[str] = MODES, train_cases: Sequence[Case] = (),
                      tuning: FusionTuning | None = None,
                      recognizer: concepts.Recognizer | None = None, seed: int = 0,
                      top_k: int = 10, disease_ids: Sequence[str] | None = None,
                      ) -> list[RankerMethod]:
  """The classical methods `names` × `modes`, on knowledge `kb` (already honest-excluded),
  ranking `disease_ids` (default: every disease of the index's default prefixes).

  Raises:
    ValueError: unknown name or mode; a case ranker or fusion without training cases; a fusion
      without tuning.
  """
  unknown = [n for n in names if n not in CLASSICAL] + [m for m in modes if m not in MODES]
  if unknown:
    raise ValueError(f"unknown method or mode {unknown[0]!r}: methods are {CLASSICAL}, modes "
                     f"{MODES}")
  if not names or not modes or len(set(names)) < len(names) or len(set(modes)) < len(modes):
    raise ValueError(f"need at least one method and one mode, each once; got {names}, {modes}")
  if not any(c.observed for c in train_cases) and set(names) & set(NEEDS_TRAINING_CASES):
    raise ValueError(f"{sorted(set(names) & set(NEEDS_TRAINING_CASES))} need training cases with "
                     "structured phenotypes (phenopackets:PATH:validation or --train_cases)")
  fusions = [n for n in names if n in FUSIONS]
  if fusions and tuning is None:
    raise ValueError(f"{fusions} need a tuning set (FusionTuning) apart from the evaluated cases")
  index = PhenotypeIndex(kb, disease_ids=disease_ids)
  tie_break = baselines.make_tie_break(len(index.disease_ids), seed)
  rankers = base_rankers(index, train_cases)
  labels = {d: kb.diseases[d].name for d in index.disease_ids}
  readers = [OraclePhenotypes() if mode == "oracle" else TextPhenotypes(
      recognizer or concepts.ConceptRecognizer.from_knowledge(kb)) for mode in modes]
  chosen = choose_fusion(tuning, readers, seed, fusions) if fusions else {}
  methods = []
  for mode, reader in zip(modes, readers):
    for name in names:
      config: dict[str, Any] = {"ranker": name, "mode": mode, "top_k": top_k,
                                "knowledge": kb.version.digest}
      if name in FUSIONS:
        choice = chosen[name, mode]
        ranker = fusion_ranker(name, choice, rankers, tie_break)
        config.update(dataclasses.asdict(choice), tuning_knowledge=tuning.kb.version.digest)
      else:
        ranker = rankers[name]
      if name in CASE_RANKERS:
        config["n_train_cases"] = ranker.n_cases
      methods.append(RankerMethod(ranker, index, reader, labels, tie_break, top_k, config))
  return methods
