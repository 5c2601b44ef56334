"""The one case type shared by every stage, its JSON form, format errors and batch read reports."""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import numbers
import re
from typing import Any, Iterator, Mapping

SEXES = ("MALE", "FEMALE")
# outer validation cases while developing on the inner split (split.development_split)
HELDOUT = "heldout"
SPLITS = ("", "train", "validation", "test", HELDOUT)
SOURCES = ("", "phenopacket", "text", "jsonl", "simulated")
_INDEX = re.compile(r"\[\d+\]")


class CaseFormatError(ValueError):
  """A case could not be read; names the file (and zip member or line) and the offending field."""

  def __init__(self, where: str, field: str, problem: str, detail: str = ""):
    self.where = where
    self.field = field
    self.problem = problem
    self.detail = detail
    message = f"{where}: field '{field}': {problem}" if where else f"field '{field}': {problem}"
    super().__init__(f"{message} ({detail})" if detail else message)

  def __reduce__(self):  # picklable, so errors survive process pools
    return type(self), (self.where, self.field, self.problem, self.detail)

  @property
  def reason(self) -> str:
    """Field and problem without file-specific detail: the key batch reports count by."""
    return f"{_INDEX.sub('[]', self.field)}: {self.problem}"


def freeze(value: Any) -> Any:
  """JSON-style value → hashable form: mappings become FrozenMap, lists become tuples."""
  if value is None or isinstance(value, (str, bool)):
    return value
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, Mapping):
    return FrozenMap(value)
  if isinstance(value, (list, tuple)):
    return tuple(freeze(v) for v in value)
  raise TypeError(f"provenance values must be JSON-serializable, got {type(value).__name__}: "
                  f"{value!r}")


def thaw(value: Any) -> Any:
  """Inverse of `freeze`: FrozenMap → dict, tuple → list (for json.dumps)."""
  if isinstance(value, FrozenMap):
    return {k: thaw(v) for k, v in value.items()}
  if isinstance(value, tuple):
    return [thaw(v) for v in value]
  return value


class FrozenMap(Mapping[str, Any]):
  """An immutable, hashable str-keyed mapping of JSON-style values (keeps Case hashable)."""

  __slots__ = ("_data",)

  def __init__(self, items: Mapping[str, Any] | None = None):
    self._data = {str(k): freeze(v) for k, v in (items or {}).items()}

  def __getitem__(self, key: str) -> Any:
    return self._data[key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._data)

  def __len__(self) -> int:
    return len(self._data)

  def __hash__(self) -> int:
    return hash(tuple(sorted(self._data.items(), key=lambda kv: kv[0])))

  def __repr__(self) -> str:
    return f"FrozenMap({self._data!r})"


@dataclasses.dataclass(frozen=True)
class Case:
  """A patient: note text, gold disease ids, structured phenotypes, demographics and provenance."""
  id: str
  note: str  # clinical note text; '' for a structured case not yet rendered
  gold_ids: tuple[str, ...]  # e.g. ('OMIM:154700',)
  observed: tuple[str, ...] = ()  # HPO ids present
  excluded: tuple[str, ...] = ()  # HPO ids explicitly absent
  age: float | None = None  # years at last encounter
  sex: str | None = None  # 'MALE' | 'FEMALE' | None
  onset: str | None = None  # HPO onset term id
  source: str = ""  # one of SOURCES
  split: str = ""  # one of SPLITS
  pmid: str | None = None  # 'PMID:123': the publication, unit of the honest split
  provenance: Mapping[str, Any] = dataclasses.field(default_factory=FrozenMap)

  def __post_init__(self):
    for name in ("gold_ids", "observed", "excluded"):
      value = getattr(self, name)
      if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"Case.{name} must be a sequence of id strings, got {value!r}")
      object.__setattr__(self, name, tuple(value))
    if self.sex not in (None, *SEXES):
      raise ValueError(f"Case.sex must be one of {SEXES} or None, got {self.sex!r}")
    if self.split not in SPLITS:
      raise ValueError(f"Case.split must be one of {SPLITS}, got {self.split!r}")
    if self.source not in SOURCES:
      raise ValueError(f"Case.source must be one of {SOURCES}, got {self.source!r}")
    if self.age is not None:
      object.__setattr__(self, "age", float(self.age))
    if not isinstance(self.provenance, FrozenMap):
      object.__setattr__(self, "provenance", FrozenMap(self.provenance))

  def to_json(self) -> dict[str, Any]:
    """Plain dict (lists, dicts, scalars) ready for json.dumps; `from_json` inverts it."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return {k: thaw(v) for k, v in out.items()}

  @classmethod
  def from_json(cls, obj: Any, where: str = "") -> Case:
    """Builds a Case from its dict form; raises CaseFormatError naming the field on bad input."""
    if not isinstance(obj, Mapping):
      raise CaseFormatError(where, "<record>", f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _FIELD_NAMES)
    if unknown:
      raise CaseFormatError(where, unknown[0], "unknown field",
                            f"allowed fields: {', '.join(sorted(_FIELD_NAMES))}")
    for name in ("id", "note", "gold_ids"):
      if name not in obj:
        raise CaseFormatError(where, name, "missing required field")
    kwargs = {name: _checked(where, name, obj[name]) for name in obj}
    try:
      return cls(**kwargs)
    except (TypeError, ValueError) as err:
      raise CaseFormatError(where, "<record>", "invalid case", str(err)) from None


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Case))
_STRING_LISTS = ("gold_ids", "observed", "excluded")
_STRINGS = ("id", "note", "source", "split")
_OPTIONAL_STRINGS = ("sex", "onset", "pmid")


def _is_age(value: Any) -> bool:
  """A finite non-negative number of years (bool, NaN, inf and ints beyond float are not)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  try:
    return 0 <= float(value) < math.inf
  except OverflowError:
    return False


