"""Tests for the Case type and the phenopacket, case-text and JSONL readers, and the honest split."""
import json
import pickle
import zipfile

import pytest

from rarejax import cases
from rarejax.cases import Case, CaseFormatError


def packet(pid="PMID_123_P1", disease="OMIM:154700", features=(("HP:0001166", False),),
           **extra):
  """A small valid Phenopacket v2 document as a dict."""
  doc = {
      "id": pid,
      "subject": {"id": "P1", "sex": "FEMALE",
                  "timeAtLastEncounter": {"age": {"iso8601duration": "P6Y6M"}}},
      "phenotypicFeatures": [{"type": {"id": h, "label": "x"}, **({"excluded": True} if ex else {})}
                             for h, ex in features],
      "interpretations": [{"id": "i1", "progressStatus": "SOLVED",
                           "diagnosis": {"disease": {"id": disease, "label": "Marfan syndrome"}}}],
      "diseases": [{"term": {"id": disease, "label": "Marfan syndrome"},
                    "onset": {"ontologyClass": {"id": "HP:0003593", "label": "Infantile onset"}}}],
      "metaData": {"created": "2024-01-01T00:00:00Z", "phenopacketSchemaVersion": "2.0.2",
                   "externalReferences": [{"id": "PMID:123", "description": "A paper"}]},
  }
  doc.update(extra)
  return doc


def write(path, obj):
  path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
  return path


# ---- Case --------------------------------------------------------------------------------------

def test_case_json_round_trip_and_hashable():
  case = Case(id="c1", note="A girl.", gold_ids=["OMIM:1"], observed=["HP:0000001"], age=3,
              sex="FEMALE", pmid="PMID:9", provenance={"file": "x", "knobs": {"a": [1, 2]}})
  assert case.gold_ids == ("OMIM:1",) and case.age == 3.0
  back = Case.from_json(json.loads(json.dumps(case.to_json())))
  assert back == case and hash(back) == hash(case)
  assert back.provenance["knobs"]["a"] == (1, 2)
  assert pickle.loads(pickle.dumps(case)) == case


@pytest.mark.parametrize("record, field", [
    ({"note": "x", "gold_ids": []}, "id"),
    ({"id": "a", "note": 3, "gold_ids": []}, "note"),
    ({"id": "a", "note": "x", "gold_ids": "OMIM:1"}, "gold_ids"),
    ({"id": "a", "note": "x", "gold_ids": [], "sex": "F"}, "sex"),
    ({"id": "a", "note": "x", "gold_ids": [], "age": -1}, "age"),
    ({"id": "a", "note": "x", "gold_ids": [], "colour": "red"}, "colour"),
])
def test_case_from_json_names_bad_field(record, field):
  with pytest.raises(CaseFormatError, match=f"cases.jsonl:7: field '{field}'") as info:
    Case.from_json(record, "cases.jsonl:7")
  assert info.value.field == field


def test_case_rejects_bad_values():
  with pytest.raises(ValueError, match="sex"):
    Case(id="a", note="", gold_ids=(), sex="female")
  with pytest.raises(TypeError, match="gold_ids"):
    Case(id="a", note="", gold_ids="OMIM:1")


# ---- phenopackets ------------------------------------------------------------------------------

def test_phenopacket_file_fields(tmp_path):
  doc = packet(features=(("HP:0001166", False), ("HP:0000098", False), ("HP:0001250", True)))
  case = cases.read_phenopacket(write(tmp_path / "PMID_123_P1.json", doc))
  assert case.id == "PMID_123_P1" and case.gold_ids == ("OMIM:154700",)
  assert case.observed == ("HP:0001166", "HP:0000098") and case.excluded == ("HP:0001250",)
  assert case.age == pytest.approx(6.5) and case.sex == "FEMALE" and case.onset == "HP:0003593"
  assert case.pmid == "PMID:123" and case.source == "phenopacket" and case.note == ""
  assert case.provenance["gold_labels"] == ("Marfan syndrome",)


