"""Mesh construction, logical->mesh specs with divisibility fallback, the unsharded guard."""
import jax
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec as P
import pytest

from rarejax.model.config import preset
from rarejax.model.transformer import abstract_params, param_logical_axes
from rarejax.parallel import mesh as mesh_lib
from rarejax.parallel import rules

MESH = AbstractMesh((2, 4, 2), mesh_lib.MESH_AXES)


def test_make_mesh_uses_auto_axes_and_fills_minus_one():
  mesh = mesh_lib.make_mesh(data=-1)
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
  assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}
  with pytest.raises(ValueError, match=r"\(data, fsdp, tensor\)=\(1, 2, 64\) needs 128 devices"):
    mesh_lib.make_mesh(fsdp=2, tensor=64)


def test_initialize_distributed_is_a_noop_on_one_process():
  assert mesh_lib.initialize_distributed() is False
  assert mesh_lib.initialize_distributed(num_processes=1) is False


def test_train_and_sample_rules_differ_only_in_fsdp_on_weights():
  q = P("layers", "embed", "heads", "head_dim")
  assert rules.logical_to_spec(q, (2, 64, 4, 16), MESH, rules.TRAIN_RULES) == P(
      None, "fsdp", "tensor", None)
  assert rules.logical_to_spec(q, (2, 64, 4, 16), MESH, rules.SAMPLE_RULES) == P(
      None, None, "tensor", None)
  batch = P("activation_batch", "activation_length")
  assert rules.logical_to_spec(batch, (16, 8), MESH, rules.SAMPLE_RULES) == P(("data", "fsdp"),
                                                                              None)


def test_non_dividing_dims_fall_back_to_a_dividing_prefix():
  batch = P("activation_batch", "activation_length")
  assert rules.logical_to_spec(batch, (6, 8), MESH, rules.TRAIN_RULES) == P("data", None)
  assert rules.logical_to_spec(batch, (3, 8), MESH, rules.TRAIN_RULES) == P(None, None)
  kv = P("layers", "embed", "kv_heads", "head_dim")
  assert rules.logical_to_spec(kv, (2, 64, 1, 16), MESH, rules.TRAIN_RULES) == P(
      None, "fsdp", None, None)


def test_unsharded_guard_names_the_largest_replicated_params():
  config = preset("tiny_llama")
  shapes = abstract_params(config)
  good = rules.logical_to_shardings(param_logical_axes(config), shapes, MESH, rules.TRAIN_RULES)
  assert rules.check_unsharded(good, shapes) < 0.01
  replicate_all = tuple((name, None) for name, _ in rules.TRAIN_RULES)
  bad = rules.logical_to_shardings(param_logical_axes(config), shapes, MESH, replicate_all)
  with pytest.raises(ValueError, match=r"100.0% of parameter elements .*\['embedding'\] \(16384\)"):
    rules.check_unsharded(bad, shapes, max_unsharded_fraction=0.5)
  data_only = AbstractMesh((16, 1, 1), mesh_lib.MESH_AXES)
  replicated = jax.tree.map(lambda _: NamedSharding(data_only, P()), shapes)
  assert rules.check_unsharded(replicated, shapes, max_unsharded_fraction=0.0) == 0.0
