"""Logical-axis rules tables (train, sample), logical->mesh shardings, and the unsharded guard.

Model code names every parameter and key activation with logical axes (`embed`, `mlp`,
`heads`, `kv_heads`, `head_dim`, `vocab`, `layers`, `norm`; activations `activation_*`; the
KV cache `cache_*`). A rules table maps each logical name to mesh axes, in priority order; a
mesh axis is used at most once per array (flax semantics). A dimension whose size is not
divisible by its mesh axes falls back to the longest dividing prefix of them (else replicated),
so small test models run on any mesh.
"""
import logging
import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

_ACTIVATION_RULES: LogicalRules = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
)
_MODEL_PARALLEL_RULES: LogicalRules = (
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
)
# Training: weights sharded over fsdp (embed axis) and tensor; batch over data x fsdp.
TRAIN_RULES: LogicalRules = _ACTIVATION_RULES + (("embed", "fsdp"),) + _MODEL_PARALLEL_RULES
# Sampling: no fsdp on weights (no per-token all-gathers while decoding); tensor parallel only.
SAMPLE_RULES: LogicalRules = _ACTIVATION_RULES + (("embed", None),) + _MODEL_PARALLEL_RULES

# Mesh axes that can shard parameters (data only replicates them).
PARAM_MESH_AXES = ("fsdp", "tensor")


def _dividing_axes(axes: str | tuple[str, ...] | None, size: int,
                   mesh: Mesh) -> str | tuple[str, ...] | None:
  """The longest prefix of `axes` whose mesh size product divides `size` (None if empty)."""
  if axes is None:
    return None
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  while axes and size % math.prod(mesh.shape[a] for a in axes):
    axes = axes[:-1]
  if not axes:
    return None
  return axes[0] if len(axes) == 1 else axes


def logical_to_spec(names: PartitionSpec, shape: tuple[int, ...], mesh: Mesh,
                    rules: LogicalRules) -> PartitionSpec:
  """Mesh PartitionSpec for an array of `shape` whose dims carry logical `names`."""
  mesh_axes = nn.logical_to_mesh_axes(tuple(names), rules)
  return PartitionSpec(*(_dividing_axes(axes, size, mesh) for axes, size in zip(mesh_axes, shape)))


def logical_to_shardings(logical: Any, shapes: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """NamedShardings for a pytree of logical PartitionSpecs and matching shapes (arrays or SDS)."""
  return jax.tree.map(
      lambda names, x: NamedSharding(mesh, logical_to_spec(names, x.shape, mesh, rules)),
      logical, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def _is_sharded(sharding: NamedSharding) -> bool:
  """Whether an array is split over a parameter mesh axis of size > 1."""
  used = jax.tree.leaves(tuple(sharding.spec))
  return any(a in PARAM_MESH_AXES and sharding.mesh.shape[a] > 1 for a in used)


def check_unsharded(shardings: Any, shapes: Any, max_unsharded_fraction: float = 0.2) -> float:
  """Fails when too many parameter elements are replicated across fsdp x tensor.

  Args:
    shardings: pytree of NamedSharding for the params.
    shapes: matching pytree of arrays or ShapeDtypeStructs.
    max_unsharded_fraction: largest allowed fraction of elements left unsharded.

  Returns:
    The unsharded fraction (0 when the mesh has no parameter axis larger than 1).
  """
  pairs = list(zip(jax.tree.leaves(shardings), jax.tree.leaves(shapes)))
  mesh = pairs[0][0].mesh
  if math.prod(mesh.shape[a] for a in PARAM_MESH_AXES) == 1:
    return 0.0
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
  total = sum(x.size for _, x in pairs)
  unsharded = sorted(((x.size, path) for (s, x), path in zip(pairs, paths) if not _is_sharded(s)),
                     reverse=True)
  fraction = sum(size for size, _ in unsharded) / total
  logging.info("unsharded parameter fraction %.4f over mesh %s", fraction, dict(mesh.shape))
  if fraction > max_unsharded_fraction:
    largest = ", ".join(f"{path} ({size})" for size, path in unsharded[:5])
    raise ValueError(
        f"{fraction:.1%} of parameter elements are replicated over mesh axes {PARAM_MESH_AXES} "
        f"(limit {max_unsharded_fraction:.1%}); largest unsharded: {largest}. Check that the "
        "rules table maps their logical axes and that their sizes divide the mesh axes.")
  return fraction
