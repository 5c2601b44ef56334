"""Note renderer: a structured Case → a varied, realistic clinical note that never names the diagnosis.

Styles (STYLES): history of present illness ('hpi'), consult letter ('consult'), problem list
('problem_list') and one-paragraph summary ('summary') — DEFAULT_STYLES, the mix every recipe
renders unless its RenderConfig names styles — and 'clinical'. In the first four, findings are
named by their HPO label, an exact synonym or a layperson synonym, so a concept recognizer reads
back exactly the case's terms. 'clinical' writes as clinicians do (tables and rules in
rarejax.cases.clinical): measurements for measurable terms ("height 2.8 SD below the mean",
"CK 2,340 U/L (ref < 200)") in Exam / Investigations lines, shorthand ("GDD", "HSM", "SNHL"),
paraphrased label patterns ("raised creatinine"), onset and course ("since age 2, progressive
over 3 years"), negations of five forms ("No X.", "X was absent.", "without X", "Denies X.",
"X was not observed."), family history fitting the gold disease's inheritance ("consanguineous
parents", "an affected maternal uncle") with a relative's unrelated condition, and normal
findings or unrelated history that no observed finding contradicts ("Immunizations are up to
date."). The synonym/layperson knobs and `shuffle` apply to every style.
Excluded findings always sit in a negation (`NEGATION_CUES`, all of them cues of the concept
recognizer); age, sex and onset become phrases ("a 6-year-old girl", "6 yo F", "since infancy").
No text that names a gold disease (its name, synonyms, the labels of its equivalents) or any
disease id is ever written: every phrase, whatever the style, goes through the same guard
(`_choose`/`_safe`) and such phrasings are skipped before they reach the note.
"""
from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Sequence

import numpy as np

from rarejax import knowledge
from rarejax.cases import clinical
from rarejax.cases import onset as onset_lib
from rarejax.cases.case import Case

# The default mix: what every recipe renders unless it names styles (kept, so cached data stays).
DEFAULT_STYLES = ("hpi", "consult", "problem_list", "summary")
STYLES = (*DEFAULT_STYLES, "clinical")
# Every excluded finding is written inside one of these (case-insensitive, whole words).
NEGATION_CUES = ("denies", "deny", "no evidence of", "negative for", "there is no",
                 "does not have", "do not have", "showed no", "was ruled out", "were ruled out",
                 "without", "was absent", "were absent", "was not observed", "were not observed",
                 "no")
_DISEASE_ID = re.compile(r"\b(?:OMIM|ORPHA|ORPHANET|MONDO|DECIPHER|MIM|DOID)\s*:\s*\d+", re.I)
_EXACT_KINDS = ("", "uk_spelling", "plural_form")
# 'Intellectual disability, severe' → 'severe intellectual disability' (commas would split lists).
_INVERTED = re.compile(r"(.+), (mild|moderate|severe|profound|male|female|(?:first|second|third) "
                       r"degree)$")


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """Knobs of the note renderer (difficulty rises with synonym and layperson rates)."""
  synonym_rate: float = 0.3  # chance a finding is named by an exact synonym (if it has one)
  layperson_rate: float = 0.15  # chance a finding is named in lay words (if HPO gives some)
  shuffle: bool = True  # present findings in random order (else in the case's order)
  styles: tuple[str, ...] = DEFAULT_STYLES  # note layouts drawn from, uniformly (of STYLES)

  def __post_init__(self):
    if not (0 <= self.synonym_rate <= 1 and 0 <= self.layperson_rate <= 1
            and self.synonym_rate + self.layperson_rate <= 1):
      raise ValueError("synonym_rate and layperson_rate must be in [0, 1] and sum to at most 1")
    unknown = set(self.styles) - set(STYLES)
    if not self.styles or unknown:
      raise ValueError(f"styles must be a non-empty subset of {STYLES}, got {self.styles}")


@dataclasses.dataclass(frozen=True)
class _Person:
  """Pronouns and verb forms agreeing with them."""
  subj: str
  obj: str
  poss: str
  has: str
  was: str
  denies: str
  does: str


