"""GA4GH Phenopacket v2 reader: files, directory trees and phenopacket-store zips, validated by the schema."""
from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import zipfile
import zlib
from typing import Any, Callable, Iterator, NoReturn

import phenopackets
from google.protobuf import descriptor, json_format, message, message_factory

from rarejax import knowledge
from rarejax.cases import onset as onset_lib
from rarejax.cases.case import Case, CaseFormatError, ReadReport, check_encodable, decode_json

_HPO_ID = re.compile(r"HP:\d{7}")
_DISEASE_ID = re.compile(r"[A-Za-z][\w.-]*:\S+")
_PMID_IN_NAME = re.compile(r"PMID[_:]?(\d+)")
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "(\w+)"')
_FIELDS = {name: f for f in phenopackets.Phenopacket.DESCRIPTOR.fields
           for name in (f.name, f.json_name)}
_REPEATED_ITEMS = ("phenotypic_features", "diseases")  # list items that recur across files


def parse_phenopacket(data: bytes | str, where: str = "<string>",
                      kb: knowledge.KnowledgeBase | None = None, report: ReadReport | None = None,
                      provenance: dict[str, Any] | None = None,
                      parser: PhenopacketParser | None = None) -> Case:
  """Validates one Phenopacket v2 JSON document against the schema and converts it to a Case.

  Args:
    data: the JSON document (bytes must be UTF-8).
    where: file (and zip member) named in errors.
    kb: when given, obsolete and alternative HPO ids are mapped to current ones and unknown ids
      dropped; the counts go to `report`.
    report: collects mapped/dropped HPO ids (optional).
    provenance: extra provenance entries (file, member).
    parser: a schema parser shared across documents (memoises repeated parts); default a new one.

  Raises:
    CaseFormatError: invalid UTF-8 or JSON, a schema violation, or no diagnosis/features.
  """
  packet = (parser or PhenopacketParser()).parse(data, where)
  report = report if report is not None else ReadReport()
  gold_ids, gold_labels = _gold(packet, where)
  observed, excluded = _features(packet, where, kb, report)
  name = pathlib.PurePath(where.rsplit(":", 1)[-1]).stem
  return Case(
      id=packet.id or name, note="", gold_ids=gold_ids, observed=observed, excluded=excluded,
      age=_age(packet, where), sex=_sex(packet, where), onset=_onset(packet, gold_ids, where),
      source="phenopacket", pmid=_pmid(packet, where),
      provenance={**(provenance or {}), "gold_labels": gold_labels})


def read_phenopacket(path: str | os.PathLike, kb: knowledge.KnowledgeBase | None = None,
                     report: ReadReport | None = None) -> Case:
  """Reads one phenopacket JSON file; raises CaseFormatError naming the file and field."""
  return parse_phenopacket(pathlib.Path(path).read_bytes(), str(path), kb, report,
                           {"file": str(path)})


def read_phenopackets(source: str | os.PathLike, kb: knowledge.KnowledgeBase | None = None,
                      ) -> tuple[list[Case], ReadReport]:
  """Reads every phenopacket in a .json file, a directory tree or a zip (phenopacket-store layout).

  Unreadable documents are skipped and counted in the report, never raised; the order is the
  sorted file (or member) order, so the result is deterministic.
  """
  report, parser = ReadReport(), PhenopacketParser()
  cases = []
  for where, read, provenance in _documents(pathlib.Path(source)):
    try:
      cases.append(parse_phenopacket(_read(read, where), where, kb, report, provenance, parser))
    except CaseFormatError as err:
      report.skip(err)
  report.n_read = len(cases)
  return cases, report


def _read(read: Callable[[], bytes], where: str) -> bytes:
  """read(), with unreadable files and damaged zip members as CaseFormatError."""
  try:
    return read()
  except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
    raise CaseFormatError(where, "<file>", "unreadable", f"{type(err).__name__}: {err}") from None


def _not_a_zip(source: pathlib.Path) -> NoReturn:
  raise CaseFormatError(str(source), "<file>", "not a readable zip archive",
                        "truncated or damaged: no central directory")


