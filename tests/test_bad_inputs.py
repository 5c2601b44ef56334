"""Bad inputs never crash a batch: property-based tests of the case readers, answer parser and grounding.

Classes of bad input: random JSON, wrong types and missing fields in valid documents, invalid
UTF-8 and unpaired surrogates, a byte-order mark, deep nesting, huge strings and numbers, unknown
or malformed ontology ids; single files, directory trees and zips mixing good and bad documents
(plus damaged zip members, a truncated zip, folders named like documents, dangling links). A
reader either returns cases or raises CaseFormatError naming the file and field; the batch
readers count each bad document as a skip; writers never leave a partial file.
"""
import json
import pathlib
import re
import tempfile
import zipfile

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from rarejax import cases
from rarejax.cases import Case, CaseFormatError
from rarejax.data import format as fmt
from rarejax.knowledge import grounding
from tests.cases.test_readers import TEXT, packet  # a valid phenopacket (dict) and case text

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHERE = "store.zip:COHORT/PMID_1_P1.json"

# --- strategies --------------------------------------------------------------------------------

SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                                   exclude_categories=()), min_size=1, max_size=2)
STRINGS = st.one_of(st.text(max_size=30), SURROGATES, st.sampled_from(
    ["", "HP:0001166", "HP:9999999", "HP:12", "hp:0001166", "OMIM:154700", "OMIM:", "ORPHA:558",
     "Marfan syndrome", "PMID:123", "P6Y", "P1e400Y", "P" + "9" * 400 + "Y", "MALE", "WOMAN",
     "\ufeff", "\x00", "x" * 100_000]))
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from([10**400, -1, 0, 2, 99]))
JSON = st.recursive(st.none() | st.booleans() | NUMBERS | STRINGS,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(STRINGS, inner, max_size=4),
                    max_leaves=12)


def _paths(value, prefix=()):
  """Every key/index path into a JSON value."""
  items = value.items() if isinstance(value, dict) else (
      enumerate(value) if isinstance(value, list) else ())
  for key, child in items:
    yield prefix + (key,)
    yield from _paths(child, prefix + (key,))


PACKET_PATHS = sorted(_paths(packet()), key=str)


@st.composite
def mutated_packets(draw):
  """A valid phenopacket with one field deleted or replaced by random JSON."""
  doc = packet()
  path = draw(st.sampled_from(PACKET_PATHS))
  parent = doc
  for key in path[:-1]:
    parent = parent[key]
  if draw(st.booleans()):
    del parent[path[-1]]
  else:
    parent[path[-1]] = draw(JSON)
  return doc


def _dumps(doc) -> bytes:
  return json.dumps(doc).encode()  # unpaired surrogates travel as '\ud800' escapes


def _check_error(err: CaseFormatError, where: str) -> None:
  assert str(err).startswith(where) and err.field and err.problem
  assert f"field '{err.field}'" in str(err)


def _check_phenopacket_case(case: Case) -> None:
  assert case.gold_ids and case.observed and case.source == "phenopacket"
  assert all(re.fullmatch(r"HP:\d{7}", h) for h in case.observed + case.excluded)
  assert case.age is None or 0 <= case.age < float("inf")
  json.dumps(case.to_json(), ensure_ascii=False).encode("utf-8")  # writable


def _parse_phenopacket(data, **kwargs):
  try:
    _check_phenopacket_case(cases.parse_phenopacket(data, WHERE, **kwargs))
  except CaseFormatError as err:
    _check_error(err, WHERE)


# --- phenopackets ------------------------------------------------------------------------------

@SETTINGS
@given(JSON)
def test_phenopacket_random_json_is_a_case_or_a_named_error(doc):
  _parse_phenopacket(_dumps(doc))


@SETTINGS
@given(mutated_packets())
def test_phenopacket_wrong_types_and_missing_fields(doc):
  _parse_phenopacket(_dumps(doc))


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_phenopacket_random_bytes_and_invalid_utf8(raw, position, inserted):
  _parse_phenopacket(raw)
  good = _dumps(packet())
  _parse_phenopacket(good[:position] + inserted + good[position:])


