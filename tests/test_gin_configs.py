"""Every experiment gin file parses with the registered configurables (typos fail here, not hours
into a run), names only registered stages and sets every required value of the stages it runs;
the model files keep the shapes of the presets they name."""
import pathlib
import re

import gin
import pytest

from rarejax import main as main_lib
from rarejax import pipeline
from rarejax.model import config as config_lib
from rarejax.model.config import ModelConfig
from rarejax.train import loop, optimizer

GIN_ROOT = pathlib.Path(__file__).resolve().parents[1] / "gin_configs"
EXPERIMENTS = sorted(p.stem for p in (GIN_ROOT / "experiments").glob("*.gin"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_config_parses_and_names_registered_stages(name):
  bindings = ["CHECKPOINT = '/nonexistent'"] if name == "paper_gpu" else []
  gin.clear_config()
  try:
    main_lib.parse_config([f"experiments/{name}.gin"], bindings)
    stages = gin.query_parameter("run_pipeline.stages")
  finally:
    gin.clear_config()
  assert stages and set(stages) <= set(pipeline.registered_stages())


def _parse(files, bindings=()):
  gin.clear_config()
  main_lib.parse_config(files, list(bindings))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_stage_an_experiment_runs_has_its_required_values(name):
  """The macros stages/*.gin declare %gin.REQUIRED are set for every stage the experiment runs."""
  bindings = ["CHECKPOINT = '/nonexistent'"] if name == "paper_gpu" else []
  try:
    _parse([f"experiments/{name}.gin"], bindings)
    assert main_lib.unset_required(gin.query_parameter("run_pipeline.stages")) == []
    gin.get_configurable("DataSpec")()
    ModelConfig()
    for stage in set(gin.query_parameter("run_pipeline.stages")) & {"cpt", "sft",
                                                                    "trajectory_sft"}:
      with gin.config_scope(stage):
        loop.LoopConfig()
        optimizer.OptimizerConfig()
  finally:
    gin.clear_config()


def test_a_required_value_left_unset_is_named():
  try:
    _parse(["models/tiny.gin", "stages/data.gin", "stages/train.gin"], ["SFT_STEPS = 5"])
    assert main_lib.unset_required(["data", "sft"]) == [  # cpt's CPT_STEPS: cpt does not run
        "LEARNING_RATE (for sft/OptimizerConfig.learning_rate)",
        "VOCAB_SIZE (for DataSpec.vocab_size)", "VOCAB_SIZE (for ModelConfig.vocab_size)",
        "WARMUP_STEPS (for sft/OptimizerConfig.warmup_steps)"]
  finally:
    gin.clear_config()


def test_the_run_stops_before_any_work_on_an_unset_required_value(tmp_path, capsys):
  workdir = tmp_path / "run"
  args = ["--workdir", str(workdir), "--gin_file", "experiments/tiny.gin",
          "--gin_bindings", "VOCAB_SIZE = %gin.REQUIRED"]
  try:
    assert main_lib.main(args) == 2
  finally:
    gin.clear_config()
  assert "required values not set: VOCAB_SIZE (for DataSpec.vocab_size)" in capsys.readouterr().err
  assert not workdir.exists()


MODEL_FILES = sorted((GIN_ROOT / "models").glob("*.gin"))


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_model_files_have_the_shapes_of_their_presets(path):
  """Each models/*.gin names the preset it copies; every field the preset sets is equal (the
  vocabulary too where the file sets one, which only an imported checkpoint's does)."""
  named = re.findall(r'preset\("(\w+)"\)', path.read_text())
  assert named, f"{path} names no rarejax.model.config preset"
  expected = config_lib.PRESETS[named[0]]
  try:
    _parse([str(path)])
    bound_vocab = "ModelConfig.vocab_size" in path.read_text()
    with gin.config_scope("check"):
      built = ModelConfig(**({} if bound_vocab else {"vocab_size": expected["vocab_size"]}))
  finally:
    gin.clear_config()
  differing = {k: (getattr(built, k), v) for k, v in expected.items() if getattr(built, k) != v}
  assert not differing, f"{path} differs from preset {named[0]!r}: {differing}"
