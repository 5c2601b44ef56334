"""Every experiment gin file parses with the registered configurables (typos fail here, not hours
into a run), names only registered stages and sets every required value of the stages it runs (the model
files against their presets: tests/model/test_model.py)."""
import gin
import pytest

from rarejax import main as main_lib
from rarejax import pipeline
from rarejax.model.config import ModelConfig
from rarejax.train import loop, optimizer
from tests.paths import GIN_CONFIGS

EXPERIMENTS = sorted(p.stem for p in (GIN_CONFIGS / "experiments").glob("*.gin"))


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

