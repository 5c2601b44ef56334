"""Tests for the stage wiring: honest-protocol exclusions from held-out phenopackets, HF import stage."""
import pathlib

import jax
import numpy as np
import pytest

from rarejax import cases, experiment, pipeline, stages
from rarejax import export as export_lib
from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.train import stage as train_stage_lib


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


def test_import_hf_stage_exports_params_the_training_stages_can_load(tmp_path):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=64)
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
  ctx = pipeline.StageContext("import_hf", tmp_path, tmp_path / "import_hf", {})
  result = stages.import_hf_stage(ctx, checkpoint_dir=str(tmp_path / "hf"))
  export = pathlib.Path(result["export"])
  model_config = train_stage_lib.resolve_model_config(
      ModelConfig(**result["model_config"]), 64)
  params = export_lib.load_params(export, model_config)
  assert transformer.count_params(params) == sum(p.numel() for p in
                                                 transformers.LlamaForCausalLM(config).parameters())
  embed = next(v for k, v in jax.tree_util.tree_leaves_with_path(params) if "embed" in str(k))
  assert np.isfinite(np.asarray(embed)).all()