def _documents(source: pathlib.Path
               ) -> Iterator[tuple[str, Callable[[], bytes], dict[str, str]]]:
  """(where, read its bytes, provenance) for each JSON document under a file, directory or zip."""
  if not source.exists():
    raise FileNotFoundError(f"phenopacket source not found: {source}")
  if source.is_dir():
    for path in sorted(p for p in source.rglob("*.json") if not p.is_dir()):
      yield str(path), path.read_bytes, {"file": str(path)}
  elif zipfile.is_zipfile(source):
    with zipfile.ZipFile(source) as archive:
      for member in sorted(n for n in archive.namelist() if n.endswith(".json")):
        yield (f"{source}:{member}", functools.partial(archive.read, member),
               {"file": str(source), "member": member})
  elif source.suffix.lower() == ".zip":
    yield str(source), functools.partial(_not_a_zip, source), {"file": str(source)}
  else:
    yield str(source), source.read_bytes, {"file": str(source)}


class PhenopacketParser:
  """Official-schema JSON parsing that parses each distinct phenotypic feature or disease once.

  phenopacket-store repeats the same feature and disease entries across thousands of files
  (12k distinct among 190k features), so those list items are parsed by `json_format` once,
  remembered by their JSON text, and copied into later packets (~30% less parsing time on the
  dev zip); everything else is parsed per document. The schema still judges every byte.
  """

  def __init__(self):
    self._items: dict[tuple[str, str], message.Message] = {}

  def parse(self, data: bytes | str, where: str) -> phenopackets.Phenopacket:
    """JSON text → schema-checked Phenopacket (unknown fields, wrong types, bad enums rejected)."""
    obj = decode_json(data, where, "<file>", "<json>")
    if not isinstance(obj, dict):
      raise CaseFormatError(where, "<json>", "expected a JSON object (one phenopacket)",
                            f"got {type(obj).__name__}")
    check_encodable(where, "<json>", obj)  # json_format breaks on unpaired surrogates in keys
    packet, rest = phenopackets.Phenopacket(), {}
    for key, value in obj.items():
      field = _FIELDS.get(key)
      if field is not None and field.name in _REPEATED_ITEMS and isinstance(value, list):
        getattr(packet, field.name).extend(
            [self._item(field, item, where, f"{key}[{i}]") for i, item in enumerate(value)])
      else:
        rest[key] = value
    return _parse_into(rest, packet, where, "")

  def _item(self, field: descriptor.FieldDescriptor, value: Any, where: str,
            path: str) -> message.Message:
    if not isinstance(value, dict):
      raise CaseFormatError(where, path, "does not match the Phenopacket v2 schema",
                            f"expected a JSON object, got {type(value).__name__}")
    key = (field.name, json.dumps(value))
    if key not in self._items:
      self._items[key] = _parse_into(
          value, message_factory.GetMessageClass(field.message_type)(), where, path)
    return self._items[key]


def _parse_into(obj: Any, target: message.Message, where: str, path: str) -> message.Message:
  """json_format.ParseDict, with schema errors turned into CaseFormatError naming the field path."""
  try:
    return json_format.ParseDict(obj, target)
  except json_format.ParseError as err:
    text = str(err)
    inner = _FAILED_FIELD.findall(text) + _UNKNOWN_FIELD.findall(text)
    field = ".".join([path] * bool(path) + inner) or "<phenopacket>"
    detail = text.rsplit("field: ", 1)[-1].split("\n")[0].strip()
    raise CaseFormatError(where, field, "does not match the Phenopacket v2 schema",
                          detail) from None


def _gold(packet: phenopackets.Phenopacket, where: str) -> tuple[tuple[str, ...], list[str]]:
  """Gold ids from interpretations[].diagnosis.disease, else from non-excluded diseases[].term."""
  found = [(f"interpretations[{i}].diagnosis.disease.id", x.diagnosis.disease)
           for i, x in enumerate(packet.interpretations) if x.diagnosis.disease.id]
  if not found:
    found = [(f"diseases[{i}].term.id", d.term) for i, d in enumerate(packet.diseases)
             if d.term.id and not d.excluded]
  if not found:
    raise CaseFormatError(where, "interpretations[].diagnosis.disease.id", "no diagnosis",
                          "neither interpretations nor non-excluded diseases name a disease")
  ids, labels = {}, []
  for field, term in found:
    if not _DISEASE_ID.fullmatch(term.id):
      raise CaseFormatError(where, field, "not a disease id",
                            f"got {term.id!r}, want e.g. OMIM:154700")
    if term.id not in ids:
      ids[term.id] = None
      labels.append(term.label)
  return tuple(ids), labels


