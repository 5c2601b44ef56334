"""TFDS builders: determinism, knowledge stamps, exclusions, bad sources; TF keeps off the GPUs."""
import dataclasses
import hashlib
import json
import pathlib

import pytest

from rarejax import cases, knowledge
from rarejax.data import builders, corpus, tf_setup, trajectory
from rarejax.data import format as format_lib
from rarejax.data import stage as data_stage

from tests.data import test_corpus  # pylint: disable=g-bad-import-order  (shared finder of a test finding)

TEXT_CASE = """[source]
pmid = PMID:{pmid}
[diagnosis]
disease_id = {disease}
[text]
A 4-year-old girl with {finding}.
"""


def file_hashes(builder):
  root = pathlib.Path(builder.data_dir)
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.iterdir()) if ".tfrecord" in p.name}


@pytest.fixture(scope="module")
def subset(kb):
  return corpus.select_diseases(kb, 4, seed=7)


@pytest.fixture(scope="module")
def built(kb, subset, tmp_path_factory):
  """Knowledge corpus and simulated cases built into two separate folders."""
  configs = [builders.KnowledgeConfig.create(kb, diseases=subset, findings_questions=2),
             builders.SimulatedConfig.create(kb, diseases=subset, n_train=2, n_validation=1,
                                              n_test=1)]
  roots = [tmp_path_factory.mktemp(name) for name in ("a", "b")]
  return {root: [builders.prepare(c, root, kb) for c in configs] for root in roots}


def test_tensorflow_sees_no_gpu_and_hiding_is_applied(monkeypatch):
  assert tf_setup.tf.config.get_visible_devices("GPU") == []
  calls = []
  monkeypatch.setattr(tf_setup.tf.config, "set_visible_devices",
                      lambda devices, kind: calls.append((list(devices), kind)))
  tf_setup.hide_accelerators_from_tensorflow()
  assert ([], "GPU") in calls


def test_same_config_gives_same_bytes(built):
  (first, second) = built.values()
  for a, b in zip(first, second):
    assert file_hashes(a) and file_hashes(a) == file_hashes(b)
    assert a.info.splits["train"].num_examples == b.info.splits["train"].num_examples


def test_splits_features_and_metadata(kb, subset, built):
  knowledge_builder, simulated = next(iter(built.values()))
  assert set(simulated.info.splits) == {"train", "validation", "test"}
  assert simulated.info.splits["train"].num_examples == 2 * len(subset)
  notes = {split: [e["note"] for e in builders.examples(simulated, split)]
           for split in ("train", "validation", "test")}
  assert len(notes["test"]) == len(subset)  # different draws from the other splits:
  assert not set(notes["test"]) & (set(notes["train"]) | set(notes["validation"]))
  assert simulated.info.metadata["knowledge"]["digest"] == kb.version.digest
  assert simulated.info.metadata["config"]["n_train"] == 2
  example = next(builders.examples(simulated, "validation"))
  assert example["gold_ids"][0] in subset and example["note"] and example["source"] == "simulated"
  provenance = json.loads(example["provenance"])
  assert provenance["simulator"]["max_findings"] == 15 and "renderer" in provenance
  assert example["n_noise"] == len(provenance["noise"])
  kinds = {e["kind"] for e in builders.examples(knowledge_builder)}
  assert "profile" in kinds and "findings_disease" in kinds


def test_knowledge_stamp_names_config_and_is_checked_on_load(kb, subset, built, tmp_path):
  knowledge_builder, _ = next(iter(built.values()))
  disease_id, pmid, _ = test_corpus.find_single_source_finding(kb)
  held_out = knowledge.load_knowledge(exclude_pmids=[pmid])
  config = builders.KnowledgeConfig.create(kb, diseases=subset, findings_questions=2)
  other = builders.KnowledgeConfig.create(held_out, diseases=subset, findings_questions=2)
  assert config.name.endswith(f"-kb{kb.version.digest}") and other.name != config.name
  with pytest.raises(builders.KnowledgeMismatchError, match="knowledge base given"):
    builders.builder_for(config, tmp_path, held_out)
  forged = builders.KnowledgeConfig.create(kb, diseases=subset, findings_questions=2)
  forged.kb_digest = held_out.version.digest  # same folder, different knowledge requested
  data_dir = pathlib.Path(knowledge_builder.data_dir_root)
  with pytest.raises(builders.KnowledgeMismatchError, match="was built from knowledge"):
    builders.builder_for(forged, data_dir).dataset("train")


