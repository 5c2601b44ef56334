"""Tests for `rarejax diagnose` on a random-init tiny export: non-ASCII notes, the 50k-character
cut, clear errors (empty note, malformed phenopacket, missing checkpoint), the thinking budget,
batch mode with bad files, the subcommand dispatcher, and the evidence matched to candidates."""
import argparse
import json

import pytest

from tests.evaluate import test_model_method  # pylint: disable=g-bad-import-order  (the tiny export builder)
from rarejax import __main__ as cli
from rarejax import diagnose
from rarejax.data import format as fmt
from rarejax.evaluate import evidence

FAST = ["--max_new_tokens", "12", "--model_batch_size", "1", "--max_cache_length", "512"]
PHENOPACKET = {
    "id": "PMID_1_P1", "subject": {"id": "P1", "sex": "FEMALE"},
    "phenotypicFeatures": [{"type": {"id": "HP:0001166", "label": "Arachnodactyly"}},
                           {"type": {"id": "HP:0001083", "label": "Ectopia lentis"},
                            "excluded": True}],
    "interpretations": [{"id": "i1", "progressStatus": "SOLVED", "diagnosis": {
        "disease": {"id": "OMIM:154700", "label": "Marfan syndrome"}}}],
    "metaData": {"created": "2024-01-01T00:00:00Z", "phenopacketSchemaVersion": "2.0.2"},
}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  return str(test_model_method.tiny_export(tmp_path_factory.mktemp("diagnose")))


@pytest.fixture(scope="module")
def resources(export):
  return diagnose.load_resources(argparse.Namespace(checkpoint=export, vocabulary=None,
                                                    ordo=None, mondo_sssom=[],
                                                    recognizer="rarejax"))


@pytest.fixture
def loaded(resources, monkeypatch):
  """Knowledge, indexes and model loaded once for the tests after the first full run."""
  monkeypatch.setattr(diagnose, "load_resources", lambda args: resources)


