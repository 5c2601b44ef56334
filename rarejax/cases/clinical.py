"""Wording of the 'clinical' note style: measurements, shorthand, paraphrases, normal findings.

The renderer's clinical style (rarejax.cases.render) writes findings the way clinicians do rather
than as ontology strings; this module holds what it draws from, each a pure function of a numpy
Generator and the case:
  * `MEASURES`: measurable terms as values ('height 2.8 SD below the mean', 'CK 2,340 U/L (ref <
    200)'), a few also for their descendants ('Progressive microcephaly' → 'OFC -3.1 SD');
  * `SHORTHAND`: abbreviations and clinical shorthand ('ID', 'GDD', 'HSM', 'SNHL', 'ASD');
  * `paraphrases`: rewrites of label patterns ('Elevated circulating creatinine concentration' →
    'raised creatinine', 'Hypoplasia of the corpus callosum' → 'hypoplastic corpus callosum');
  * `normal_findings`: normal results and unrelated history, each left out when an observed
    finding falls under an organ system it would call normal;
  * `family_history`: pedigree phrases that fit the gold disease's mode of inheritance, never
    naming a disease;
  * `since` / `course`: onset and course in time, never later than the patient's age.
No entry names a disease or a gene; the renderer still passes every phrase through its leak guard.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import numpy as np

from rarejax.knowledge import ontology as ontology_lib

SECTIONS = ("history", "exam", "investigations")
# Chances, per finding, of each way of writing it (when the finding has one).
MEASURE_RATE = 0.7  # a measurement instead of a name
SHORTHAND_RATE = 0.7  # an abbreviation or shorthand instead of a name
PARAPHRASE_RATE = 0.6  # a rewrite of the name's pattern instead of the name
COURSE_RATE = 0.5  # a course phrase after the onset, when the onset is a year or more ago
FAMILY_RATE = 0.6  # a family-history line
RELATIVE_RATE = 0.5  # ... that also names a relative's common, unrelated condition


@dataclasses.dataclass(frozen=True)
class Measure:
  """Ways to write a measurable finding: `templates` filled with one value drawn from [low, high].

  Attributes:
    templates: phrases with a '{v}' placeholder for the value (or none).
    low, high: range of the value drawn uniformly.
    digits: decimals of the value (0: an integer with thousands separators).
    section: where the note puts it, one of SECTIONS.
    descendants: the term's descendants are written the same way.
    min_age: only for patients known to be at least this old (years).
  """
  templates: tuple[str, ...]
  low: float = 0.0
  high: float = 0.0
  digits: int = 0
  section: str = "exam"
  descendants: bool = False
  min_age: float = 0.0

  def phrases(self, rng: np.random.Generator) -> list[str]:
    """Every template filled with one drawn value."""
    value = rng.uniform(self.low, self.high)
    text = f"{round(value):,}" if self.digits == 0 else f"{value:.{self.digits}f}"
    return [t.format(v=text) for t in self.templates]


_HEIGHT = ("height {v} SD below the mean", "height -{v} SD", "height < 3rd centile (-{v} SD)")
_IQ = ("full-scale IQ {v}", "IQ {v} on formal testing")
_LAB, _HISTORY = "investigations", "history"
MEASURES: Mapping[str, Measure] = {
    "HP:0004322": Measure(_HEIGHT, 2.1, 3.4, 1),  # Short stature
    "HP:0003502": Measure(_HEIGHT, 2.0, 2.5, 1),  # Mild short stature
    "HP:0003510": Measure(_HEIGHT, 4.0, 6.5, 1),  # Severe short stature
    "HP:0000098": Measure(("height +{v} SD", "height > 97th centile (+{v} SD)"), 2.1, 3.5, 1),
    "HP:0000252": Measure(("head circumference -{v} SD", "OFC {v} SD below the mean",
                           "OFC < 3rd centile (-{v} SD)"), 2.1, 4.5, 1, descendants=True),
    "HP:0000256": Measure(("head circumference +{v} SD", "OFC > 97th centile (+{v} SD)"),
                          2.1, 4.0, 1),  # Macrocephaly
    "HP:0001513": Measure(("BMI {v} kg/m2",), 31, 44, 1, min_age=18),  # Obesity
    "HP:0001508": Measure(("weight {v} SD below the mean", "weight -{v} SD, crossing centiles"),
                          2.0, 3.5, 1),  # Failure to thrive
    "HP:0000822": Measure(("systolic BP {v} mmHg", "BP {v}/98 mmHg"), 150, 185,
                          min_age=12),  # Hypertension
    "HP:0002240": Measure(("liver edge palpable {v} cm below the costal margin",), 3, 7),
    "HP:0001744": Measure(("spleen tip palpable {v} cm below the left costal margin",), 2, 8),
    "HP:0002650": Measure(("Cobb angle {v}°", "spinal curve of {v}° (Cobb)"), 18, 55,
                          descendants=True),  # Scoliosis
    "HP:0000545": Measure(("refraction -{v} D", "spectacles of -{v} D"), 3, 9, 1),  # Myopia
    "HP:0000365": Measure(("pure-tone average {v} dB HL",), 45, 85),  # Hearing impairment
    "HP:0001249": Measure(_IQ, 45, 69, min_age=5),  # Intellectual disability
    "HP:0001256": Measure(_IQ, 50, 69, min_age=5),  # ... mild
    "HP:0002342": Measure(_IQ, 35, 49, min_age=5),  # ... moderate
    "HP:0010864": Measure(_IQ, 20, 34, min_age=5),  # ... severe
    "HP:0031936": Measure(("walked independently at {v} months",), 22, 40, min_age=3.5),
    "HP:0001622": Measure(("born at {v} weeks' gestation",), 27, 35, section=_HISTORY),
    "HP:0001511": Measure(("birth weight {v} g at term",), 1700, 2300, section=_HISTORY),
    "HP:0003236": Measure(("CK {v} U/L (ref < 200)", "creatine kinase {v} IU/L"), 900, 12000,
                          section=_LAB, descendants=True),
    "HP:0002910": Measure(("ALT {v} U/L (ref < 40)", "transaminases raised (ALT {v} U/L)"),
                          90, 420, section=_LAB, descendants=True),
    "HP:0002151": Measure(("lactate {v} mmol/L (ref < 2.2)", "plasma lactate {v} mmol/L"),
                          3.1, 8.5, 1, section=_LAB),
    "HP:0001943": Measure(("glucose {v} mmol/L", "blood glucose {v} mmol/L"), 1.4, 2.8, 1,
                          section=_LAB, descendants=True),  # Hypoglycemia
    "HP:0002902": Measure(("Na {v} mmol/L", "sodium {v} mmol/L"), 118, 131, section=_LAB),
    "HP:0002153": Measure(("K {v} mmol/L", "potassium {v} mmol/L"), 5.8, 7.2, 1, section=_LAB),
    "HP:0003072": Measure(("calcium {v} mmol/L (ref 2.2-2.6)",), 2.8, 3.6, 2, section=_LAB),
    "HP:0002901": Measure(("calcium {v} mmol/L (ref 2.2-2.6)",), 1.4, 2.0, 2, section=_LAB,
                          descendants=True),  # Hypocalcemia
    "HP:0002149": Measure(("urate {v} µmol/L",), 480, 720, section=_LAB),  # Hyperuricemia
    "HP:0003124": Measure(("total cholesterol {v} mmol/L", "LDL {v} mmol/L"), 7.5, 14, 1,
                          section=_LAB),  # Hypercholesterolemia
    "HP:0003259": Measure(("creatinine {v} µmol/L", "serum creatinine {v} µmol/L"), 140, 480,
                          section=_LAB),
    "HP:0001903": Measure(("Hb {v} g/dL", "haemoglobin {v} g/dL"), 6.2, 9.8, 1, section=_LAB,
                          descendants=True),  # Anemia
    "HP:0001873": Measure(("platelets {v} x10^9/L", "platelet count {v} x 10^9/L"), 18, 95,
                          section=_LAB, descendants=True),  # Thrombocytopenia
    "HP:0001875": Measure(("ANC {v} x10^9/L", "neutrophils {v} x10^9/L"), 0.2, 0.9, 1,
                          section=_LAB, descendants=True),  # Neutropenia
    "HP:0001882": Measure(("WBC {v} x10^9/L",), 1.5, 3.4, 1, section=_LAB),  # Leukopenia
    "HP:0000093": Measure(("urine protein/creatinine ratio {v} mg/mmol", "UPCR {v} mg/mmol"),
                          60, 450, section=_LAB, descendants=True),  # Proteinuria
    "HP:0012664": Measure(("LVEF {v}%", "ejection fraction {v}% on echocardiogram"), 20, 42,
                          section=_LAB, descendants=True),  # Reduced LV ejection fraction
}

SHORTHAND: Mapping[str, tuple[str, ...]] = {
    "HP:0001249": ("ID",), "HP:0001256": ("mild ID",), "HP:0002342": ("moderate ID",),
    "HP:0010864": ("severe ID",), "HP:0002187": ("profound ID",),
    "HP:0001263": ("GDD",), "HP:0012758": ("NDD",), "HP:0001433": ("HSM",),
    "HP:0000407": ("SNHL",), "HP:0001631": ("ASD",), "HP:0001629": ("VSD",),
    "HP:0001643": ("PDA",), "HP:0001655": ("PFO",), "HP:0001636": ("TOF",),
    "HP:0001639": ("HCM",), "HP:0001644": ("DCM",), "HP:0001712": ("LVH",),
    "HP:0001634": ("MVP",), "HP:0004755": ("SVT",), "HP:0005110": ("AFib",),
    "HP:0000822": ("HTN",), "HP:0002625": ("DVT",), "HP:0007018": ("ADHD",),
    "HP:0002020": ("GERD", "GORD"), "HP:0001508": ("FTT",), "HP:0001511": ("IUGR",),
    "HP:0000076": ("VUR",), "HP:0012622": ("CKD",), "HP:0003774": ("ESRD", "CKD stage 5"),
    "HP:0002870": ("OSA",), "HP:0001385": ("DDH",), "HP:0000010": ("recurrent UTIs",),
    "HP:0001252": ("low tone", "hypotonic"), "HP:0001250": ("fits",),
}

# (label pattern, rewrites): the first pattern matching a finding's running-text name applies.
_PARAPHRASES: tuple[tuple[re.Pattern, tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), rewrites) for pattern, rewrites in (
        (r"^(?:elevated|increased) circulating (.+?) (?:concentration|level)s?$",
         ("raised {}", "high {}", "{} elevated")),
        (r"^(?:decreased|reduced) circulating (.+?) (?:concentration|level)s?$",
         ("low {}", "reduced {}")),
        (r"^(?:elevated|increased) (.+)$", ("raised {}", "high {}")),
        (r"^(?:decreased|reduced) (.+)$", ("low {}", "diminished {}")),
        (r"^abnormality of (?:the )?(.+)$", ("abnormal {}", "{} anomaly")),
        (r"^abnormal (.+) morphology$", ("structurally abnormal {}", "malformed {}")),
        (r"^hypoplasia of (?:the )?(.+)$", ("hypoplastic {}", "small {}", "underdeveloped {}")),
        (r"^recurrent (.+)$", ("repeated {}", "frequent {}")),
        (r"^(broad|long|short|small|large|thin|thick|wide|narrow|prominent|flat|deep|sparse|full"
         r"|tall|coarse) (?!stature$)(\w+)$", ("{}-appearing {}",)),
    ))


def measure_for(hpo_id: str, ontology: ontology_lib.Ontology) -> Measure | None:
  """The term's own measure, else that of its most specific ancestor that covers descendants."""
  if hpo_id in MEASURES:
    return MEASURES[hpo_id]
  covering = [a for a in ontology.ancestors(hpo_id) if a in MEASURES and MEASURES[a].descendants]
  if not covering:
    return None
  return MEASURES[max(covering, key=lambda a: (len(ontology.ancestors(a)), a))]


