"""Every experiment gin file parses with the registered configurables (typos fail here, not hours
into a run) and names only registered stages."""
import pathlib

import gin
import pytest

from rarejax import main as main_lib
from rarejax import pipeline

EXPERIMENTS = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[1] / "gin_configs"
                                      / "experiments").glob("*.gin"))


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