def test_exclusion_is_honored_in_the_built_corpus(kb, tmp_path):
  disease_id, pmid, hpo_id = test_corpus.find_single_source_finding(kb)
  name = kb.ontology.name(hpo_id).lower()
  held_out = knowledge.load_knowledge(exclude_pmids=[pmid])
  builder = builders.prepare(builders.KnowledgeConfig.create(held_out, diseases=[disease_id]),
                             tmp_path, held_out)
  assert builder.info.metadata["excluded_pmids"] == [pmid]
  texts = [e["question"] + e["answer"] for e in builders.examples(builder)]
  assert texts and not any(name in t.lower() for t in texts)


def test_real_text_cases_split_by_publication(kb, subset, tmp_path):
  folder = tmp_path / "texts"
  folder.mkdir()
  for i, disease in enumerate(subset):
    finding = corpus.lower_first(corpus.findings(kb, kb.diseases[disease])[0].name)
    (folder / f"PMID_{i}.txt").write_text(TEXT_CASE.format(pmid=100 + i, disease=disease,
                                                           finding=finding))
  pmids = [f"PMID:{100 + i}" for i in range(len(subset))]
  seed = next(s for s in range(100)  # a seed that puts publications into both splits
              if 0 < sum(cases.split.is_validation(p, 0.5, s) for p in pmids) < len(pmids))
  config = builders.RealConfig.create(kb, texts=[folder], validation_fraction=0.5,
                                      split_seed=seed)
  builder = builders.prepare(config, tmp_path / "data", kb)
  rows = [e for split in builder.info.splits for e in builders.examples(builder, split)]
  assert sorted(e["pmid"] for e in rows) == pmids
  assert set(builder.info.splits) == {"train", "validation"}
  assert builder.info.metadata["validation_pmids_excluded"] is False
  (folder / "PMID_0.txt").write_text(TEXT_CASE.format(pmid=100, disease=subset[0], finding="x"))
  assert builders.RealConfig.create(kb, texts=[folder]).name != config.name