def check_encodable(where: str, name: str, value: Any) -> None:
  """Rejects a JSON value that cannot be written back as UTF-8 JSON: strings with unpaired
  surrogates (from '\\ud800' escapes; not valid Unicode) or nesting too deep."""
  try:
    json.dumps(value, ensure_ascii=False).encode("utf-8")
  except UnicodeEncodeError as err:
    raise CaseFormatError(where, name, "invalid Unicode: unpaired surrogate",
                          f"at character {err.start} of its JSON") from None
  except RecursionError:
    raise CaseFormatError(where, name, "nested too deeply") from None


def _checked(where: str, name: str, value: Any) -> Any:
  """Type-checks one JSON field of a Case; returns the value in the form Case expects."""
  check_encodable(where, name, value)
  if name in _STRING_LISTS:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      raise CaseFormatError(where, name, "expected a list of strings", f"got {value!r:.80}")
    return tuple(value)
  if name in _STRINGS and not isinstance(value, str):
    raise CaseFormatError(where, name, "expected a string", f"got {type(value).__name__}")
  if name in _OPTIONAL_STRINGS and value is not None and not isinstance(value, str):
    raise CaseFormatError(where, name, "expected a string or null", f"got {type(value).__name__}")
  if name == "sex" and value not in (None, *SEXES):
    raise CaseFormatError(where, name, f"expected one of {SEXES} or null", f"got {value!r}")
  if name == "split" and value not in SPLITS:
    raise CaseFormatError(where, name, f"expected one of {SPLITS}", f"got {value!r}")
  if name == "source" and value not in SOURCES:
    raise CaseFormatError(where, name, f"expected one of {SOURCES}", f"got {value!r}")
  if name == "age" and value is not None and not _is_age(value):
    raise CaseFormatError(where, name, "expected a finite non-negative number of years or null",
                          f"got {value!r:.40}")
  if name == "provenance":
    if not isinstance(value, dict):
      raise CaseFormatError(where, name, "expected a JSON object", f"got {type(value).__name__}")
    try:
      frozen = FrozenMap(value)
      hash(frozen)
    except RecursionError:
      raise CaseFormatError(where, name, "nested too deeply") from None
    return frozen
  return value


@dataclasses.dataclass
class ReadReport:
  """What a batch reader did: cases read, files skipped and why, HPO ids mapped or dropped."""
  n_read: int = 0
  n_skipped: int = 0
  reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list[str] = dataclasses.field(default_factory=list)  # first error messages
  hpo_mapped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  hpo_dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  max_examples: int = 10

  def skip(self, error: CaseFormatError) -> None:
    """Counts one unreadable input under its reason and keeps the message as an example."""
    self.n_skipped += 1
    self.reasons[error.reason] += 1
    if len(self.examples) < self.max_examples:
      self.examples.append(str(error))

  def summary(self) -> str:
    """One human-readable paragraph: counts, top skip reasons and HPO id fixes."""
    lines = [f"read {self.n_read} cases, skipped {self.n_skipped}"]
    lines += [f"  skipped {n}: {reason}" for reason, n in self.reasons.most_common(5)]
    if self.hpo_mapped:
      lines.append(f"  mapped {sum(self.hpo_mapped.values())} obsolete/alternative HPO ids "
                   f"({len(self.hpo_mapped)} distinct)")
    if self.hpo_dropped:
      examples = ", ".join(list(self.hpo_dropped)[:3])
      lines.append(f"  dropped {sum(self.hpo_dropped.values())} unknown HPO ids "
                   f"({len(self.hpo_dropped)} distinct, e.g. {examples})")
    return "\n".join(lines)


def decode_json(raw: bytes | str, where: str, text_field: str, json_field: str = "") -> Any:
  """UTF-8 bytes or text → a JSON value; else CaseFormatError naming `where` and the field
  (`text_field` for bad UTF-8, `json_field` — default the same — for bad JSON)."""
  try:
    text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw  # a leading BOM is fine
  except UnicodeDecodeError as err:
    raise CaseFormatError(where, text_field, "invalid UTF-8", f"byte {err.start}") from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as err:
    raise CaseFormatError(where, json_field or text_field, "invalid JSON",
                          f"{err.msg} at line {err.lineno} column {err.colno}") from None
  except RecursionError:
    raise CaseFormatError(where, json_field or text_field, "invalid JSON",
                          "nested too deeply") from None
