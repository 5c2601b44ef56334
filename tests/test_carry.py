"""The accelerator variant's two halves (rarejax.carry): a carry folder, then its train half run by
experiments/gpu/full_gpu.sh with TensorFlow, seqio and the other packages a GPU image lacks made
unimportable; the export comes back loadable."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from rarejax import carry, experiment, release
from rarejax.train import pipeline_stage as train_stages
from rarejax import export as export_lib
from rarejax.data import cached_batches, ranker_hints, soft_targets, token_cache
from rarejax.model import transformer
from rarejax.model.config import preset
from rarejax.train import loop, optimizer
from rarejax.train import stage as train_stage_lib

from tests.data import test_tasks  # pylint: disable=g-bad-import-order  (shared fixture)
from tests.paths import ROOT

data = test_tasks.data  # the tiny prepared datasets (module fixture)
# Absent from the accelerator image (gin travels in the carry's pylib/).
UNIMPORTABLE = ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text", "tensorboardX",
                "pyhpo", "fastobo", "rapidfuzz", "phenopackets")


@pytest.fixture(scope="module")
def tiny_carry(data, kb, tmp_path_factory):
  """A carry of the tiny data's sft mixture for a tiny model: 3 steps of 2 x 256."""
  prepared, names = data
  vocab_size = prepared.vocabulary().vocab_size
  settings = train_stage_lib.StageSettings(
      rates={"sft_mixture": 1.0}, sequence_length=256, batch_size=2,
      model_config=preset("tiny_llama", vocab_size=vocab_size),
      optimizer_config=optimizer.OptimizerConfig(learning_rate=3e-3, warmup_steps=1,
                                                 total_steps=3),
      loop_config=loop.LoopConfig(num_steps=3, loss="sft", log_every=1, checkpoint_every=2,
                                  async_checkpoints=False, loss_positions=64))
  provider = token_cache.build_cache(train_stages.training_provider(names, settings.rates),
                                     prepared.data_dir)
  out = tmp_path_factory.mktemp("carry") / "gpu_carry"
  carry.write_carry(out, data_dir=prepared.data_dir, provider=provider, settings=settings,
                    metadata=experiment.export_metadata(kb, prepared),
                    vocabulary=prepared.vocabulary_path, stage="sft", source={},
                    max_bytes=60 * 2**20)
  return out, prepared, provider


def test_carry_holds_the_cache_in_uint16_and_streams_the_same_batches(tiny_carry):
  out, prepared, provider = tiny_carry
  assert sorted(cached_batches.read_rates(out, provider)) == sorted(
      cached_batches.read_rates(prepared.data_dir, provider))
  for task in cached_batches.read_rates(out, provider):
    split = cached_batches.open_split(cached_batches.split_dir(out, task, "train"))
    assert split.tokens["targets"].dtype == np.uint16
  stream = lambda d: cached_batches.cached_batches(d, provider, 256, 2, seed=0, shard=(0, 1))
  for a, b in zip(stream(prepared.data_dir), stream(out)):
    for key in ("inputs", "targets", "loss_weights"):
      np.testing.assert_array_equal(a[key], b[key])
    break
  assert (out / carry.PYLIB / "gin" / "__init__.py").is_file()
  assert json.loads((out / carry.SPEC_FILE).read_text())["metadata"]["vocabulary"] == \
      carry.TOKENIZER_FILE


def _carry_with(out, prepared, provider, kb, **arrays):
  """A carry of the tiny data's sft mixture (default settings) with the given soft targets or
  ranker hints settings."""
  settings = train_stage_lib.StageSettings(
      rates={"sft_mixture": 1.0}, sequence_length=256, batch_size=2,
      model_config=preset("tiny_llama", vocab_size=prepared.vocabulary().vocab_size),
      optimizer_config=optimizer.OptimizerConfig(), loop_config=loop.LoopConfig())
  carry.write_carry(out, data_dir=prepared.data_dir, provider=provider, settings=settings,
                    metadata=experiment.export_metadata(kb, prepared),
                    vocabulary=prepared.vocabulary_path, stage="sft", source={},
                    max_bytes=60 * 2**20, **arrays)
  return out