def test_empty_or_corrupt_sources_name_dataset_and_file(kb, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(builders.DataSourceError,
                     match=f"rarejax_real_cases/.*no readable case in {empty}"):
    builders.prepare(builders.RealConfig.create(kb, texts=[empty]), tmp_path / "d1", kb)
  corrupt = tmp_path / "store.zip"
  corrupt.write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(builders.DataSourceError, match=f"rarejax_real_cases/.*{corrupt}"):
    builders.prepare(builders.RealConfig.create(kb, phenopackets=[corrupt]), tmp_path / "d2", kb)
  bad = tmp_path / "trajectories.jsonl"
  bad.write_text('{"case_id": "c"}\n')
  with pytest.raises(builders.DataSourceError, match=f"rarejax_trajectories/.*{bad}:1"):
    builders.prepare(builders.TrajectoryConfig.create(kb, path=bad), tmp_path / "d3", kb)
  bad.write_text("\n")
  with pytest.raises(builders.DataSourceError, match="no trajectories in .*empty file"):
    builders.prepare(builders.TrajectoryConfig.create(kb, path=bad), tmp_path / "d4", kb)
  with pytest.raises(FileNotFoundError, match="missing.zip"):
    builders.RealConfig.create(kb, phenopackets=[tmp_path / "missing.zip"])


def test_trajectories_builder(kb, tmp_path):
  path = tmp_path / "t.jsonl"
  trajectory.write_trajectories([trajectory.Trajectory(
      case_id=f"c{i}", prompt=f"P{i}", response="<think>\nr\n</think>", gold_ids=("OMIM:1",),
      kb_digest=kb.version.digest) for i in range(3)], path)
  builder = builders.prepare(builders.TrajectoryConfig.create(kb, path=path), tmp_path / "d", kb)
  rows = sorted(builders.examples(builder), key=lambda e: e["case_id"])
  assert [r["prompt"] for r in rows] == ["P0", "P1", "P2"] and rows[0]["method"] == "rejection"


def test_instruction_style_names_the_case_datasets_and_shapes_their_prompts(kb, subset, tmp_path):
  (tmp_path / "PMID_1.txt").write_text("any case text")  # a real source: RealConfig is made

  def configs(style):
    spec = data_stage.DataSpec(n_diseases=4, texts=(str(tmp_path),), instruction=style)
    return data_stage.make_configs(kb, spec)
  full, bare = configs("full"), configs("none")
  assert full[0].name == bare[0].name  # the knowledge corpus holds no prompt
  assert full[1].name != bare[1].name and full[2].name != bare[2].name  # never reused
  assert (bare[1].instruction, bare[2].instruction) == ("none", "none")
  config = builders.SimulatedConfig.create(kb, diseases=subset[:2], n_train=1, n_validation=1,
                                           instruction="none")
  rows = list(builders.examples(builders.prepare(config, tmp_path / "data", kb)))
  assert len(rows) == 2
  for row in rows:
    for key in ("prompt", "prompt_final"):
      assert row[key].startswith("Clinical note:\n")
      assert format_lib.SYSTEM_INSTRUCTION not in row[key]


@pytest.mark.parametrize("field, value", [("instruction", "short"), ("reasoning", "long")])
def test_data_spec_rejects_an_unknown_style_by_its_field(field, value):
  with pytest.raises(ValueError, match=f"DataSpec.{field} must be one of"):
    data_stage.DataSpec(**{field: value})


def test_real_train_cases_are_rendered_several_times_with_findings_masked(kb, subset, tmp_path):
  simulator = cases.PatientSimulator(kb)
  structured = [cases.Case(id=f"case{i}", note="", gold_ids=(d,), observed=c.observed,
                           source="jsonl", pmid=f"PMID:{200 + i}")
                for i, d in enumerate(subset)
                for c in [simulator.simulate(d, 0, 0)] if len(c.observed) >= 4]
  path = tmp_path / "cases.jsonl"
  cases.write_jsonl(structured, path)
  config = builders.RealConfig.create(kb, jsonl=[path], validation_fraction=0.0, renderings=3,
                                      mask_rate=0.5)
  builder = builders.prepare(config, tmp_path / "data", kb)
  rows = list(builders.examples(builder, "train"))
  assert len(rows) == 3 * len(structured)
  by_id = {r["case_id"]: r for r in rows}
  for case in structured:
    whole = by_id[case.id]
    assert sorted(whole["observed"]) == sorted(case.observed)
    for k in (1, 2):
      masked = by_id[f"{case.id}~r{k}"]
      assert set(masked["observed"]) < set(case.observed)
      assert len(masked["observed"]) == len(case.observed) - round(0.5 * len(case.observed))
      assert masked["note"] != whole["note"] and masked["gold_ids"] == whole["gold_ids"]
  with pytest.raises(ValueError, match="renderings >= 1"):
    builders.RealConfig.create(kb, jsonl=[path], renderings=0)


def test_first_entry_ranking_needs_id_pieces_id_answers_and_no_reasoning():
  spec = data_stage.DataSpec(reasoning="none", answer="id", id_pieces=True)
  assert spec.first_entry_ranking
  for change in ({"reasoning": "brief"}, {"answer": "name_id"}, {"id_pieces": False}):
    assert not dataclasses.replace(spec, **change).first_entry_ranking


def test_real_cases_on_the_inner_split_leave_the_outer_validation_out(kb, subset, tmp_path):
  folder = tmp_path / "texts"
  folder.mkdir()
  pmids = [f"PMID:{200 + i}" for i in range(8)]
  for i, pmid in enumerate(pmids):
    disease = subset[i % len(subset)]
    finding = corpus.lower_first(corpus.findings(kb, kb.diseases[disease])[0].name)
    (folder / f"PMID_{i}.txt").write_text(TEXT_CASE.format(pmid=200 + i, disease=disease,
                                                           finding=finding))
  pool = [cases.Case(id=p, note="", gold_ids=(), pmid=p) for p in pmids]

  def split_of(seed):
    return {c.pmid: c.split for c in cases.development_split(pool, 0.4, seed, inner=True)}
  seed = next(s for s in range(1000)  # a seed that fills the three splits
              if set(split_of(s).values()) == {"train", "validation", cases.HELDOUT})
  config = builders.RealConfig.create(kb, texts=[folder], validation_fraction=0.4,
                                      split_seed=seed, inner_split=True)
  builder = builders.prepare(config, tmp_path / "data", kb)
  got = {split: sorted(e["pmid"] for e in builders.examples(builder, split))
         for split in builder.info.splits}
  want = {s: sorted(p for p, v in split_of(seed).items() if v == s)
          for s in ("train", "validation")}
  assert got == want
  outer = builders.RealConfig.create(kb, texts=[folder], validation_fraction=0.4, split_seed=seed)
  assert outer.name != config.name