HPO_IDS = st.one_of(st.from_regex(r"HP:\d{7}", fullmatch=True), STRINGS,
                    st.sampled_from(["HP:0000057", "HP:0001275", "HP:0001166"]))


@SETTINGS
@given(st.lists(st.tuples(HPO_IDS, st.booleans()), min_size=1, max_size=6),
       st.one_of(STRINGS, st.from_regex(r"(OMIM|ORPHA|MONDO):\d{1,8}", fullmatch=True)))
def test_unknown_ontology_ids_are_dropped_counted_or_named(kb, features, disease):
  report = cases.ReadReport()
  doc = packet(features=features, disease=disease)
  try:
    case = cases.parse_phenopacket(_dumps(doc), WHERE, kb=kb, report=report)
  except CaseFormatError as err:
    _check_error(err, WHERE)
    return
  _check_phenopacket_case(case)
  assert all(kb.ontology.resolve(h) == h for h in case.observed + case.excluded)
  # the ids as the file holds them: JSON joins an escaped surrogate pair into one character
  written = [json.loads(json.dumps(h)) for h, _ in features]
  unknown = {h for h in written if kb.ontology.resolve(h) is None}
  assert unknown == set(report.hpo_dropped)


def test_phenopacket_edge_documents():
  deep = b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
  for data, field in [(deep, "<json>"),
                      (_dumps(packet(subject={"sex": 99})), "subject.sex"),
                      (_dumps(packet(phenotypicFeatures=[None])), "phenotypicFeatures[0]"),
                      (_dumps(packet(id="\ud800")), "<json>"),
                      (_dumps({**packet(), "\udc00": 1}), "<json>"),
                      (_dumps(packet(subject={"timeAtLastEncounter": {"age": {
                          "iso8601duration": "P" + "9" * 400 + "Y"}}})),
                       "subject.timeAtLastEncounter.age.iso8601duration")]:
    with pytest.raises(CaseFormatError) as info:
      cases.parse_phenopacket(data, WHERE)
    assert info.value.field == field
  bom = cases.parse_phenopacket(b"\xef\xbb\xbf" + _dumps(packet()), WHERE)  # UTF-8 with BOM
  huge = cases.parse_phenopacket(_dumps(packet(id="x" * 5_000_000)), WHERE)
  assert bom.gold_ids == huge.gold_ids == ("OMIM:154700",)


# A document of each kind, good or bad; (bytes, is good).
DOCUMENTS = st.one_of(
    st.just((_dumps(packet()), True)),
    mutated_packets().map(lambda d: (_dumps(d), None)),  # None: either, decided by the parser
    JSON.map(lambda d: (_dumps(d), None)),
    st.binary(max_size=50).map(lambda b: (b"\xff" + b, False)),
    st.just((b"[" * 50_000, False)),
    st.just((_dumps(packet())[:40], False)))


