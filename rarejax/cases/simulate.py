"""Patient simulator: structured cases drawn from a disease's annotations, with difficulty knobs.

A simulated patient of disease D has:
  * findings: each annotated phenotype independently with its annotated frequency
    (`DEFAULT_FREQUENCY` when none is given), topped up to `min_findings` (weighted by frequency)
    and subsampled to `max_findings`;
  * imprecision: each finding is replaced, with `imprecision_prob`, by an ancestor at most
    `max_ancestor_steps` is_a steps up that is still a phenotypic abnormality with IC ≥ `min_ic`;
  * noise: `n_noise` phenotypes unrelated to D (neither annotated, nor an ancestor or descendant
    of an annotated term), drawn in proportion to how many diseases are annotated with them;
  * excluded findings: D's NOT-annotations first, then common phenotypes unrelated to D;
  * sex: 50/50, shifted by sex-specific annotations and anatomy and by X-/Y-linked inheritance;
    findings of the other sex's anatomy are never drawn;
  * onset: one of D's onset annotations, age at the last encounter after it.
Every draw comes from a numpy Generator seeded by (seed, index, disease id): same inputs, same case.
"""
from __future__ import annotations

import dataclasses
import hashlib
import zlib
from typing import Sequence

import numpy as np

from rarejax import knowledge
from rarejax.cases import onset as onset_lib
from rarejax.cases.case import Case
from rarejax.knowledge.ontology import PHENOTYPIC_ABNORMALITY

Y_LINKED = "HP:0001450"
X_LINKED_RECESSIVE = "HP:0001419"
# Roots of findings only one sex can have (genital anatomy and reproductive physiology).
MALE_ONLY_ROOTS = ("HP:0010461", "HP:0012874", "HP:0000026", "HP:0033019")
FEMALE_ONLY_ROOTS = ("HP:0010460", "HP:0030012", "HP:0000134", "HP:0000140", "HP:0008209",
                     "HP:0033020")


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
  """Difficulty knobs of the simulator; recorded in every simulated case's provenance."""
  min_findings: int = 3  # top up to this many (or all annotated phenotypes, if fewer)
  max_findings: int = 15  # subsample down to this many annotated findings
  imprecision_prob: float = 0.15  # chance a finding is replaced by a less specific ancestor
  max_ancestor_steps: int = 2  # how far up an imprecise finding may move
  min_ic: float = 2.0  # imprecise, noise and excluded terms are at least this specific
  n_noise: int = 1  # unrelated findings added
  n_excluded: int = 2  # findings stated absent

  def __post_init__(self):
    if not 0 <= self.min_findings <= self.max_findings:
      raise ValueError(f"need 0 <= min_findings <= max_findings, got {self.min_findings}, "
                       f"{self.max_findings}")
    if not 0.0 <= self.imprecision_prob <= 1.0:
      raise ValueError(f"imprecision_prob must be in [0, 1], got {self.imprecision_prob}")
    if min(self.max_ancestor_steps, self.n_noise, self.n_excluded) < 0:
      raise ValueError("max_ancestor_steps, n_noise and n_excluded must be >= 0")


@dataclasses.dataclass(frozen=True)
class _Profile:
  """What the simulator needs about one disease, resolved against the ontology once."""
  phenotypes: tuple[tuple[str, float, str | None], ...]  # (hpo id, frequency, sex or None)
  related: frozenset[str]  # annotated phenotypes and their ancestors (not noise, not excludable)
  annotated: frozenset[str]
  not_annotated: tuple[str, ...]  # NOT-qualified phenotypes
  onsets: tuple[str, ...]
  p_male: float


