"""seqio tasks over built datasets and the numpy batch iterator the train loop calls."""
import collections
import dataclasses

import numpy as np
import pytest

from rarejax.data import batches, builders, packing, stage, tasks, trajectory, vocab

import seqio  # pylint: disable=g-bad-import-order  (after rarejax.data hid the GPUs from TF)

LENGTH = 2048  # long enough for every diagnosis example with a tiny test vocabulary
ALL = seqio.ShardInfo(index=0, num_shards=1)


@pytest.fixture(scope="module")
def data(kb, tmp_path_factory):
  spec = stage.DataSpec(n_diseases=4, disease_seed=5, n_train=2, n_validation=1,
                        findings_questions=1, vocab_size=1000)
  prepared = stage.prepare_data(kb, tmp_path_factory.mktemp("data"), spec)
  return prepared, stage.register_tasks(prepared)


def _key(prompt, response):
  return tuple(prompt.tolist()), tuple(response.tolist())


def _segments(task, pack, split="train"):
  out = batches.get_batches(task, LENGTH, 2, split, ALL, pack=pack, num_epochs=1, shuffle=False)
  return [segment for batch in out for segment in packing.unpack(batch)]


def test_task_names_carry_knowledge_digest_and_vocabulary(kb, data):
  prepared, names = data
  fingerprint = vocab.fingerprint(prepared.vocabulary())[:8]
  for role in ("knowledge_lm", "knowledge_qa", "diagnosis", "prompts_final"):
    assert f"_kb{kb.version.digest}_v{fingerprint}" in names[role]
    assert names[role] in seqio.TaskRegistry.names()
  assert names["sft_mixture"] in seqio.MixtureRegistry.names()


@pytest.mark.parametrize("role", ["knowledge_lm", "knowledge_qa", "diagnosis", "sft_mixture"])
def test_batches_have_the_train_step_keys(data, role):
  batch = next(batches.get_batches(data[1][role], LENGTH, 2, shard_info=ALL))
  assert set(batch) == set(packing.BATCH_KEYS)
  for key, value in batch.items():
    assert value.shape == (2, LENGTH)
    assert value.dtype == (np.float32 if key == "loss_weights" else np.int32)
  assert batch["loss_weights"].sum() > 0


def test_loss_mask_covers_exactly_the_response_tokens(data):
  prepared, names = data
  vocabulary = prepared.vocabulary()
  simulated = builders.builder_for(prepared.simulated, prepared.data_dir)
  expected = collections.Counter(
      (tuple(vocabulary.encode(e["prompt"])), tuple(vocabulary.encode(e["response"]) + [1]))
      for e in builders.examples(simulated))
  assert collections.Counter(_key(*s) for s in _segments(names["diagnosis"], pack=False)) == (
      expected)


def test_packing_preserves_every_token(data):
  for role in ("knowledge_lm", "diagnosis"):
    padded = _segments(data[1][role], pack=False)
    packed = _segments(data[1][role], pack=True)
    assert len(packed) == len(padded) > 0
    assert collections.Counter(_key(*s) for s in packed) == collections.Counter(
        _key(*s) for s in padded)


def test_lm_task_puts_loss_on_every_token(data):
  batch = next(batches.get_batches(data[1]["knowledge_lm"], 256, 2, shard_info=ALL))
  np.testing.assert_array_equal(batch["loss_weights"] > 0, batch["segment_ids"] > 0)


def test_same_seed_same_batches_and_shards_partition_the_data(data):
  task = data[1]["diagnosis"]
  first = [next(batches.get_batches(task, LENGTH, 2, shard_info=ALL, seed=3)) for _ in range(2)]
  np.testing.assert_array_equal(first[0]["targets"], first[1]["targets"])
  ids = [{e["case_id"] for e in batches.get_examples(data[1]["prompts"], "train",
                                                      seqio.ShardInfo(index=i, num_shards=2))}
         for i in range(2)]
  everything = {e["case_id"] for e in batches.get_examples(data[1]["prompts"], "train", ALL)}
  assert ids[0] and ids[1] and not ids[0] & ids[1] and ids[0] | ids[1] == everything
  assert batches.host_shard() == ALL  # one process: jax.process_index() 0 of 1


def test_prompt_tasks_carry_gold_tier_and_level(data):
  prepared, names = data
  vocabulary = prepared.vocabulary()
  example = next(batches.get_examples(names["prompts_final"], "validation", ALL))
  assert example["task"] == "final" and example["tier"] == -1 and example["gold_ids"]
  assert "single most likely diagnosis" in example["inputs_pretokenized"]
  assert vocabulary.decode(example["inputs"].tolist()) == example["inputs_pretokenized"]
  tiered = tasks.register_prompts(prepared.simulated, prepared.data_dir, vocabulary,
                                  tiers={example["case_id"]: 2})
  tiers = {e["case_id"]: e["tier"] for e in batches.get_examples(tiered, "validation", ALL)}
  assert tiers[example["case_id"]] == 2 and set(tiers.values()) == {-1, 2}


def test_registration_refuses_unbuilt_data(kb, data, tmp_path):
  prepared, _ = data
  with pytest.raises(ValueError, match="is not built in"):
    tasks.register_diagnosis(prepared.simulated, tmp_path, prepared.vocabulary())
  with pytest.raises(TypeError, match="expected a config of type"):
    tasks.register_diagnosis(prepared.knowledge, prepared.data_dir, prepared.vocabulary())


def test_trajectory_task_pairs_original_prompt_with_response(kb, data, tmp_path):
  prepared, _ = data
  vocabulary = prepared.vocabulary()
  simulated = builders.builder_for(prepared.simulated, prepared.data_dir)
  rows = list(builders.examples(simulated, "validation"))
  path = tmp_path / "trajectories.jsonl"
  trajectory.write_trajectories([trajectory.Trajectory(
      case_id=r["case_id"], prompt=r["prompt"], response=r["response"], gold_ids=r["gold_ids"],
      method="reflection", kb_digest=kb.version.digest) for r in rows], path)
  config = builders.TrajectoryConfig.create(kb, path=path)
  builders.prepare(config, prepared.data_dir, kb)
  name = tasks.register_trajectories(config, prepared.data_dir, vocabulary)
  segments = _segments(name, pack=True)
  assert collections.Counter(_key(*s) for s in segments) == collections.Counter(
      (tuple(vocabulary.encode(r["prompt"])), tuple(vocabulary.encode(r["response"]) + [1]))
      for r in rows)


def test_final_rate_adds_the_final_level_to_the_sft_mixture(data):
  prepared, names = data
  assert {t.name for t in seqio.get_mixture_or_task(names["sft_mixture"]).tasks} == {
      names["knowledge_qa"], names["diagnosis"]}
  with_final = stage.register_tasks(dataclasses.replace(
      prepared, spec=dataclasses.replace(prepared.spec, final_rate=0.5)))
  mixture = seqio.get_mixture_or_task(with_final["sft_mixture"])
  assert {t.name for t in mixture.tasks} == {names["knowledge_qa"], names["diagnosis"],
                                             names["diagnosis_final"]}
  assert mixture.get_rate(seqio.get_mixture_or_task(names["diagnosis_final"])) == 0.5