def _expected_good(data: bytes, good) -> bool:
  if good is not None:
    return good
  try:
    cases.parse_phenopacket(data, WHERE)
    return True
  except CaseFormatError:
    return False


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DOCUMENTS, min_size=1, max_size=8))
def test_phenopacket_dirs_and_zips_of_good_and_bad_documents(documents):
  n_good = sum(_expected_good(data, good) for data, good in documents)
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp) / "store"
    archive = pathlib.Path(tmp) / "store.zip"
    with zipfile.ZipFile(archive, "w") as zf:
      for i, (data, _) in enumerate(documents):
        (root / f"C{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"C{i % 3}" / f"PMID_{i}_P{i}.json").write_bytes(data)
        zf.writestr(f"C{i % 3}/PMID_{i}_P{i}.json", data)
    from_dir, dir_report = cases.read_phenopackets(root)
    from_zip, zip_report = cases.read_phenopackets(archive)
  assert [c.id for c in from_dir] == [c.id for c in from_zip]
  for report in (dir_report, zip_report):
    assert report.n_read == n_good and report.n_skipped == len(documents) - n_good
    assert sum(report.reasons.values()) == report.n_skipped


def test_damaged_archives_and_odd_files_are_counted_skips(tmp_path):
  good = _dumps(packet())
  stored = tmp_path / "stored.zip"
  with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr("A/PMID_1_ok.json", good)
    zf.writestr("A/PMID_2_flipped.json", good)
  data = bytearray(stored.read_bytes())
  data[data.find(b"OMIM", len(good) + 60)] ^= 1  # CRC mismatch in the second member
  stored.write_bytes(bytes(data))
  read, report = cases.read_phenopackets(stored)
  assert len(read) == 1 and report.reasons == {"<file>: unreadable": 1}
  assert "PMID_2_flipped.json" in report.examples[0] and "CRC" in report.examples[0]

  truncated = tmp_path / "truncated.zip"
  truncated.write_bytes(stored.read_bytes()[:len(data) // 2])
  read, report = cases.read_phenopackets(truncated)
  assert not read and report.reasons == {"<file>: not a readable zip archive": 1}

  folder = tmp_path / "store"
  (folder / "looks_like.json").mkdir(parents=True)  # a folder named like a document: not one
  (folder / "ok.json").write_bytes(good)
  (folder / "dangling.json").symlink_to(folder / "gone.json")
  read, report = cases.read_phenopackets(folder)
  assert len(read) == 1 and report.reasons == {"<file>: unreadable": 1}


# --- case texts --------------------------------------------------------------------------------

LINES = st.one_of(st.text(max_size=40), st.sampled_from(
    ["[source]", "[diagnosis]", "[text]", "pmid = PMID:1", "pmid = x", "disease_id = OMIM:1",
     "disease_id = ", "disease_id = OMIM:1, nonsense", "title = t", "=", "[[text]]", "\x00",
     "x" * 100_000]))


def _check_text_cases(text: str, where: str = "case.txt") -> None:
  try:
    read = cases.parse_text_cases(text, where)
  except CaseFormatError as err:
    _check_error(err, where)
    return
  assert read and all(c.note.strip() and c.gold_ids and c.source == "text" for c in read)


@SETTINGS
@given(st.lists(LINES, max_size=12), st.integers(0, 12), st.lists(LINES, max_size=3))
def test_case_text_random_and_spliced_lines(lines, position, spliced):
  _check_text_cases("\n".join(lines))
  valid = TEXT.splitlines()
  _check_text_cases("\n".join(valid[:position] + spliced + valid[position:]))


def test_case_text_batch_counts_bad_files(tmp_path):
  (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + TEXT.encode())  # UTF-8 with BOM: fine
  (tmp_path / "latin1.txt").write_bytes(TEXT.replace("male", "m\xe2le").encode("latin-1"))
  (tmp_path / "empty.txt").write_bytes(b"")
  (tmp_path / "folder.txt").mkdir()  # not a file: not a case text
  (tmp_path / "dangling.txt").symlink_to(tmp_path / "gone.txt")
  read, report = cases.read_text_cases(tmp_path)
  assert [c.id for c in read] == ["bom_1", "bom_2"]
  assert report.reasons == {"<file>: invalid UTF-8": 1, "[text]: missing [text] section": 1,
                            "<file>: unreadable": 1}


# --- JSONL -------------------------------------------------------------------------------------

RECORDS = st.fixed_dictionaries(
    {"id": STRINGS, "note": STRINGS, "gold_ids": st.lists(STRINGS, max_size=2)},
    optional={"age": JSON, "sex": JSON, "split": JSON, "observed": JSON, "provenance": JSON,
              "pmid": JSON})
LINES_JSONL = st.one_of(RECORDS.map(_dumps), JSON.map(_dumps), st.binary(max_size=40),
                        st.just(b"[" * 50_000), st.just(b"\xef\xbb\xbf{}"))


@SETTINGS
@given(st.lists(LINES_JSONL, min_size=1, max_size=8))
def test_jsonl_lines_are_cases_or_counted_and_everything_read_can_be_written(lines):
  lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "cases.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    read, report = cases.read_jsonl(path)
    assert report.n_read + report.n_skipped == sum(1 for l in lines if l.strip())
    assert all(e.startswith(f"{path}:") for e in report.examples)
    out = pathlib.Path(tmp) / "out.jsonl"
    assert cases.write_jsonl(read, out) == len(read)
    as_json = lambda found: [json.dumps(c.to_json(), sort_keys=True) for c in found]  # NaN-safe
    assert as_json(cases.read_jsonl(out)[0]) == as_json(read)


def test_jsonl_edge_values_name_their_field():
  for record, field in [({"age": 10**400}, "age"), ({"age": float("nan")}, "age"),
                        ({"age": float("inf")}, "age"), ({"note": "\ud800"}, "note"),
                        ({"gold_ids": ["OMIM:1\udc00"]}, "gold_ids"),
                        ({"provenance": {"a": json.loads("[" * 600 + "]" * 600)}},
                         "provenance")]:
    line = _dumps({"id": "a", "note": "x", "gold_ids": [], **record})
    with pytest.raises(CaseFormatError) as info:
      cases.parse_jsonl_line(line, "cases.jsonl:3")
    assert info.value.field == field and str(info.value).startswith("cases.jsonl:3")


def test_a_failed_write_leaves_no_partial_file(tmp_path):
  path = tmp_path / "cases.jsonl"
  good = Case(id="a", note="fine", gold_ids=("OMIM:1",))
  cases.write_jsonl([good], path)
  before = path.read_bytes()
  unwritable = Case(id="b", note="bad \ud800", gold_ids=("OMIM:1",))  # built in code, not read
  with pytest.raises(UnicodeEncodeError):
    cases.write_jsonl([good] * 1000 + [unwritable], path)
  assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


# --- answer parser -----------------------------------------------------------------------------

ANSWERS = st.one_of(
    st.text(max_size=300), st.binary(max_size=300), SURROGATES, st.none(), st.integers(),
    st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "\n", "1. ",
                              "Marfan syndrome (OMIM:154700)", "OMIM:", "\ud800", "\x00",
                              "x" * 5000]), max_size=40).map("".join))