class PatientSimulator:
  """Draws simulated patients of diseases in a KnowledgeBase (see module docstring)."""

  def __init__(self, kb: knowledge.KnowledgeBase, config: SimulatorConfig = SimulatorConfig()):
    self.kb = kb
    self.config = config
    onto = kb.ontology
    self._male_only = frozenset().union(*(onto.descendants(r) for r in MALE_ONLY_ROOTS))
    self._female_only = frozenset().union(*(onto.descendants(r) for r in FEMALE_ONLY_ROOTS))
    self._background_ids, self._background_cdf = self._background()
    self._profiles: dict[str, _Profile] = {}

  def simulate(self, disease_id: str, seed: int, index: int = 0) -> Case:
    """One patient of `disease_id`; identical for identical (seed, index, disease, config, kb)."""
    profile = self._profile(disease_id)
    rng = np.random.default_rng([seed, index, zlib.crc32(disease_id.encode())])
    sex = "MALE" if rng.random() < profile.p_male else "FEMALE"
    findings = self._findings(profile, sex, rng)
    observed, imprecise = self._imprecise(findings, rng)
    noise = self._unrelated(self.config.n_noise, profile, observed, sex, rng)
    excluded = self._excluded(profile, observed + noise, sex, rng)
    onset, age = self._onset_and_age(profile, rng)
    order = rng.permutation(len(observed) + len(noise))
    key = hashlib.sha1(f"{disease_id}|{seed}|{index}".encode()).hexdigest()[:12]
    return Case(
        id=f"sim-{key}", note="", gold_ids=(disease_id,),
        observed=tuple((observed + noise)[i] for i in order), excluded=excluded, age=age,
        sex=sex, onset=onset, source="simulated",
        provenance={"simulator": dataclasses.asdict(self.config), "seed": seed, "index": index,
                    "kb_digest": self.kb.version.digest, "noise": noise,
                    "imprecise": [list(pair) for pair in imprecise]})

  def simulate_many(self, disease_ids: Sequence[str], n_per_disease: int, seed: int) -> list[Case]:
    """`n_per_disease` patients of each disease, in order; case i of D is `simulate(D, seed, i)`."""
    return [self.simulate(d, seed, i) for d in disease_ids for i in range(n_per_disease)]

  def _profile(self, disease_id: str) -> _Profile:
    if disease_id not in self._profiles:
      self._profiles[disease_id] = self._build_profile(disease_id)
    return self._profiles[disease_id]

  def _build_profile(self, disease_id: str) -> _Profile:
    disease = self.kb.diseases.get(disease_id)
    if disease is None:
      raise KeyError(f"unknown disease {disease_id!r}: not in the knowledge base "
                     f"(did an exclusion remove all its annotations?)")
    onto = self.kb.ontology
    rows: dict[tuple[str, str | None], list[float]] = {}
    for a in disease.phenotypes:
      hpo_id = onto.resolve(a.hpo_id)
      if hpo_id and onto.is_phenotype(hpo_id):
        freq = knowledge.DEFAULT_FREQUENCY if a.frequency is None else a.frequency
        rows.setdefault((hpo_id, a.sex), []).append(freq)
    if not rows:
      raise ValueError(f"{disease_id} ({disease.name}) has no phenotype annotations to simulate "
                       "from")
    phenotypes = tuple((h, float(np.mean(f)), s) for (h, s), f in rows.items())
    annotated = frozenset(h for h, _, _ in phenotypes)
    nots = (onto.resolve(a.hpo_id) for a in disease.excluded)
    return _Profile(
        phenotypes=phenotypes, annotated=annotated,
        related=frozenset().union(*(onto.ancestors(h) for h in annotated)),
        not_annotated=tuple(dict.fromkeys(h for h in nots if h and onto.is_phenotype(h))),
        onsets=tuple(o for o in disease.onsets if o in onset_lib.ONSET_AGES),
        p_male=self._p_male(disease, phenotypes))

  def _p_male(self, disease: knowledge.Disease,
              phenotypes: tuple[tuple[str, float, str | None], ...]) -> float:
    """Chance a patient is male: 1 for Y-linked, ≥0.85 for X-linked recessive, else 0.5 moved
    towards the sex whose sex-specific annotations or anatomy dominate the profile."""
    if Y_LINKED in disease.inheritance:
      return 1.0
    male = sum(s == "MALE" or h in self._male_only for h, _, s in phenotypes)
    female = sum(s == "FEMALE" or h in self._female_only for h, _, s in phenotypes)
    p_male = 0.5 + 0.5 * (male - female) / len(phenotypes)
    return max(p_male, 0.85) if X_LINKED_RECESSIVE in disease.inheritance else p_male

  def _fits_sex(self, hpo_id: str, sex: str) -> bool:
    return hpo_id not in (self._female_only if sex == "MALE" else self._male_only)

  def _findings(self, profile: _Profile, sex: str, rng: np.random.Generator) -> list[str]:
    """Annotated findings drawn by frequency, topped up to min_findings, capped at max_findings."""
    eligible: dict[str, float] = {}
    for hpo_id, freq, only in profile.phenotypes:
      if only in (None, sex) and self._fits_sex(hpo_id, sex):
        eligible.setdefault(hpo_id, freq)  # the sex-neutral row comes first when both exist
    candidates = list(eligible.items())
    freqs = np.array([f for _, f in candidates])
    present = rng.random(len(candidates)) < freqs
    missing = min(self.config.min_findings, len(candidates)) - int(present.sum())
    if missing > 0:
      absent = np.flatnonzero(~present)
      weights = freqs[absent] + 0.05
      present[rng.choice(absent, missing, replace=False, p=weights / weights.sum())] = True
    chosen = np.flatnonzero(present)
    if len(chosen) > self.config.max_findings:
      chosen = np.sort(rng.choice(chosen, self.config.max_findings, replace=False))
    return [candidates[i][0] for i in chosen]

  def _imprecise(self, findings: list[str], rng: np.random.Generator,
                 ) -> tuple[list[str], list[tuple[str, str]]]:
    """Replaces findings by specific-enough ancestors with imprecision_prob; returns the pairs."""
    observed, replaced = [], []
    for hpo_id in findings:
      if rng.random() < self.config.imprecision_prob:
        options = self._vaguer(hpo_id)
        if options:
          vaguer = options[rng.integers(len(options))]
          replaced.append((hpo_id, vaguer))
          hpo_id = vaguer
      if hpo_id not in observed:
        observed.append(hpo_id)
    return observed, replaced

  def _vaguer(self, hpo_id: str) -> list[str]:
    """Ancestors within max_ancestor_steps that are phenotypic abnormalities with IC ≥ min_ic."""
    onto, found, frontier = self.kb.ontology, set(), {hpo_id}
    for _ in range(self.config.max_ancestor_steps):
      frontier = {p for h in frontier for p in onto.parents(h)} - found
      found |= frontier
    return sorted(a for a in found if a != PHENOTYPIC_ABNORMALITY and onto.is_phenotype(a)
                  and self.kb.ic(a) >= self.config.min_ic)

  def _excluded(self, profile: _Profile, observed: list[str], sex: str,
                rng: np.random.Generator) -> tuple[str, ...]:
    """NOT-annotated phenotypes first, then common phenotypes unrelated to the disease."""
    up = frozenset().union(*(self.kb.ontology.ancestors(h) for h in observed))
    nots = [h for h in profile.not_annotated if h not in up and self._fits_sex(h, sex)]
    picked = [nots[i] for i in sorted(rng.permutation(len(nots))[:self.config.n_excluded])]
    more = self._unrelated(self.config.n_excluded - len(picked), profile, observed + picked, sex,
                           rng)
    return tuple(picked + more)

  def _unrelated(self, count: int, profile: _Profile, taken: list[str], sex: str,
                 rng: np.random.Generator) -> list[str]:
    """`count` common phenotypes unrelated to the disease and to `taken` (by background rate)."""
    onto = self.kb.ontology
    avoid = set(profile.annotated) | set(taken)
    avoid_up = profile.related | frozenset().union(*(onto.ancestors(h) for h in taken))
    picked: list[str] = []
    for _ in range(20):  # rejection rounds; common terms are rarely all related
      if len(picked) >= count:
        break
      draws = np.searchsorted(self._background_cdf, rng.random(4 * count), side="right")
      for hpo_id in (self._background_ids[i] for i in draws):
        if (len(picked) < count and hpo_id not in avoid_up and self._fits_sex(hpo_id, sex)
            and not onto.ancestors(hpo_id) & avoid):
          picked.append(hpo_id)
          avoid.add(hpo_id)
    return picked

  def _background(self) -> tuple[list[str], np.ndarray]:
    """Phenotypes with IC ≥ min_ic and the CDF of how many diseases are annotated with each."""
    onto, counts = self.kb.ontology, {}
    for disease in self.kb.diseases.values():
      for hpo_id in {onto.resolve(h) for h in disease.phenotype_ids()}:
        if hpo_id and onto.is_phenotype(hpo_id) and self.kb.ic(hpo_id) >= self.config.min_ic:
          counts[hpo_id] = counts.get(hpo_id, 0) + 1
    ids = sorted(counts)
    cdf = np.cumsum([counts[h] for h in ids], dtype=np.float64)
    return ids, cdf / cdf[-1]

  def _onset_and_age(self, profile: _Profile, rng: np.random.Generator,
                     ) -> tuple[str | None, float]:
    """An annotated onset (if any) and an age at last encounter no earlier than it (years)."""
    if not profile.onsets:
      return None, round(float(min(rng.gamma(1.5, 8.0), 80.0)), 2)  # mostly children, mean 12 y
    onset = profile.onsets[rng.integers(len(profile.onsets))]
    low, high = onset_lib.ONSET_AGES[onset]
    start = rng.uniform(low, high)
    return onset, round(float(start + rng.exponential(1.0 + 0.3 * start)), 2)