def paraphrases(name: str) -> list[str]:
  """Rewrites of a finding's running-text name ('decreased x' → 'low x'); [] when none applies."""
  for pattern, rewrites in _PARAPHRASES:
    match = pattern.match(name)
    if match:
      return [r.format(*match.groups()) for r in rewrites]
  return []


@dataclasses.dataclass(frozen=True)
class _Normal:
  """A normal finding or unrelated history, the organ systems it calls normal, and who it fits."""
  text: str
  systems: tuple[str, ...] = ()  # HPO roots: no observed finding may fall under one
  min_age: float = 0.0
  max_age: float = float("inf")

  def fits(self, age: float | None) -> bool:
    """Statements for an age range need a known age inside it."""
    if self.min_age == 0 and self.max_age == float("inf"):
      return True
    return age is not None and self.min_age <= age < self.max_age


_NORMALS = (
    _Normal("Immunizations are up to date."),
    _Normal("NKDA."),
    _Normal("Vision screening was normal.", ("HP:0000478",)),  # Abnormality of the eye
    _Normal("Passed the newborn hearing screen.", ("HP:0000598",)),  # ... of the ear
    _Normal("Born at term.", ("HP:0001197",)),  # ... of prenatal development or birth
    _Normal("Thyroid function tests were normal.", ("HP:0000820",)),  # ... of the thyroid
    _Normal("Renal ultrasound was unremarkable.", ("HP:0000079",)),  # ... of the urinary system
    _Normal("Echocardiogram was normal.", ("HP:0001626",)),  # ... of the cardiovascular system
    _Normal("Blood pressure normal for age.", ("HP:0030972",)),  # Abnormal blood pressure
    _Normal("Lives at home with parents and one sibling.", max_age=18),
    _Normal("Non-smoker; drinks alcohol rarely.", min_age=18),
)


