"""The one export loader (rarejax.export): a release or a stage export loads the same way for every
consumer; a folder that is neither is refused naming what is missing, before anything heavy."""
import json

import jax
import numpy as np
import pytest

from rarejax import export as export_lib
from rarejax import release
from rarejax.model import transformer
from rarejax.rers import stage as rers_stage
from rarejax.sample import Sampler


def test_weights_of_the_release_match_its_config():
  weights = export_lib.load_weights(release.DEFAULT_RELEASE)
  assert weights.config.vocab_size == weights.metadata["model_config"]["vocab_size"]
  shapes = jax.tree.map(np.shape, weights.params)
  assert shapes == jax.tree.map(np.shape, transformer.abstract_params(weights.config))
  assert weights.metadata["knowledge"]["excluded_pmids"]  # the knowledge stamp comes along


def test_the_release_can_teach_rers():
  model = export_lib.load_model(release.DEFAULT_RELEASE)
  teacher = rers_stage.load_teacher(release.DEFAULT_RELEASE, model.vocabulary, cache_length=256,
                                    max_batch_size=2)
  assert isinstance(teacher.sampler, Sampler)
  assert jax.tree.all(jax.tree.map(np.array_equal, teacher.params, model.params))


def test_a_folder_that_is_no_export_is_refused_by_name(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"not a params export or release.*--checkpoint"):
    export_lib.load_weights(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"RERS teacher: .*teacher_export"):
    rers_stage.load_teacher(tmp_path, vocabulary=None, cache_length=256, max_batch_size=2)
  (tmp_path / "params").mkdir()
  (tmp_path / "metadata.json").write_text(json.dumps({"vocabulary": "x.model"}))
  with pytest.raises(ValueError, match=r"metadata.json has no 'model_config'"):
    export_lib.load_weights(tmp_path)