def _features(packet: phenopackets.Phenopacket, where: str, kb: knowledge.KnowledgeBase | None,
              report: ReadReport) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(observed, excluded) HPO ids, mapped through the ontology when a KB is given."""
  observed, excluded = {}, {}
  for i, feature in enumerate(packet.phenotypic_features):
    if not feature.type.id:
      raise CaseFormatError(where, f"phenotypicFeatures[{i}].type.id", "missing HPO id")
    hpo_id = _mapped(feature.type.id, kb, report)
    if hpo_id:
      (excluded if feature.excluded else observed)[hpo_id] = None
  if not observed:
    raise CaseFormatError(where, "phenotypicFeatures", "no observed phenotypic features",
                          f"{len(packet.phenotypic_features)} features, none present and known")
  return tuple(observed), tuple(h for h in excluded if h not in observed)


def _mapped(hpo_id: str, kb: knowledge.KnowledgeBase | None, report: ReadReport) -> str | None:
  """Current HPO id for `hpo_id`, or None (counted as dropped) when unknown or malformed."""
  if not _HPO_ID.fullmatch(hpo_id):
    report.hpo_dropped[hpo_id] += 1
    return None
  if kb is None:
    return hpo_id
  current = kb.ontology.resolve(hpo_id)
  if current is None:
    report.hpo_dropped[hpo_id] += 1
  elif current != hpo_id:
    report.hpo_mapped[hpo_id] += 1
  return current


def _age(packet: phenopackets.Phenopacket, where: str) -> float | None:
  """Years at last encounter from subject.timeAtLastEncounter.age.iso8601duration."""
  time = packet.subject.time_at_last_encounter
  if time.WhichOneof("element") != "age":
    return None
  try:
    return onset_lib.iso8601_years(time.age.iso8601duration)
  except ValueError as err:
    raise CaseFormatError(where, "subject.timeAtLastEncounter.age.iso8601duration",
                          "not an ISO 8601 duration", str(err)) from None


def _sex(packet: phenopackets.Phenopacket, where: str) -> str | None:
  value = phenopackets.Sex.DESCRIPTOR.values_by_number.get(packet.subject.sex)
  if value is None:  # the JSON parser keeps unknown enum numbers
    raise CaseFormatError(where, "subject.sex", "does not match the Phenopacket v2 schema",
                          f"unknown Sex value {packet.subject.sex}")
  return value.name if value.name in ("MALE", "FEMALE") else None


def _onset(packet: phenopackets.Phenopacket, gold_ids: tuple[str, ...], where: str) -> str | None:
  """Onset of the diagnosed disease (term or age), else the earliest feature onset term."""
  for i, disease in enumerate(packet.diseases):
    if disease.term.id in gold_ids and disease.HasField("onset"):
      found = _onset_term(disease.onset, f"diseases[{i}].onset", where)
      if found:
        return found
  terms = [f.onset.ontology_class.id for f in packet.phenotypic_features
           if f.onset.WhichOneof("element") == "ontology_class" and not f.excluded]
  known = sorted((t for t in terms if t in onset_lib.ONSET_AGES), key=onset_lib.onset_rank)
  return known[0] if known else None


def _onset_term(time: Any, field: str, where: str) -> str | None:
  """A TimeElement as an onset term: its ontology class, or the category of its age."""
  kind = time.WhichOneof("element")
  if kind == "ontology_class":
    return time.ontology_class.id or None
  if kind == "age":
    try:
      return onset_lib.onset_for_age(onset_lib.iso8601_years(time.age.iso8601duration))
    except ValueError as err:
      raise CaseFormatError(where, f"{field}.age.iso8601duration", "not an ISO 8601 duration",
                            str(err)) from None
  if kind == "gestational_age":
    return "HP:0030674"
  return None


def _pmid(packet: phenopackets.Phenopacket, where: str) -> str | None:
  """The publication: metaData.externalReferences 'PMID:…', else a PMID in the file name."""
  for ref in packet.meta_data.external_references:
    if ref.id.startswith("PMID:") and ref.id[5:].strip().isdigit():
      return "PMID:" + ref.id[5:].strip()
  match = _PMID_IN_NAME.search(pathlib.PurePath(where.rsplit(":", 1)[-1]).name)
  return f"PMID:{match[1]}" if match else None