@SETTINGS
@given(ANSWERS)
def test_answer_parser_never_raises(text):
  parsed = fmt.parse_response(text)
  assert parsed.well_formed == (not parsed.problems)
  assert [e.rank for e in parsed.entries] == list(range(1, len(parsed.entries) + 1))
  assert all(e.name or e.id for e in parsed.entries)


# --- grounding ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def index(kb):
  return grounding.GroundingIndex.from_knowledge(kb)


NAMES = st.one_of(st.text(max_size=80), SURROGATES, st.lists(st.sampled_from(
    ["OMIM:", "ORPHA:", "MONDO:", "#", "%", "omim.org/entry/", "154700", "\u0661\u0662\u0663",
     "\u00b2", "type", "II", "(", ")", ";", " - ", "syndrome", "Marfan", "’s", "é", "İ", "ﬁ",
     "\x00", "9" * 50]), max_size=15).map("".join))


@SETTINGS
@given(NAMES, st.one_of(st.none(), NAMES))
def test_grounding_never_raises_and_returns_indexed_ids(index, text, written_id):
  result = index.ground(text, written_id)
  assert result.found == (result.id is not None)
  assert all(i in index for i in result.candidates)
  assert grounding.canonical_id(text) is not None
  assert isinstance(index.equivalence.same(text, text), bool)


def test_grounding_huge_and_odd_texts(index):
  for text in ["a " * 500_000, "OMIM:" + "9" * 10_000, "#" * 100_000, "İ" * 10_000,
               "OMIM:\u0661\u0665\u0664\u0667\u0660\u0660"]:
    assert not index.ground(text).found