def test_soft_targets_travel_compact_and_stream_the_same_rows(tiny_carry, kb, tmp_path):
  """A stage with soft targets: the carry holds them (uint16 ids, float16 probabilities), its
  spec names the settings, and its batches carry the same soft rows as the source's."""
  _, prepared, provider = tiny_carry
  config = soft_targets.SoftTargets(weight=0.5, k=2)
  task = sorted(cached_batches.read_rates(prepared.data_dir, provider))[0]
  source = cached_batches.split_dir(prepared.data_dir, task, "train")
  n = len(cached_batches.open_split(source))
  written = soft_targets.folder_of(source, config)
  written.mkdir()
  rng = np.random.default_rng(0)
  np.save(written / "ids.npy", rng.integers(0, 900, (n, 2)).astype(np.int32))
  np.save(written / "probs.npy", rng.dirichlet([1.0, 1.0], n).astype(np.float32))
  (written / soft_targets.META).write_text(json.dumps({"offset": 1}))
  try:
    out = _carry_with(tmp_path / "carry", prepared, provider, kb, soft=config)
    carried = soft_targets.folder_of(cached_batches.split_dir(out, task, "train"), config)
    assert np.load(carried / "ids.npy").dtype == np.uint16
    assert np.load(carried / "probs.npy").dtype == np.float16
    assert json.loads((out / carry.SPEC_FILE).read_text())["soft_targets"]["k"] == 2
    stream = lambda d: cached_batches.cached_batches(d, provider, 2048, 2, seed=0,  # whole notes
                                                     shard=(0, 1), soft=config)
    for a, b in itertools.islice(zip(stream(prepared.data_dir), stream(out)), 3):
      np.testing.assert_array_equal(a["soft_ids"], b["soft_ids"])
      np.testing.assert_allclose(a["soft_probs"], b["soft_probs"], atol=1e-3)
    assert any(a["soft_probs"].sum() > 0 for a in itertools.islice(stream(out), 3))
  finally:
    shutil.rmtree(written)  # the module's other tests read this cache without soft targets


def test_ranker_hints_travel_compact_and_stream_the_same_prompts(tiny_carry, kb, tmp_path):
  """A stage with ranker hints: the carry holds them (uint16 ids, 65535 for none), its spec names
  the settings, and its batches' prompts end with the same hints as the source's."""
  _, prepared, provider = tiny_carry
  config = ranker_hints.RankerHints(k=2)
  task = sorted(cached_batches.read_rates(prepared.data_dir, provider))[0]
  source = cached_batches.split_dir(prepared.data_dir, task, "train")
  n = len(cached_batches.open_split(source))
  written = ranker_hints.folder_of(source, config)
  written.mkdir()
  ids = np.random.default_rng(0).integers(0, 900, (n, 2)).astype(np.int32)
  ids[::3, 1] = ranker_hints.NONE
  np.save(written / "ids.npy", ids)
  (written / ranker_hints.META).write_text(json.dumps({"prefix_tokens": [5, 6]}))
  try:
    out = _carry_with(tmp_path / "carry", prepared, provider, kb, hints=config)
    carried = ranker_hints.folder_of(cached_batches.split_dir(out, task, "train"), config)
    assert np.load(carried / "ids.npy").dtype == np.uint16
    assert json.loads((out / carry.SPEC_FILE).read_text())["ranker_hints"] == {"k": 2}
    np.testing.assert_array_equal(ranker_hints.load(source, config).ids,
                                  ranker_hints.load(cached_batches.split_dir(out, task, "train"),
                                                    config).ids)
    stream = lambda d, h: cached_batches.cached_batches(d, provider, 2048, 2, seed=0,
                                                        shard=(0, 1), hints=h)
    for a, b in itertools.islice(zip(stream(prepared.data_dir, config), stream(out, config)), 3):
      np.testing.assert_array_equal(a["inputs"], b["inputs"])
    split = cached_batches.open_split(cached_batches.split_dir(out, task, "train"), hints=config)
    plain = cached_batches.open_split(cached_batches.split_dir(out, task, "train"))
    assert split.example(0)[0].tolist() == plain.example(0)[0].tolist() + [5, 6, ids[0, 0]]
    assert split.example(1)[0].tolist() == plain.example(1)[0].tolist() + [5, 6, *ids[1]]
  finally:
    shutil.rmtree(written)  # the module's other tests read this cache without hints


