"""Command line: run the pipeline (or one stage) from layered gin configs.

  python -m rarejax.main --workdir runs/quickstart \
      --gin_file gin_configs/experiments/quickstart.gin [--gin_bindings 'cpt/LoopConfig.num_steps=50']
      [--stage cpt] [--overwrite] [--verbose]
      [--distributed | --coordinator_address HOST:PORT --num_processes N --process_id I]

Multi-host: run the same command on every host (TPU pods, SLURM, Open MPI: `--distributed`,
everything detected by JAX; elsewhere the three explicit flags, process_id differing per host).

Gin files are layered: an experiment file includes a model file (gin_configs/models/) and stage
files (gin_configs/stages/). The config is parsed and checked (typos, unknown bindings) before
any work starts; the parsed config is written to <workdir>/config.gin and the operative config
to <workdir>/operative_config.gin.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from collections.abc import Sequence

import gin

from rarejax import startup

GIN_ROOT = pathlib.Path(__file__).resolve().parents[1] / "gin_configs"


class ConfigError(ValueError):
  """The gin configuration could not be parsed; nothing was run."""


def resolve_gin_file(name: str) -> pathlib.Path:
  """A gin file as given, else relative to gin_configs/ (absolute, so gin never mistakes a
  folder like 'experiments/' for a Python package)."""
  for candidate in (pathlib.Path(name), GIN_ROOT / name):
    if candidate.is_file():
      return candidate.resolve()
  raise ConfigError(f"gin file not found: {name} (looked in . and {GIN_ROOT})")


def parse_config(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Registers every configurable, then parses files and bindings; ConfigError on any problem."""
  import rarejax.stages  # pylint: disable=g-import-not-at-top,unused-import  (registers stages)
  gin.add_config_file_search_path(str(GIN_ROOT))
  # Experiments include each other by bare name: gin would take 'experiments/x.gin' for a
  # resource of the (namespace) package `experiments/` at the repository root.
  gin.add_config_file_search_path(str(GIN_ROOT / "experiments"))
  try:
    gin.parse_config_files_and_bindings([str(resolve_gin_file(f)) for f in gin_files],
                                        list(gin_bindings), finalize_config=False)
  except (ValueError, OSError, SyntaxError, TypeError) as err:
    raise ConfigError(f"gin config error (nothing was run): {err}") from None


def _macro_refs(value) -> set[str]:
  """Names of the macros a bound value refers to (%NAME), inside lists, tuples and dicts too."""
  if isinstance(value, gin.config.ConfigurableReference):
    return {value.scopes[0]} if value.selector == "gin.macro" and value.scopes else set()
  if isinstance(value, (list, tuple)):
    return set().union(*map(_macro_refs, value)) if value else set()
  if isinstance(value, dict):
    return _macro_refs(list(value.values()))
  return set()


def _is_required(value) -> bool:
  return (isinstance(value, gin.config.ConfigurableReference)
          and value.scopes == ["gin.REQUIRED"] and value.selector == "gin.constant")


def unset_required(stages: Sequence[str]) -> list[str]:
  """The macros declared `%gin.REQUIRED` (gin_configs/stages/*.gin) and never set that a binding
  the run uses refers to: unscoped, or scoped to one of `stages`. gin 0.5 would pass its REQUIRED
  marker on as the value (no error) when a parameter reaches it through a macro."""
  bindings = gin.config._CONFIG  # pylint: disable=protected-access  (no public listing)
  required = {scope for (scope, selector), params in bindings.items()
              if selector == "gin.macro" and _is_required(params.get("value"))}
  unset = set()
  for (scope, selector), params in bindings.items():
    if selector == "gin.macro" or (scope and scope.split("/")[0] not in stages):
      continue
    for name, value in params.items():
      for macro in _macro_refs(value) & required:
        unset.add(f"{macro} (for {scope + '/' if scope else ''}{selector.split('.')[-1]}.{name})")
  return sorted(unset)


def configure_logging(verbose: bool) -> None:
  """INFO for rarejax's own messages; the libraries quiet unless `verbose` (rarejax.startup)."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  startup.configure(verbose)
  if not verbose:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)
  for handler in logging.getLogger().handlers:  # gin logs its include look-ups at ERROR level
    handler.addFilter(lambda record: "/gin/" not in record.pathname)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (path, or relative to gin_configs/); repeatable")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="extra binding, e.g. 'cpt/LoopConfig.num_steps = 10'; repeatable")
  parser.add_argument("--stage", action="append", default=[],
                      help="run only these stages (default: run_pipeline.stages from gin)")
  parser.add_argument("--overwrite", action="store_true",
                      help="allow a workdir created by a different config (deletes its stages)")
  parser.add_argument("--distributed", action="store_true",
                      help="join a multi-host run; JAX detects the rest on TPU pods, SLURM and "
                           "Open MPI (not needed with --coordinator_address)")
  parser.add_argument("--coordinator_address", default=None,
                      help="multi-host: HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
  parser.add_argument("--num_processes", type=int, default=None,
                      help="multi-host: number of processes")
  parser.add_argument("--process_id", type=int, default=None,
                      help="multi-host: this process's index, 0..num_processes-1")
  parser.add_argument("--verbose", action="store_true",
                      help="show the libraries' start-up lines and notices (TensorFlow, TFDS, "
                           "absl, orbax), hidden by default (rarejax.startup)")
  args = parser.parse_args(argv)
  configure_logging(args.verbose)
  try:
    parse_config(args.gin_file, args.gin_bindings)
  except ConfigError as err:
    print(err, file=sys.stderr)
    return 2
  try:
    stages = args.stage or gin.query_parameter("run_pipeline.stages")
  except ValueError:  # unbound: run_pipeline says so itself
    stages = []
  unset = unset_required(stages)
  if unset:
    print(f"gin config error (nothing was run): required values not set: {', '.join(unset)}; "
          "set them in the experiment's gin file or with --gin_bindings 'NAME = VALUE'",
          file=sys.stderr)
    return 2
  from rarejax.parallel import mesh  # pylint: disable=g-import-not-at-top
  mesh.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                              auto_detect=args.distributed)
  from rarejax import pipeline  # pylint: disable=g-import-not-at-top
  kwargs = {"stages": args.stage} if args.stage else {}
  try:
    results = pipeline.run_pipeline(args.workdir, overwrite=args.overwrite, **kwargs)
  except pipeline.WorkdirConfigMismatch as err:
    print(err, file=sys.stderr)
    return 2
  for name, result in results.items():
    print(f"{name:>8}: {result.get('summary', '')} ({result.get('wall_seconds', 0):.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
