"""Tests for the experiment's knowledge: honest-protocol exclusions from held-out phenopackets and PMID files."""
import pytest

from rarejax import cases, experiment


def test_validation_publications_of_heldout_phenopackets_are_excluded(phenopacket_folder):
  folder = phenopacket_folder(("31772430", "11111111"))
  kb = experiment.experiment_knowledge(heldout_phenopackets=[str(folder)], validation_fraction=1.0)
  assert {"PMID:31772430", "PMID:11111111"} <= set(kb.version.excluded_pmids)
  assert kb.version.n_excluded_rows > 0                 # PMID:31772430 is cited by Marfan rows
  none_held_out = experiment.experiment_knowledge(heldout_phenopackets=[str(folder)],
                                                  validation_fraction=0.0)
  assert none_held_out.version.excluded_pmids == ()


def test_inner_split_excludes_inner_and_outer_validation_publications(phenopacket_folder):
  numbers = [str(10_000_000 + i) for i in range(40)]
  folder = phenopacket_folder(numbers)
  read, _ = cases.read_phenopackets(folder)
  split = {c.pmid: c.split for c in cases.development_split(read, 0.3, 0, inner=True)}
  assert set(split.values()) == {"train", "validation", cases.HELDOUT}
  outer = experiment.experiment_knowledge(heldout_phenopackets=[str(folder)],
                                          validation_fraction=0.3)
  inner = experiment.experiment_knowledge(heldout_phenopackets=[str(folder)],
                                          validation_fraction=0.3, inner_split=True)
  assert set(outer.version.excluded_pmids) == {p for p, s in split.items() if s == cases.HELDOUT}
  assert set(inner.version.excluded_pmids) == {p for p, s in split.items() if s != "train"}


def test_missing_heldout_phenopackets_are_an_error_unless_skipped(tmp_path, caplog):
  missing = str(tmp_path / "absent.zip")
  with pytest.raises(Exception, match="absent.zip"):
    experiment.experiment_knowledge(heldout_phenopackets=[missing])
  kb = experiment.experiment_knowledge(heldout_phenopackets=[missing], skip_missing_heldout=True)
  assert kb.version.excluded_pmids == ()
  assert "not found" in caplog.text and "absent.zip" in caplog.text


def test_exclude_pmids_files_join_the_experiment_knowledge(tmp_path):
  first, second = tmp_path / "a.txt", tmp_path / "b.txt"
  first.write_text("# benchmark publications\nPMID:31772430\n\n123  # bare form\n")
  second.write_text("PMID:456\nPMID:123\n")
  kb = experiment.experiment_knowledge(exclude_pmids=["PMID:7"],
                                       exclude_pmids_files=[str(first), str(second)])
  assert kb.version.excluded_pmids == ("PMID:123", "PMID:31772430", "PMID:456", "PMID:7")
  assert kb.version.n_excluded_rows > 0
  stamp = kb.version.as_dict(with_pmids=True)
  assert stamp["excluded_pmids"] == list(kb.version.excluded_pmids)
  assert "excluded_pmids" not in kb.version.as_dict()    # reports keep the count and hash


def test_exclude_pmids_files_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="PMID exclusion file not found: .*absent.txt"):
    experiment.experiment_knowledge(exclude_pmids_files=[str(tmp_path / "absent.txt")])
  bad = tmp_path / "bad.txt"
  bad.write_text("PMID:1\n# fine\nDOI:10.1/x\n")
  with pytest.raises(ValueError, match=r"bad.txt:3: 'DOI:10.1/x' is not a PubMed id"):
    experiment.experiment_knowledge(exclude_pmids_files=[str(bad)])