def test_write_carry_refuses_a_carry_over_its_limit(tiny_carry, tmp_path):
  out, prepared, provider = tiny_carry
  spec = json.loads((out / carry.SPEC_FILE).read_text())
  settings = train_stage_lib.StageSettings({"sft_mixture": 1.0}, 256, 2,
                                           *carry.configs(spec))
  with pytest.raises(ValueError, match="MiB allowed"):
    carry.write_carry(tmp_path / "c", data_dir=prepared.data_dir, provider=provider,
                      settings=settings, metadata={}, vocabulary=prepared.vocabulary_path,
                      stage="sft", source={}, max_bytes=1000)
  assert not (tmp_path / "c").exists()


def test_an_export_that_could_not_come_back_is_refused_before_training(tiny_carry):
  out, _, _ = tiny_carry
  big = preset("small_100m", vocab_size=60_000)  # a 92 MiB embedding table: one file too big
  with pytest.raises(ValueError, match="more than"):
    carry.check_return_limits(big, out)
  assert carry.check_return_limits(preset("tiny_llama"), out) == 1


def test_sharded_params_load_as_a_release(tmp_path):
  config = preset("tiny_llama")
  params = transformer.init_params(config, jax.random.key(0))
  paths = release.write_params(params, tmp_path, max_file_bytes=40_000)
  assert len(paths) > 1 and all(p.stat().st_size < 40_000 + 4096 for p in paths)
  assert release.is_release(tmp_path)
  loaded = release.load_release_params(tmp_path, config)
  np.testing.assert_allclose(np.asarray(loaded["embedding"]), np.asarray(
      release.flatten(params)["embedding"], np.float32))
  paths[0].unlink()
  with pytest.raises(ValueError, match="not one complete set"):
    release.load_release_params(tmp_path, config)


def test_train_half_runs_without_tensorflow_and_its_export_loads(tiny_carry, tmp_path):
  out, prepared, _ = tiny_carry
  blocker = tmp_path / "blocker"
  blocker.mkdir()
  (blocker / "sitecustomize.py").write_text(
      "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in UNIMPORTABLE))
  env = {**os.environ, "PYTHONPATH": str(blocker), "PYTHON": sys.executable, "CARRY": str(out),
         "GPU_WORKDIR": str(tmp_path / "work"), "OUT": str(tmp_path / "out"),
         "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(["bash", "experiments/gpu/full_gpu.sh", "train"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "out" / carry.REPORT_FILE).read_text())
  assert report["imported"] == [] and report["stopped"] == "completed" and report["step"] == 3
  assert report["tokens_per_second"] > 0 and report["wall_seconds"] > 0
  files = sorted(p.name for p in (tmp_path / "out").iterdir())
  assert len(files) <= carry.OUT_MAX_FILES and "metrics.jsonl" in files
  model = export_lib.load_model(tmp_path / "out")
  assert model.config.vocab_size == prepared.vocabulary().vocab_size
  assert model.metadata["training"]["stopped"] == "completed"
  assert model.metadata[export_lib.ANSWER_RANKING] in ("first_entry", "generate")