_PEOPLE = {
    "FEMALE": _Person("she", "her", "her", "has", "was", "denies", "does"),
    "MALE": _Person("he", "him", "his", "has", "was", "denies", "does"),
    None: _Person("they", "them", "their", "have", "were", "deny", "do"),
}
# Onset category → (phrase after "first noted", phrase after "has been affected", noun).
_ONSET_PHRASES = {
    "antenatal": (("prenatally", "on prenatal ultrasound"), ("since before birth",), "prenatal"),
    "congenital": (("at birth",), ("since birth",), "congenital"),
    "neonatal": (("in the neonatal period", "shortly after birth"),
                 ("since the neonatal period",), "neonatal"),
    "infantile": (("in infancy", "in the first year of life"), ("since infancy",), "infancy"),
    "childhood": (("in early childhood", "as a toddler"), ("since early childhood",),
                  "early childhood"),
    "juvenile": (("in later childhood", "during the school years"), ("since later childhood",),
                 "later childhood"),
    "pediatric": (("in childhood",), ("since childhood",), "childhood"),
    "young_adult": (("in early adulthood", "in young adulthood"), ("since early adulthood",),
                    "early adulthood"),
    "middle_age": (("in middle age",), ("since middle age",), "middle age"),
    "late": (("late in life", "in later adulthood"), ("for some years",), "late adulthood"),
    "adult": (("in adulthood",), ("since adulthood",), "adulthood"),
}


def _onset_kind(onset: str | None) -> str | None:
  """An onset term → a key of _ONSET_PHRASES (None for unknown terms)."""
  if onset in onset_lib.ANTENATAL:
    return "antenatal"
  named = {"HP:0003577": "congenital", "HP:0003623": "neonatal", "HP:0003593": "infantile",
           "HP:0011463": "childhood", "HP:0003621": "juvenile", "HP:0410280": "pediatric",
           "HP:0003596": "middle_age", "HP:0003584": "late", "HP:6000315": "late"}
  if onset in named:
    return named[onset]
  if onset in onset_lib.ONSET_AGES:
    low, _ = onset_lib.ONSET_AGES[onset]
    return "young_adult" if low < 40 and onset != "HP:0003581" else "adult"
  return None


def forbidden_names(case: Case, kb: knowledge.KnowledgeBase) -> list[str]:
  """Every name of the case's gold diseases: names, synonyms, equivalents' names, source labels."""
  names = set(case.provenance.get("gold_labels", ()))
  for disease_id in case.gold_ids:
    disease = kb.diseases.get(disease_id)
    if disease is None:
      continue
    names.update((disease.name, *disease.synonyms))
    names.update(kb.diseases[x].name for x in disease.xrefs if x in kb.diseases)
  return sorted(n for n in names if n.strip())


def leaks(note: str, names: Sequence[str]) -> list[str]:
  """The names (whole words, case-insensitive) and disease ids that occur in `note`."""
  found = [n for n in names if _name_pattern(n).search(note)]
  return found + _DISEASE_ID.findall(note)


def _name_pattern(name: str) -> re.Pattern:
  words = r"\s+".join(re.escape(w) for w in name.split())
  return re.compile(rf"(?<!\w){words}(?!\w)", re.I)


def render_note(case: Case, kb: knowledge.KnowledgeBase, config: RenderConfig = RenderConfig(),
                seed: int = 0) -> str:
  """Writes a clinical note for a structured case; identical for identical (case, config, seed)."""
  return _Writer(case, kb, config, seed).note()


def render_cases(cases: Sequence[Case], kb: knowledge.KnowledgeBase,
                 config: RenderConfig = RenderConfig(), seed: int = 0) -> list[Case]:
  """Fills in the note of every case without one (notes already written are kept), recording the
  renderer's knobs, seed and the note's style in its provenance ('renderer')."""
  out = []
  for case in cases:
    if case.note:
      out.append(case)
      continue
    writer = _Writer(case, kb, config, seed)
    out.append(dataclasses.replace(case, note=writer.note(), provenance={
        **case.provenance,
        "renderer": {**dataclasses.asdict(config), "seed": seed, "style": writer.style}}))
  return out