def normal_findings(observed: Sequence[str], age: float | None,
                    ontology: ontology_lib.Ontology) -> list[str]:
  """The normal statements that contradict no observed finding and fit the patient's age."""
  ancestors = set().union(*(ontology.ancestors(h) for h in observed if h in ontology.terms))
  return [n.text for n in _NORMALS if n.fits(age) and not ancestors.intersection(n.systems)]


_AR, _AD, _XLR, _XLD = "HP:0000007", "HP:0000006", "HP:0001419", "HP:0001423"
_FAMILY = {
    _AR: ("Parents are consanguineous (first cousins).",
          "Consanguineous parents; an older sibling had similar problems.",
          "Parents are healthy and consanguineous."),
    _AD: ("Mother has similar but milder features.", "Father was similarly affected as a child.",
          "Parents are unaffected; this appears to be the first case in the family."),
    _XLD: ("Mother has similar but milder features.",),
}
# A relative's common condition (HPO id): unrelated history, unless the patient has something
# close to it (then it would blur what the patient has or lacks).
_RELATIVES = (("Father has hypertension.", "HP:0000822"),
              ("Maternal grandmother had type 2 diabetes.", "HP:0005978"),
              ("A paternal aunt has migraine.", "HP:0002076"),
              ("Mother has asthma.", "HP:0002099"),
              ("Maternal grandfather had hypothyroidism.", "HP:0000821"))
