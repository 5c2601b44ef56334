"""The one grader: a model answer + gold ids → grounded ranking, metrics and RL reward terms.

Evaluation, RERS filtering and RL rewards all call `grade`; none of them judges on its own.

  answer text ─parse_response─> entries ─GroundingIndex.ground─> grounded ids
     ─collapse repeats─> ranked distinct diseases ─IdEquivalence vs gold─> gold rank
     ─> hits@k, reciprocal rank, rank reward, exact match, format validity

Ranking rules (documented because every number depends on them):
  * an entry grounds through its written id when the index knows it, else through its name;
  * entries grounding to an already-listed disease (same id or an exact-match xref of it) are
    dropped — the first occurrence counts, and repeating a disease never moves the others;
    ungrounded entries keep their place;
  * an entry matches the gold when its id — or, for an ambiguous exact name/id, one of the
    equally good alternatives — is the gold id or an exact-match xref of it (`IdEquivalence`);
  * the gold rank is the 1-based position of the first matching entry (None when absent).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from rarejax.data import format as format_lib
from rarejax.knowledge import grounding

DECAYS = ("reciprocal", "linear")


@dataclasses.dataclass(frozen=True)
class GraderConfig:
  """How answers are judged.

  Attributes:
    ks: cut-offs for hits@k.
    rank_decay: rank-aware differential reward for gold rank r ≤ max_rank —
      'reciprocal': 1/r;  'linear': 1 - (r - 1)/max_rank (1.0, 0.9, ..., 0.1 for max_rank 10).
      Beyond max_rank, or absent, the reward is 0.
    max_rank: the last rank that earns a differential reward.
    final_single_entry: a final diagnosis counts as an exact match only when the answer holds a
      single (distinct) disease: the final task asks for one, and crediting a list by its first
      line would make it the differential again. False lets the first entry decide.
    match_alternatives: let the alternatives of an ambiguous exact name or id match the gold.
  """
  ks: tuple[int, ...] = (1, 3, 5, 10)
  rank_decay: str = "reciprocal"
  max_rank: int = 10
  final_single_entry: bool = True
  match_alternatives: bool = True

  def __post_init__(self):
    if self.rank_decay not in DECAYS:
      raise ValueError(f"GraderConfig.rank_decay must be one of {DECAYS}, got {self.rank_decay!r}")
    if self.max_rank < 1 or not self.ks or min(self.ks) < 1:
      raise ValueError(f"GraderConfig needs max_rank >= 1 and ks >= 1, got max_rank="
                       f"{self.max_rank}, ks={self.ks}")


@dataclasses.dataclass(frozen=True)
class GroundedEntry:
  """One distinct disease of the ranking: its rank, the parsed entry and its grounding."""
  rank: int
  entry: format_lib.Entry
  grounding: grounding.GroundingResult

  @property
  def id(self) -> str | None:
    return self.grounding.id


@dataclasses.dataclass(frozen=True)
class GradeResult:
  """The judgment of one answer.

  Attributes:
    ranked: distinct grounded entries, best first (ungrounded entries included, id None).
    gold_rank: 1-based rank of the first entry matching a gold id, None if absent.
    hits: k → gold_rank ≤ k, for every k in the config.
    reciprocal_rank: 1/gold_rank, 0 if absent.
    well_formed, problems, truncated: from the parser.
    n_entries: number of parsed (de-duplicated) entries.
    rank_reward: rank-aware differential reward in [0, 1].
    exact_match: final-diagnosis reward (gold at rank 1, see GraderConfig.final_single_entry).
    format_reward: 1.0 when well-formed, else 0.0.
  """
  ranked: tuple[GroundedEntry, ...]
  gold_rank: int | None
  hits: dict[int, bool]
  reciprocal_rank: float
  well_formed: bool
  problems: tuple[str, ...]
  truncated: bool
  n_entries: int
  rank_reward: float
  exact_match: float
  format_reward: float

  @property
  def ranked_ids(self) -> tuple[str | None, ...]:
    return tuple(e.id for e in self.ranked)


def rank_reward(gold_rank: int | None, config: GraderConfig) -> float:
  """Rank-aware accuracy: 1.0 at rank 1, decaying to 0 beyond config.max_rank."""
  if gold_rank is None or gold_rank > config.max_rank:
    return 0.0
  if config.rank_decay == "reciprocal":
    return 1.0 / gold_rank
  return 1.0 - (gold_rank - 1) / config.max_rank


# A disease id as the 'id' answer style writes it (ASCII digits, a known prefix).
_WRITTEN_ID = re.compile(r"(?:OMIM|ORPHA|MONDO|DECIPHER):[0-9]{1,8}")


def ground_entry(entry: format_lib.Entry,
                 index: grounding.GroundingIndex) -> grounding.GroundingResult:
  """The grounding of one entry: the index's (name and written id), except that a well-formed
  id written alone with no name ('1. OMIM:612345', the 'id' answer style) that the index does not
  know is taken as written (kind 'unindexed_id'): a disease the knowledge does not annotate but a
  model learned from cases can still be named (open domain)."""
  result = index.ground(entry.name, entry.id)
  if (result.id is None and entry.id and not entry.name.strip()
      and _WRITTEN_ID.fullmatch(entry.id)):
    return grounding.GroundingResult(id=entry.id, kind="unindexed_id", score=100.0)
  return result


def ground_entries(entries: Sequence[format_lib.Entry],
                   index: grounding.GroundingIndex) -> tuple[GroundedEntry, ...]:
  """Grounds entries (ground_entry), dropping those equal or equivalent to an earlier one; ranks
  re-numbered."""
  ranked: list[GroundedEntry] = []
  seen: set[str] = set()
  for entry in entries:
    result = ground_entry(entry, index)
    if result.id is not None:
      if result.id in seen:
        continue
      seen.update(index.equivalence.equivalents(result.id))
    ranked.append(GroundedEntry(rank=len(ranked) + 1, entry=entry, grounding=result))
  return tuple(ranked)


def _matches(result: grounding.GroundingResult, gold_ids: Sequence[str],
             equivalence: grounding.IdEquivalence, config: GraderConfig) -> bool:
  candidates = result.candidates if config.match_alternatives else result.candidates[:1]
  return any(equivalence.matches_any(c, gold_ids) for c in candidates)


def gold_rank(ranked: Sequence[GroundedEntry], gold_ids: Sequence[str],
              equivalence: grounding.IdEquivalence, config: GraderConfig) -> int | None:
  """1-based rank of the first entry matching any gold id, None when none does."""
  for item in ranked:
    if _matches(item.grounding, gold_ids, equivalence, config):
      return item.rank
  return None


def grade(answer: str | format_lib.ParsedAnswer, gold_ids: Sequence[str],
          index: grounding.GroundingIndex, config: GraderConfig = GraderConfig()) -> GradeResult:
  """Judges one answer (raw response text or a ParsedAnswer) against the gold disease ids."""
  if isinstance(gold_ids, str):
    raise TypeError(f"gold_ids must be a sequence of ids, not the string {gold_ids!r}")
  if not gold_ids:
    raise ValueError("gold_ids is empty: a case needs at least one gold disease id")
  parsed = answer if isinstance(answer, format_lib.ParsedAnswer) else format_lib.parse_response(
      answer)
  ranked = ground_entries(parsed.entries, index)
  rank = gold_rank(ranked, gold_ids, index.equivalence, config)
  single = len(ranked) == 1 or not config.final_single_entry
  return GradeResult(
      ranked=ranked, gold_rank=rank,
      hits={k: rank is not None and rank <= k for k in config.ks},
      reciprocal_rank=1.0 / rank if rank else 0.0,
      well_formed=parsed.well_formed, problems=parsed.problems, truncated=parsed.truncated,
      n_entries=len(parsed.entries), rank_reward=rank_reward(rank, config),
      exact_match=float(rank == 1 and single), format_reward=float(parsed.well_formed))