def test_phenopacket_fallbacks(tmp_path):
  doc = packet(interpretations=[], metaData={"phenopacketSchemaVersion": "2.0"})
  case = cases.read_phenopacket(write(tmp_path / "PMID_456_x.json", doc))
  assert case.gold_ids == ("OMIM:154700",)  # from diseases[].term
  assert case.pmid == "PMID:456"  # from the file name


def test_phenopacket_accepts_proto_field_names(tmp_path):
  doc = packet()
  doc["phenotypic_features"] = doc.pop("phenotypicFeatures")
  doc["meta_data"] = doc.pop("metaData")
  case = cases.read_phenopacket(write(tmp_path / "p.json", doc))
  assert case.observed == ("HP:0001166",) and case.pmid == "PMID:123"


def test_phenopacket_dir_and_zip_agree(tmp_path):
  root = tmp_path / "store"
  for i, cohort in enumerate(["FBN1", "FBN1", "TGFBR2"]):
    (root / cohort).mkdir(parents=True, exist_ok=True)
    write(root / cohort / f"PMID_{100 + i}_P{i}.json", packet(pid=f"PMID_{100 + i}_P{i}"))
  archive = tmp_path / "store.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    for path in sorted(root.rglob("*.json")):
      zf.write(path, path.relative_to(root).as_posix())
  from_dir, dir_report = cases.read_phenopackets(root)
  from_zip, zip_report = cases.read_phenopackets(archive)
  assert [c.id for c in from_dir] == [c.id for c in from_zip] == ["PMID_100_P0", "PMID_101_P1",
                                                                  "PMID_102_P2"]
  assert dir_report.n_read == zip_report.n_read == 3 and zip_report.n_skipped == 0
  assert from_zip[2].provenance["member"] == "TGFBR2/PMID_102_P2.json"


@pytest.mark.parametrize("content, field", [
    (b"\xff\xfe{}", "<file>"),
    ('{"id": "x",', "<json>"),
    ("[1, 2]", "<json>"),
    (json.dumps(packet(subject={"sex": "WOMAN"})), "subject.sex"),
    (json.dumps(packet(id=5)), "id"),
    (json.dumps(packet(phenotypicFeatures=[{"type": {"id": "HP:0001166"}, "typo": 1}])),
     "phenotypicFeatures[0].typo"),
    (json.dumps(packet(phenotypicFeatures=[{"type": {"id": "HP:0001166"}}, {"type": {"id": 7}}])),
     "phenotypicFeatures[1].type.id"),
    (json.dumps(packet(phenotypicFeatures={"type": {"id": "HP:0001166"}})), "phenotypicFeatures"),
    (json.dumps(packet(colour="red")), "colour"),
    (json.dumps(packet(phenotypicFeatures=[{"type": {"label": "Seizure"}}])),
     "phenotypicFeatures[0].type.id"),
    (json.dumps(packet(disease="Marfan syndrome")), "interpretations[0].diagnosis.disease.id"),
    (json.dumps(packet(subject={"timeAtLastEncounter": {"age": {"iso8601duration": "6 years"}}})),
     "subject.timeAtLastEncounter.age.iso8601duration"),
    (json.dumps(packet(interpretations=[], diseases=[])), "interpretations[].diagnosis.disease.id"),
    (json.dumps(packet(features=(("HP:0001166", True),))), "phenotypicFeatures"),
])
def test_malformed_phenopacket_names_file_and_field(tmp_path, content, field):
  path = tmp_path / "PMID_1_bad.json"
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(CaseFormatError) as info:
    cases.read_phenopacket(path)
  assert info.value.field == field
  assert str(path) in str(info.value) and f"'{field}'" in str(info.value)


def test_batch_skips_bad_members_and_reports(tmp_path):
  archive = tmp_path / "store.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    zf.writestr("A/PMID_1_ok.json", json.dumps(packet(pid="ok")))
    zf.writestr("A/PMID_2_bad.json", '{"id": ')
    zf.writestr("B/PMID_3_bad.json", json.dumps(packet(subject={"sex": "WOMAN"})))
    zf.writestr("B/README.md", "not a phenopacket")
  read, report = cases.read_phenopackets(archive)
  assert [c.id for c in read] == ["ok"]
  assert report.n_read == 1 and report.n_skipped == 2
  assert report.reasons == {"<json>: invalid JSON": 1,
                            "subject.sex: does not match the Phenopacket v2 schema": 1}
  assert "store.zip:A/PMID_2_bad.json" in report.examples[0]
  assert "skipped 2" in report.summary()