_X_LINKED_MALE = ("An affected maternal uncle.", "A maternal uncle had similar problems.")
_UNKNOWN = ("Family history is noncontributory.", "Parents are healthy and unrelated.")


def family_history(inheritance: Sequence[str], sex: str | None) -> tuple[str, ...]:
  """Pedigree phrases fitting the one Mendelian mode of inheritance given (generic otherwise)."""
  modes = [m for m in (_AR, _AD, _XLR, _XLD) if m in inheritance]
  if len(modes) != 1:
    return _UNKNOWN
  if modes[0] == _XLR:
    return _X_LINKED_MALE if sex == "MALE" else _UNKNOWN
  return _FAMILY[modes[0]]


def since(onset_age: float) -> str:
  """'since birth', 'since 9 months of age', 'since age 4'."""
  if onset_age <= 0:
    return "since birth"
  if onset_age < 2:
    return f"since {max(1, round(onset_age * 12))} months of age"
  return f"since age {int(onset_age)}"


def course(years: float) -> tuple[str, ...]:
  """Course phrases over `years` (whole years, at least one)."""
  n = max(1, int(years))
  span = f"{n} year{'s' if n > 1 else ''}"
  return (f"progressive over {span}", f"slowly worsening over the past {span}",
          f"gradually progressive over {span}")


def relatives_conditions(case_terms: Sequence[str], ontology: ontology_lib.Ontology) -> list[str]:
  """Relatives' common conditions neither ancestor nor descendant of one of the case's terms."""
  near = set()
  for term in (h for h in case_terms if h in ontology.terms):
    near |= ontology.ancestors(term) | ontology.descendants(term)
  return [text for text, hpo_id in _RELATIVES if hpo_id not in near]
