"""Device mesh with axes (data, fsdp, tensor) and multi-host initialization."""
import contextlib
import logging
import math
import os
from collections.abc import Iterator

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh

from rarejax.parallel.rules import LogicalRules

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1,
              devices: list[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh with Auto axis types over the first devices.

  One size may be -1: it takes all remaining devices. Any axis may be 1, so the same code runs
  on one CPU, 8 fake CPU devices, one GPU or a pod. Auto axes let `with_sharding_constraint`
  and jit in/out shardings drive GSPMD (jax.make_mesh defaults to Explicit axes).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(shape)}: at most one axis may be -1.")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) > len(devices) or min(shape) < 1:
    raise ValueError(f"mesh shape (data, fsdp, tensor)={tuple(shape)} needs "
                     f"{math.prod(shape)} devices; {len(devices)} available.")
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices[:math.prod(shape)])


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: LogicalRules) -> Iterator[None]:
  """Makes `mesh` and the logical-axis `rules` current (needed while tracing the model)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, auto_detect: bool = False) -> bool:
  """Calls jax.distributed.initialize for multi-process runs; a no-op for one process.

  Multi-process is assumed when num_processes > 1, a coordinator address is given (argument
  or JAX_COORDINATOR_ADDRESS) or `auto_detect` is set; missing values are then detected by JAX
  (Cloud TPU pods, SLURM, Open MPI). Call it before any other JAX call.

  Returns:
    True when jax.distributed was initialized (now or earlier).
  """
  if jax.distributed.is_initialized():
    return True
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if (num_processes or 1) == 1 and coordinator_address is None and not auto_detect:
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info("jax.distributed: process %d of %d, %d local devices", jax.process_index(),
               jax.process_count(), jax.local_device_count())
  return True