def _run(capsys, *argv):
  code = cli.main(["diagnose", *argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_non_ascii_note_gives_json_and_a_table(export, capsys, tmp_path):
  note = ("Patiënte née à Zürich, 患者: arachnodactyly, ectopia lentis and café-au-lait spots. "
          "No scoliosis.")
  code, out, _ = _run(capsys, "--checkpoint", export, "--note", note, "--json", "--out",
                      str(tmp_path / "r.json"), *FAST)
  assert code == 0
  doc = json.loads(out)
  assert doc == json.loads((tmp_path / "r.json").read_text("utf-8"))
  result = doc["results"][0]
  assert result["note"] == note and result["source"] == "note" and not result["warnings"]
  observed = {f["hpo_id"]: f["text"] for f in result["findings"]["observed"]}
  assert observed["HP:0000957"] == "café-au-lait spots" and "HP:0001166" in observed
  assert [f["hpo_id"] for f in result["findings"]["excluded"]] == ["HP:0002650"]
  assert isinstance(result["response"], str) and doc["n_failed"] == 0
  code, table, _ = _run(capsys, "--checkpoint", export, "--note", note, *FAST)
  assert code == 0 and "== --note ==" in table
  assert ("Findings (3): Arachnodactyly, Ectopia lentis, Cafe-au-lait spot; absent: Scoliosis"
          in table)


def test_empty_note_and_missing_checkpoint_are_one_line_errors(export, capsys, tmp_path):
  code, _, err = _run(capsys, "--checkpoint", export, "--note", "  \n ")
  assert code == 2 and err.count("\n") == 1
  assert "--note: the note is empty; give the clinical note text" in err
  (tmp_path / "empty.txt").write_text("\n")
  code, _, err = _run(capsys, "--checkpoint", export, "--file", str(tmp_path / "empty.txt"))
  assert code == 2 and f"{tmp_path / 'empty.txt'}: the note is empty" in err
  code, _, err = _run(capsys, "--checkpoint", str(tmp_path / "nope"), "--note", "Tall.")
  assert code == 2 and err.count("\n") == 1
  assert f"checkpoint not found: {tmp_path / 'nope'}" in err and "export folder" in err


def test_malformed_phenopacket_is_a_clear_error(export, capsys, tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({**PHENOPACKET, "phenotypicFeatures": "oops"}))
  code, _, err = _run(capsys, "--checkpoint", export, "--phenopacket", str(bad))
  assert code == 2 and err.count("\n") == 1
  assert f"malformed phenopacket {bad}" in err and "fix the file" in err
  (tmp_path / "broken.json").write_text("{not json")
  code, _, err = _run(capsys, "--checkpoint", export, "--phenopacket",
                      str(tmp_path / "broken.json"))
  assert code == 2 and "invalid JSON" in err


def test_note_over_50k_characters_is_cut_with_a_warning(export, loaded, capsys):
  note = "Arachnodactyly and tall stature. " * 2000  # 66,000 characters
  code, out, err = _run(capsys, "--checkpoint", export, "--note", note, "--json", *FAST)
  assert code == 0
  assert "warning: --note: the note has 66,000 characters; only the first 50,000" in err
  result = json.loads(out)["results"][0]
  assert len(result["note"]) == diagnose.MAX_NOTE_CHARS == 50_000
  assert any("cut at its end to fit the model's cache" in w for w in result["warnings"])


def test_thinking_budget_always_ends_with_an_answer(export, loaded, capsys):
  code, out, _ = _run(capsys, "--checkpoint", export, "--note", "Tall boy, arachnodactyly.",
                      "--think_tokens", "6", "--json", *FAST)
  assert code == 0
  result = json.loads(out)["results"][0]
  assert result["forced_answer"]
  text = result["response"]
  assert text.index(fmt.THINK_CLOSE) < text.index(fmt.ANSWER_OPEN)
  assert fmt.ANSWER_MISSING not in result["format_problems"]
  with pytest.raises(SystemExit) as exit_info:
    _run(capsys, "--checkpoint", export, "--note", "x", "--think_tokens", "12",
         "--max_new_tokens", "12")
  assert exit_info.value.code == 2
  assert "--think_tokens < --max_new_tokens" in capsys.readouterr().err


def test_batch_reports_bad_files_and_diagnoses_the_rest(export, loaded, capsys, tmp_path):
  folder = tmp_path / "batch"
  (folder / "cohort").mkdir(parents=True)
  (folder / "a_note.txt").write_text("Ectopia lentis, scoliosis; père inquiet.", "utf-8")
  (folder / "cohort" / "packet.json").write_text(json.dumps(PHENOPACKET))
  (folder / "bad.json").write_text(json.dumps({"id": "x"}))
  (folder / "empty.txt").write_text("")
  (folder / "ignored.md").write_text("not an input")
  code, out, err = _run(capsys, "--checkpoint", export, "--batch", str(folder), "--json", *FAST)
  assert code == 1
  doc = json.loads(out)
  assert (doc["n_inputs"], doc["n_failed"]) == (4, 2)
  assert [r["input"] for r in doc["results"]] == [str(folder / "a_note.txt"),
                                                  str(folder / "cohort" / "packet.json")]
  assert [e["input"] for e in doc["errors"]] == [str(folder / "bad.json"),
                                                 str(folder / "empty.txt")]
  packet = doc["results"][1]
  assert packet["source"] == "phenopacket" and packet["note"]
  assert packet["findings"]["observed"] == [{"hpo_id": "HP:0001166", "label": "Arachnodactyly",
                                             "text": ""}]
  assert [f["hpo_id"] for f in packet["findings"]["excluded"]] == ["HP:0001083"]
  assert f"skipped malformed phenopacket {folder / 'bad.json'}" in err


def test_dispatcher_knows_its_commands(capsys):
  assert cli.main([]) == 2 and "diagnose" in capsys.readouterr().err
  assert cli.main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in \
      capsys.readouterr().err
  assert cli.main(["--help"]) == 0 and "rarejax evaluate" in capsys.readouterr().out


def test_evidence_supports_and_contradicts_by_annotations(kb):
  # Marfan syndrome is annotated with Arachnodactyly, Scoliosis and Ectopia lentis, not with
  # Long fingers (a parent of Arachnodactyly), Thoracic scoliosis (a child of Scoliosis) or
  # Seizure.
  onto = kb.ontology
  assert "HP:0100807" in onto.parents("HP:0001166") and "HP:0002650" in onto.parents("HP:0002943")
  finder = evidence.EvidenceFinder(kb)
  findings = evidence.NoteFindings.structured(
      ["HP:0001166", "HP:0100807", "HP:0002943", "HP:0001250"], ["HP:0001083"])
  result = finder.for_candidate("OMIM:154700", findings)
  assert [(e.hpo_id, e.relation, e.annotated_id) for e in result.supporting] == [
      ("HP:0001166", "annotated", "HP:0001166"), ("HP:0100807", "less_specific", "HP:0001166"),
      ("HP:0002943", "more_specific", "HP:0002650")]
  assert result.supporting[0].label == "Arachnodactyly" and result.supporting[0].frequency > 0
  assert [(e.hpo_id, e.relation) for e in result.contradicting] == [("HP:0001083", "absent")]
  assert result.annotated_as == "OMIM:154700"
  assert finder.for_candidate(None, findings).supporting == ()
  assert finder.for_candidate("OMIM:999999999", findings).annotated_as is None