def test_obsolete_and_alt_ids_mapped_unknown_dropped(tmp_path, kb):
  features = (("HP:0000057", False),  # obsolete, replaced by HP:0008665
              ("HP:0001275", False),  # alt id of HP:0001250
              ("HP:9999999", False),  # unknown
              ("HP:0001166", False))
  path = write(tmp_path / "PMID_7_a.json", packet(features=features))
  report = cases.ReadReport()
  case = cases.read_phenopacket(path, kb, report)
  assert case.observed == ("HP:0008665", "HP:0001250", "HP:0001166")
  assert report.hpo_mapped == {"HP:0000057": 1, "HP:0001275": 1}
  assert report.hpo_dropped == {"HP:9999999": 1}
  raw = cases.read_phenopacket(path)  # without a KB ids are kept as written
  assert raw.observed == tuple(h for h, _ in features)


# ---- case texts --------------------------------------------------------------------------------

TEXT = """[source]
pmid = PMID:16962354
title = A study
[diagnosis]
disease_id = OMIM:142946
disease_label = Holoprosencephaly 4
[text]
A male proband presenting with seizures
[for nerves], and microcephaly.
[text]
His sister had seizures.
"""


def test_text_cases(tmp_path):
  (tmp_path / "sub").mkdir()
  write(tmp_path / "sub" / "PMID_16962354.txt", TEXT)
  write(tmp_path / "one.txt", TEXT.split("[text]\nHis")[0])
  read, report = cases.read_text_cases(tmp_path)
  assert report.n_read == 3 and report.n_skipped == 0
  one, first, second = read
  assert one.id == "one" and first.id == "PMID_16962354_1" and second.id == "PMID_16962354_2"
  assert first.note == "A male proband presenting with seizures\n[for nerves], and microcephaly."
  assert second.note == "His sister had seizures."
  assert first.gold_ids == ("OMIM:142946",) and first.pmid == "PMID:16962354"
  assert first.source == "text" and first.provenance["title"] == "A study"


@pytest.mark.parametrize("content, field", [
    (TEXT.replace("disease_id = OMIM:142946\n", ""), "diagnosis.disease_id"),
    (TEXT.replace("OMIM:142946", "Holoprosencephaly"), "diagnosis.disease_id"),
    (TEXT.replace("PMID:16962354", "sixteen"), "source.pmid"),
    (TEXT.split("[text]")[0], "[text]"),
    (TEXT.replace("title = A study", "just words"), "source"),
    (TEXT.replace("His sister had seizures.", ""), "text[1]"),
])
def test_malformed_text_names_file_and_field(tmp_path, content, field):
  path = write(tmp_path / "case.txt", content)
  with pytest.raises(CaseFormatError) as info:
    cases.read_text_file(path)
  assert info.value.field == field and str(path) in str(info.value)


def test_text_batch_skips_invalid_utf8(tmp_path):
  write(tmp_path / "good.txt", TEXT)
  (tmp_path / "bad.txt").write_bytes(TEXT.encode().replace(b"seizures", b"seiz\xffures"))
  read, report = cases.read_text_cases(tmp_path)
  assert len(read) == 2 and report.n_skipped == 1
  assert report.reasons == {"<file>: invalid UTF-8": 1} and "bad.txt" in report.examples[0]


# ---- JSONL -------------------------------------------------------------------------------------