class _Writer:
  """One note being written: the random stream, the person, and the leak guard."""

  def __init__(self, case: Case, kb: knowledge.KnowledgeBase, config: RenderConfig, seed: int):
    self.case = case
    self.kb = kb
    self.config = config
    self.rng = np.random.default_rng([seed, zlib.crc32(case.id.encode())])
    self.person = _PEOPLE[case.sex]
    self.forbidden = [_name_pattern(n) for n in forbidden_names(case, kb)]
    self.style = config.styles[self.rng.integers(len(config.styles))]  # the stream's first draw

  def note(self) -> str:
    """Writes the note in the chosen style."""
    text = self._clinical() if self.style == "clinical" else self._templated(self.style)
    return self._scrub(re.sub(r"[ \t]+", " ", text).strip())

  def _templated(self, style: str) -> str:
    """A note of one of DEFAULT_STYLES: findings named, shuffled, laid out by the style."""
    present = self._phrases(self.case.observed)
    absent = self._phrases(self.case.excluded)
    if self.config.shuffle:
      present = [present[i] for i in self.rng.permutation(len(present))]
      absent = [absent[i] for i in self.rng.permutation(len(absent))]
    return getattr(self, f"_{style}")(present, absent)

  # ---- words -------------------------------------------------------------------------------

  def _safe(self, text: str) -> bool:
    return not any(p.search(text) for p in self.forbidden) and not _DISEASE_ID.search(text)

  def _scrub(self, text: str) -> str:
    """Last resort: blanks a gold name formed across two safe pieces (never seen in practice)."""
    for pattern in (*self.forbidden, _DISEASE_ID):
      text = pattern.sub("[…]", text)
    return text

  def _choose(self, options: Sequence[str]) -> str:
    """A random option that names no gold disease ('' when none is safe)."""
    safe = [o for o in options if self._safe(o)]
    return safe[self.rng.integers(len(safe))] if safe else ""

  def _phrases(self, hpo_ids: Sequence[str]) -> list[str]:
    """Surface forms for findings; findings with no safe or known name are left out."""
    phrases = []
    for hpo_id in hpo_ids:
      phrase = self._phrase(hpo_id)
      if phrase and phrase not in phrases:
        phrases.append(phrase)
    return phrases

  def _phrase(self, hpo_id: str) -> str:
    """Label, exact synonym or layperson synonym of a term, by the configured rates."""
    resolved = self.kb.ontology.resolve(hpo_id)
    if resolved is None:
      return ""
    term = self.kb.ontology.terms[resolved]
    lay = [s.text for s in term.synonyms if s.kind == "layperson" and s.scope == "EXACT"]
    exact = [s.text for s in term.synonyms
             if s.kind in _EXACT_KINDS and s.scope == "EXACT" and "," not in s.text]
    draw = self.rng.random()
    if draw < self.config.layperson_rate and any(map(self._safe, lay)):
      options = lay
    elif (draw < self.config.layperson_rate + self.config.synonym_rate
          and any(map(self._safe, exact))):
      options = exact
    else:
      options = [term.name, *exact, *lay]  # the label, unless it names the disease
      options = [term.name] if self._safe(term.name) else options
    return _tidy(self._choose(options))

  def _join(self, items: Sequence[str], last: str = "and") -> str:
    if len(items) <= 1:
      return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"

  def _chunks(self, items: Sequence[str]) -> list[list[str]]:
    """Splits findings into sentences of 2–4."""
    chunks, i = [], 0
    while i < len(items):
      size = int(self.rng.integers(2, 5))
      chunks.append(list(items[i:i + size]))
      i += size
    return chunks

  def _age_phrase(self) -> str:
    """'6-year-old', '4-month-old', '10-day-old' or ''."""
    age = self.case.age
    if age is None:
      return ""
    if age < 1 / 12:
      return f"{max(1, round(age * 365.25))}-day-old"
    if age < 2:
      return f"{max(1, round(age * 12))}-month-old"
    return f"{int(age)}-year-old"

  def _noun(self) -> str:
    """'girl', 'man', 'infant', 'patient'… by age and sex."""
    age, sex = self.case.age, self.case.sex
    if age is None:
      return {"FEMALE": "female patient", "MALE": "male patient", None: "patient"}[sex]
    for limit, nouns in ((1, ("baby girl", "baby boy", "infant")), (13, ("girl", "boy", "child")),
                         (18, ("adolescent girl", "adolescent boy", "adolescent")),
                         (float("inf"), ("woman", "man", "adult"))):
      if age < limit:
        return nouns[{"FEMALE": 0, "MALE": 1, None: 2}[sex]]
    raise AssertionError("unreachable")

  def _someone(self, article: str = "a") -> str:
    """'a 6-year-old girl' / 'this 6-year-old girl' / 'a 6-year-old female'."""
    age = self._age_phrase()
    noun = self._noun()
    if age and self.case.sex and self.rng.random() < 0.3:
      noun = self.case.sex.lower()
    words = f"{age} {noun}".strip()
    if article == "a":
      article = "an" if re.match(r"(8|11|18|8\d)\b|[aeio]", words) else "a"
    return f"{article} {words}"

  def _onset_category(self) -> str | None:
    """The case's onset category, unless it contradicts the age (onset after the last visit)."""
    onset, age = self.case.onset, self.case.age
    if age is not None and onset in onset_lib.ONSET_AGES and onset_lib.ONSET_AGES[onset][0] > age:
      return None
    return _onset_kind(onset)

  def _onset_sentence(self) -> str:
    category = self._onset_category()
    if category is None:
      return ""
    when, since, _ = _ONSET_PHRASES[category]
    p = self.person
    return self._choose([
        *(f"Symptoms were first noted {w}." for w in when),
        *(f"{_cap(p.poss)} problems were first recognized {w}." for w in when),
        *(f"{_cap(p.subj)} {p.has} been affected {s}." for s in since),
    ])

  def _varied(self, options_per_sentence: Sequence[Sequence[str]]) -> list[str]:
    """One sentence per options list, walking the templates from a random start so that
    consecutive sentences use different templates (unsafe picks fall back to `_choose`)."""
    out, start = [], int(self.rng.integers(1 << 16))
    for j, options in enumerate(options_per_sentence):
      pick = options[(start + j) % len(options)]
      out.append(pick if self._safe(pick) else self._choose(options))
    return out

  def _positives(self, present: Sequence[str]) -> list[str]:
    p = self.person
    return self._varied([[
        f"{_cap(p.subj)} {p.has} {listed}.",
        f"History is significant for {listed}.",
        f"Examination revealed {listed}.",
        f"{_cap(p.subj)} {p.was} also noted to have {listed}.",
        f"Additional findings include {listed}.",
        f"On evaluation, {p.subj} {p.was} found to have {listed}.",
    ] for listed in map(self._join, self._chunks(present))])

  def _negatives(self, absent: Sequence[str]) -> list[str]:
    p = self.person
    return self._varied([[
        f"{_cap(p.subj)} {p.denies} {self._join(items, 'or')}.",
        f"No evidence of {self._join(items, 'or')}.",
        f"Negative for {self._join(items, 'or')}.",
        f"There is no {self._join(items, 'or')}.",
        f"{_cap(p.subj)} {p.does} not have {self._join(items, 'or')}.",
        f"Examination showed no {self._join(items, 'or')}.",
        f"{_cap(self._join(items))} {'were' if len(items) > 1 else 'was'} ruled out.",
    ] for items in self._chunks(absent)])

  # ---- styles ------------------------------------------------------------------------------

  def _hpi(self, present: list[str], absent: list[str]) -> str:
    chief, rest = present[:2], present[2:]
    opening = self._choose([
        f"{_cap(self._someone())} presents for evaluation of {self._join(chief)}.",
        f"{_cap(self._someone())} was referred with {self._join(chief)}.",
        f"HPI: {self._someone()} seen today because of {self._join(chief)}.",
    ]) if chief else _cap(f"{self._someone()} presents for evaluation.")
    sentences = [opening, self._onset_sentence()]
    sentences += self._positives(rest)
    sentences += self._negatives(absent)
    sentences.append(self._choose(["Further work-up is pending.", "Family history is unremarkable.",
                                   "Parents are not known to be related.", ""]))
    return " ".join(s for s in sentences if s)

  def _consult(self, present: list[str], absent: list[str]) -> str:
    p = self.person
    greeting = self._choose(["Dear colleague,", "Dear Dr. Smith,", "To whom it may concern,"])
    first = f"Thank you for referring {self._someone('this')} to our clinic."
    body = [self._onset_sentence()]
    body += self._positives(present)
    body += self._negatives(absent)
    closing = self._choose([f"We will see {p.obj} again once further investigations are complete.",
                            f"We have arranged further studies and will review {p.obj} in clinic."])
    paragraphs = [greeting, " ".join([first, *(s for s in body if s)]), closing, "Kind regards,"]
    return "\n\n".join(paragraphs)

  def _problem_list(self, present: list[str], absent: list[str]) -> str:
    age = self._age_phrase().replace("-", " ")  # '6 year old'
    demographics = " ".join(x for x in (age, (self.case.sex or "").lower()) if x)
    lines = [f"Patient: {demographics or 'age and sex not recorded'}"]
    category = self._onset_category()
    if category:
      lines.append(f"Onset: {_ONSET_PHRASES[category][2]}")
    lines += ["", "Problem list:"]
    lines += [f"{i}. {_cap(item)}" for i, item in enumerate(present, 1)]
    if absent:
      lines += ["", "Pertinent negatives:"]
      lines += [f"- no {item}" for item in absent]
    return "\n".join(lines)

  def _summary(self, present: list[str], absent: list[str]) -> str:
    sentences = [f"{_cap(self._someone())} with {self._join(present)}." if present
                 else f"{_cap(self._someone())}.", self._onset_sentence()]
    sentences += self._negatives(absent)
    return " ".join(s for s in sentences if s)

  # ---- the clinical style ------------------------------------------------------------------

  def _clinical(self) -> str:
    """Shorthand demographics, onset and course, findings as measurements, shorthand or
    paraphrases by section, negations of several forms, family history and normal findings."""
    sections: dict[str, list[str]] = {s: [] for s in ("plain", *clinical.SECTIONS)}
    for hpo_id in self._ordered(self.case.observed):
      section, phrase = self._clinical_finding(hpo_id)
      if phrase and phrase not in sections[section]:
        sections[section].append(phrase)
    absent = list(dict.fromkeys(filter(None, map(self._clinical_name,
                                                 self._ordered(self.case.excluded)))))
    chief, rest = sections["plain"][:2], sections["plain"][2:]
    hpi = [self._course_sentence(), *(f"{_cap(p)}." for p in sections["history"])]
    hpi += self._positives(rest) + self._clinical_negatives(absent)
    lines = [self._clinical_opening(chief), "HPI: " + " ".join(s for s in hpi if s)]
    lines += [f"{title}: {'; '.join(sections[key])}." for key, title in
              (("exam", "Exam"), ("investigations", "Investigations")) if sections[key]]
    lines += [f"{title}: {text}" for title, text in
              (("FHx", self._family_sentence()), ("Other", self._normal_sentences())) if text]
    return "\n".join(lines)

  def _ordered(self, hpo_ids: Sequence[str]) -> list[str]:
    """The ids, shuffled when the config says so."""
    if not self.config.shuffle:
      return list(hpo_ids)
    return [hpo_ids[i] for i in self.rng.permutation(len(hpo_ids))]

  def _clinical_finding(self, hpo_id: str) -> tuple[str, str]:
    """(section, phrase) of an observed finding: a measurement where the term has one, else its
    clinical name ('plain')."""
    resolved = self.kb.ontology.resolve(hpo_id)
    if resolved is None:
      return "plain", ""
    measure = clinical.measure_for(resolved, self.kb.ontology)
    age = self.case.age
    if (measure and (not measure.min_age or (age is not None and age >= measure.min_age))
        and self.rng.random() < clinical.MEASURE_RATE):
      phrase = self._choose(measure.phrases(self.rng))
      if phrase:
        return measure.section, phrase
    return "plain", self._clinical_name(resolved)

  def _clinical_name(self, hpo_id: str) -> str:
    """Shorthand ('GDD'), else a paraphrase ('raised creatinine') or the name `_phrase` picks."""
    resolved = self.kb.ontology.resolve(hpo_id)
    short = clinical.SHORTHAND.get(resolved, ())
    if short and self.rng.random() < clinical.SHORTHAND_RATE:
      phrase = self._choose(short)
      if phrase:
        return phrase
    plain = self._phrase(hpo_id)
    rewrites = clinical.paraphrases(plain)
    if rewrites and self.rng.random() < clinical.PARAPHRASE_RATE:
      return self._choose(rewrites) or plain
    return plain

  def _clinical_opening(self, chief: Sequence[str]) -> str:
    reason = self._join(chief) if chief else "evaluation"
    return self._choose([f"{self._shorthand_someone()} referred for {reason}.",
                         f"{_cap(self._someone())} seen in clinic for {reason}.",
                         f"Reason for referral: {reason}."])

  def _shorthand_someone(self) -> str:
    """'6 yo F', '4 mo M', '10-day-old F', 'Patient'."""
    age = self.case.age
    if age is None:
      years = ""
    elif age < 1 / 12:
      years = self._age_phrase()
    else:
      years = f"{int(age)} yo" if age >= 2 else f"{max(1, round(age * 12))} mo"
    sex = {"FEMALE": "F", "MALE": "M", None: ""}[self.case.sex]
    return " ".join(x for x in (years, sex) if x) or "Patient"

  def _onset_age(self) -> float | None:
    """An onset age in the case's onset range, not after its age (None when either is unknown)."""
    onset, age = self.case.onset, self.case.age
    if age is None or onset not in onset_lib.ONSET_AGES or self._onset_category() is None:
      return None
    low, high = onset_lib.ONSET_AGES[onset]
    return float(self.rng.uniform(low, min(high, age)))

  def _course_sentence(self) -> str:
    """'Symptoms since age 2, progressive over 3 years.' (the onset sentence without an age)."""
    onset_age = self._onset_age()
    if onset_age is None:
      return self._onset_sentence()
    sentence = f"Symptoms {clinical.since(onset_age)}"
    years = self.case.age - onset_age
    if years >= 1 and self.rng.random() < clinical.COURSE_RATE:
      sentence += ", " + self._choose(clinical.course(years))
    return sentence + "."

  def _clinical_negatives(self, absent: Sequence[str]) -> list[str]:
    who = "Parents deny" if self.case.age is not None and self.case.age < 12 else "Denies"
    sentences = []
    for items in self._chunks(absent):
      listed, either = _cap(self._join(items)), self._join(items, "or")
      were = "were" if len(items) > 1 else "was"
      sentences.append([f"No {either}.", f"{listed} {were} absent.",
                        f"Otherwise well, without {either}.", f"{who} {either}.",
                        f"{listed} {were} not observed."])
    return self._varied(sentences)

  def _family_sentence(self) -> str:
    """A pedigree phrase fitting the gold diseases' inheritance, and maybe a relative's unrelated
    condition ('' for some notes)."""
    if self.rng.random() >= clinical.FAMILY_RATE:
      return ""
    inheritance = [m for d in self.case.gold_ids if d in self.kb.diseases
                   for m in self.kb.diseases[d].inheritance]
    pedigree = self._choose(clinical.family_history(inheritance, self.case.sex))
    relatives = clinical.relatives_conditions([*self.case.observed, *self.case.excluded],
                                              self.kb.ontology)
    if relatives and self.rng.random() < clinical.RELATIVE_RATE:
      return f"{pedigree} {self._choose(relatives)}".strip()
    return pedigree

  def _normal_sentences(self) -> str:
    """One or two normal findings or unrelated history that no observed finding contradicts."""
    options = clinical.normal_findings(self.case.observed, self.case.age, self.kb.ontology)
    picked = [options[i] for i in self.rng.permutation(len(options))]
    return " ".join([o for o in picked if self._safe(o)][:int(self.rng.integers(1, 3))])


def _cap(text: str) -> str:
  return text[:1].upper() + text[1:]


def _tidy(name: str) -> str:
  """A term name as running text: lower-cased first word, trailing modifier moved in front."""
  return _INVERTED.sub(r"\2 \1", _lower_first(name))


def _lower_first(text: str) -> str:
  """'Short stature' → 'short stature'; acronyms ('EEG abnormality', 'IgA deficiency') kept."""
  first = text.split(" ", 1)[0]
  return text[:1].lower() + text[1:] if first[1:].islower() or len(first) == 1 else text
