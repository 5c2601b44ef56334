"""HPO onset terms as age ranges in years, and ISO 8601 durations as ages (shared by readers and simulator)."""
from __future__ import annotations

import math
import re

# Onset term → (youngest, oldest) age in years at which findings start (antenatal: 0, before birth).
ONSET_AGES: dict[str, tuple[float, float]] = {
    "HP:0030674": (0.0, 0.0),      # Antenatal onset
    "HP:0011460": (0.0, 0.0),      # Embryonal onset
    "HP:0011461": (0.0, 0.0),      # Fetal onset
    "HP:0034199": (0.0, 0.0),      # Late first trimester onset
    "HP:0034198": (0.0, 0.0),      # Second trimester onset
    "HP:0034197": (0.0, 0.0),      # Third trimester onset
    "HP:0003577": (0.0, 0.0),      # Congenital onset
    "HP:0003623": (0.0, 28 / 365),  # Neonatal onset
    "HP:0003593": (28 / 365, 1.0),  # Infantile onset
    "HP:0410280": (28 / 365, 16.0),  # Pediatric onset
    "HP:0011463": (1.0, 5.0),      # Childhood onset
    "HP:0003621": (5.0, 15.0),     # Juvenile onset
    "HP:0003581": (16.0, 65.0),    # Adult onset
    "HP:0011462": (16.0, 40.0),    # Young adult onset
    "HP:0025708": (16.0, 19.0),    # Early young adult onset
    "HP:0025709": (19.0, 25.0),    # Intermediate young adult onset
    "HP:0025710": (25.0, 40.0),    # Late young adult onset
    "HP:0003596": (40.0, 60.0),    # Middle age onset
    "HP:0003584": (60.0, 85.0),    # Late onset
    "HP:4000040": (18.0, 40.0),    # Puerperal onset
    "HP:6000314": (45.0, 55.0),    # Perimenopausal onset
    "HP:6000315": (52.0, 75.0),    # Postmenopausal onset
}
ANTENATAL = frozenset({"HP:0030674", "HP:0011460", "HP:0011461", "HP:0034199", "HP:0034198",
                       "HP:0034197"})
# Onset categories a note can name when only an age is known, youngest first.
_BY_AGE = (("HP:0003623", 28 / 365), ("HP:0003593", 1.0), ("HP:0011463", 5.0),
           ("HP:0003621", 16.0), ("HP:0011462", 40.0), ("HP:0003596", 60.0))

_DURATION = re.compile(
    r"P(?:(?P<Y>\d+(?:\.\d+)?)Y)?(?:(?P<M>\d+(?:\.\d+)?)M)?(?:(?P<W>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<D>\d+(?:\.\d+)?)D)?(?:T(?:\d+(?:\.\d+)?[HMS])*)?")
_YEARS_PER = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def iso8601_years(duration: str) -> float:
  """'P2Y6M' → 2.5 years. Raises ValueError for anything that is not an ISO 8601 duration."""
  match = _DURATION.fullmatch(duration.strip())
  if not match or duration.strip() in ("P", "PT"):
    raise ValueError(f"not an ISO 8601 duration: {duration!r} (want e.g. 'P4Y2M' or 'P10D')")
  years = sum(float(match[unit]) * per for unit, per in _YEARS_PER.items() if match[unit])
  if not math.isfinite(years):
    raise ValueError(f"not a finite ISO 8601 duration: {duration[:40]!r}")
  return years


def onset_for_age(years: float) -> str:
  """The onset category (HPO id) whose age range holds `years`: congenital at 0, late onset ≥ 60."""
  if years <= 0:
    return "HP:0003577"
  for onset, upper in _BY_AGE:
    if years < upper:
      return onset
  return "HP:0003584"


def onset_rank(onset: str | None) -> float:
  """Sort key: earliest onset first (antenatal before congenital), unknown terms last."""
  if onset not in ONSET_AGES:
    return float("inf")
  low, high = ONSET_AGES[onset]
  return low + high / 1000 - (1e-3 if onset in ANTENATAL else 0.0)