def test_jsonl_round_trip_and_bad_lines(tmp_path):
  originals = [Case(id="a", note="Short girl.", gold_ids=("OMIM:1",), sex="FEMALE", age=6.0),
               Case(id="b", note="Tall boy.", gold_ids=("ORPHA:558",), observed=("HP:0000098",),
                    source="simulated", provenance={"seed": 3})]
  path = tmp_path / "cases.jsonl"
  assert cases.write_jsonl(originals, path) == 2
  with open(path, "ab") as stream:
    stream.write(b"\n")
    stream.write(b'{"id": "c", "note": "x"}\n')
    stream.write(b'{"id": "d", "note": "x", "gold_ids": [1]}\n')
    stream.write(b"not json\n")
    stream.write(b'{"id": "e", "note": "\xff", "gold_ids": []}\n')
    stream.write(b'{"id": "f", "note": "minimal", "gold_ids": ["OMIM:2"]}\n')
  read, report = cases.read_jsonl(path)
  assert read[:2] == originals  # written fields (source '' included) come back unchanged
  assert read[2].id == "f" and read[2].source == "jsonl"
  assert report.n_read == 3 and report.n_skipped == 4
  assert report.reasons == {"gold_ids: missing required field": 1,
                            "gold_ids: expected a list of strings": 1,
                            "<line>: invalid JSON": 1, "<line>: invalid UTF-8": 1}
  assert any(f"{path}:5: field 'gold_ids'" in e for e in report.examples)


# ---- honest split ------------------------------------------------------------------------------

def test_split_by_publication_is_deterministic_and_whole():
  pool = [Case(id=f"c{i}", note="", gold_ids=("OMIM:1",), pmid=f"PMID:{i % 50}")
          for i in range(400)]
  split = cases.split_by_publication(pool, validation_fraction=0.3, seed=1)
  assert split == cases.split_by_publication(pool, validation_fraction=0.3, seed=1)
  by_pmid = {}
  for case in split:
    by_pmid.setdefault(case.pmid, set()).add(case.split)
  assert all(len(s) == 1 for s in by_pmid.values())  # a publication is never divided
  n_val = sum(s == {"validation"} for s in by_pmid.values())
  assert 5 <= n_val <= 25  # ~30% of 50 publications
  other = cases.split_by_publication(pool, validation_fraction=0.3, seed=2)
  assert [c.split for c in other] != [c.split for c in split]
  # Adding cases never moves existing publications.
  more = cases.split_by_publication(pool + [Case(id="new", note="", gold_ids=(), pmid="PMID:999")],
                                    validation_fraction=0.3, seed=1)
  assert more[:400] == split
  assert cases.pmids(split) == sorted({f"PMID:{i}" for i in range(50)})
  train_pmids = set(cases.pmids(c for c in split if c.split == "train"))
  assert not train_pmids & set(cases.pmids(c for c in split if c.split == "validation"))


def test_development_split_inner_splits_the_training_publications_again():
  pool = [Case(id=f"c{i}", note="", gold_ids=("OMIM:1",), pmid=f"PMID:{i % 60}")
          for i in range(300)]
  outer = cases.development_split(pool, 0.3, seed=4)
  assert outer == cases.split_by_publication(pool, 0.3, seed=4)
  inner = cases.development_split(pool, 0.3, seed=4, inner=True)
  assert [c.id for c in inner] == [c.id for c in pool]
  for before, after in zip(outer, inner):  # outer validation is held out, never inner validation
    assert (after.split == cases.HELDOUT) == (before.split == "validation")
  outer_train = [c for c in outer if c.split == "train"]
  again = cases.split_by_publication(outer_train, 0.3, seed=4 + cases.INNER_SEED_OFFSET)
  assert ([c.split for c in again] ==
          [c.split for c in inner if c.split != cases.HELDOUT])  # the evaluate tuning split
  by_pmid = {}
  for case in inner:
    by_pmid.setdefault(case.pmid, set()).add(case.split)
  assert all(len(s) == 1 for s in by_pmid.values())
  counts = {s: sum(v == {s} for v in by_pmid.values()) for s in ("train", "validation", "heldout")}
  assert all(n > 0 for n in counts.values()) and counts["train"] > counts["validation"]
  assert Case(id="h", note="", gold_ids=(), split=cases.HELDOUT).split == "heldout"
