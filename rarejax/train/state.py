"""Train state (params, optimizer state, step, rng), its shardings, and sharded initialization."""
import functools
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import optax

from rarejax.model.config import ModelConfig
from rarejax.model.transformer import init_params, param_logical_axes
from rarejax.parallel import rules as rules_lib


@struct.dataclass
class TrainState:
  """Everything a training run carries from step to step (a pytree)."""
  step: jax.Array  # int32 scalar: number of updates applied
  params: Any  # plain params pytree (model.transformer)
  opt_state: optax.OptState
  rng: jax.Array  # uint32 [2] raw PRNG key, split once per step


def _init_state(config: ModelConfig, tx: optax.GradientTransformation,
                seed: jax.Array) -> TrainState:
  params_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = init_params(config, params_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=state_rng)


def abstract_train_state(config: ModelConfig, tx: optax.GradientTransformation) -> TrainState:
  """The TrainState as ShapeDtypeStructs (nothing allocated)."""
  return jax.eval_shape(functools.partial(_init_state, config, tx), jnp.zeros((), jnp.int32))


def _mirror_params(tree: Any, params: Any, params_shardings: Any, other: NamedSharding) -> Any:
  """Gives every params-shaped subtree of `tree` (Adam moments) the params' shardings."""
  params_def = jax.tree.structure(params)
  is_params = lambda x: jax.tree.structure(x) == params_def
  return jax.tree.map(lambda x: params_shardings if is_params(x) else other, tree,
                      is_leaf=is_params)


def train_state_shardings(config: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh,
                          rules: rules_lib.LogicalRules = rules_lib.TRAIN_RULES,
                          max_unsharded_fraction: float = 0.2) -> TrainState:
  """NamedShardings of the TrainState: params by logical rules, moments alike, rest replicated.

  Raises ValueError (rules.check_unsharded) when more than `max_unsharded_fraction` of the
  parameter elements would be replicated over the fsdp x tensor axes.
  """
  abstract = abstract_train_state(config, tx)
  params = rules_lib.logical_to_shardings(param_logical_axes(config), abstract.params, mesh,
                                          rules)
  rules_lib.check_unsharded(params, abstract.params, max_unsharded_fraction)
  replicated = NamedSharding(mesh, PartitionSpec())
  return TrainState(step=replicated, params=params,
                    opt_state=_mirror_params(abstract.opt_state, abstract.params, params,
                                             replicated),
                    rng=replicated)


def init_train_state(config: ModelConfig, tx: optax.GradientTransformation,
                     shardings: TrainState, seed: int = 0) -> TrainState:
  """A fresh TrainState created directly in its shardings (no host copy of the params)."""
  init = jax.jit(functools.partial(_init_state, config, tx), out_shardings=shardings)
  return init(jnp.asarray(seed, jnp.int32))
