"""The PhEval runner's settings (config.yaml) and the `rarejax evaluate` command line they give.

The settings are the tool_specific_configuration_options of the input directory's config.yaml:

  tool_specific_configuration_options:
    method: resnik        # resnik | likelihood_ratio | model; case_knn, case_resnik, fusion, rrf
                          # need train_cases
    mode: oracle          # classical methods: oracle (the phenopacket's HPO terms, default) or text
                          # (concepts recognized in the note rendered from it); the model reads
                          # that note (text, its only mode)
    top_k: 10             # diseases kept per phenopacket
    checkpoint: PATH      # model only: an export or release folder (default: the release
                          # rarejax diagnose uses, releases/rarejax-full-cpu)
    exclude_pmids: [FILE] # PubMed id files also excluded from the knowledge
    train_cases: [phenopackets:PATH or jsonl:PATH]   # the case rankers' and fusions' database

Relative paths are read from the input directory (the folder of config.yaml). The run follows
rarejax's honest protocol (rarejax.evaluate.run): the corpus's publications are excluded from the
knowledge the methods rank with, and an export whose training knowledge read one is refused.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

from rarejax.evaluate import methods as methods_lib

MODEL = "model"
METHODS = (MODEL, *methods_lib.CLASSICAL)
KEYS = ("method", "mode", "top_k", "checkpoint", "exclude_pmids", "train_cases")
TRAIN_KINDS = ("phenopackets", "jsonl")


class ConfigError(ValueError):
  """A bad runner setting; the message names the file, the field and the fix."""


@dataclasses.dataclass(frozen=True)
class Options:
  """One runner's settings, paths already resolved against the input directory."""
  method: str
  mode: str
  top_k: int = 10
  checkpoint: str | None = None
  exclude_pmids: tuple[str, ...] = ()
  train_cases: tuple[str, ...] = ()

  @property
  def result_name(self) -> str:
    """The method's name in rarejax's reports (cases.tsv's `method` column)."""
    return f"{self.method}.{self.mode}"

  def as_dict(self) -> dict[str, Any]:
    """Plain values (lists, not tuples) for PhEval's results.yml."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def parse(raw: Any, input_dir: str | pathlib.Path) -> Options:
  """Checks `raw` (the tool_specific_configuration_options mapping of INPUT_DIR/config.yaml).

  Raises:
    ConfigError: naming config.yaml, the field and what it takes.
  """
  where = f"{pathlib.Path(input_dir) / 'config.yaml'}: tool_specific_configuration_options"
  if not isinstance(raw, Mapping):
    raise ConfigError(f"{where} must be a mapping with at least 'method' (one of "
                      f"{', '.join(METHODS)}), got {raw!r}")
  unknown = sorted(set(raw) - set(KEYS))
  if unknown:
    raise ConfigError(f"{where}.{unknown[0]}: unknown setting; the settings are {', '.join(KEYS)}")
  method = raw.get("method")
  if method not in METHODS:
    raise ConfigError(f"{where}.method: got {method!r}; set one of {', '.join(METHODS)}")
  default_mode = "text" if method == MODEL else "oracle"
  mode = raw.get("mode") or default_mode
  if mode not in methods_lib.MODES:
    raise ConfigError(f"{where}.mode: got {mode!r}; set one of {', '.join(methods_lib.MODES)}")
  if method == MODEL and mode != "text":
    raise ConfigError(f"{where}.mode: the model reads the note rendered from each phenopacket; set "
                      "mode: text or leave it out")
  top_k = raw.get("top_k", 10)
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
    raise ConfigError(f"{where}.top_k: got {top_k!r}; set a whole number >= 1")
  checkpoint = raw.get("checkpoint")
  if checkpoint is not None and method != MODEL:
    raise ConfigError(f"{where}.checkpoint: only the model reads a checkpoint; remove it or set "
                      f"method: {MODEL}")
  base = pathlib.Path(input_dir)
  train_cases = tuple(_train_spec(s, base, f"{where}.train_cases[{i}]")
                      for i, s in enumerate(_strings(raw, "train_cases", where)))
  needing = set(methods_lib.NEEDS_TRAINING_CASES)
  if method in needing and not train_cases:
    raise ConfigError(f"{where}.train_cases: {method} ranks by similar training cases; list at "
                      "least one 'phenopackets:PATH' or 'jsonl:PATH'")
  return Options(method, mode, top_k,
                 None if checkpoint is None else _path(checkpoint, base, f"{where}.checkpoint"),
                 tuple(_path(p, base, f"{where}.exclude_pmids")
                       for p in _strings(raw, "exclude_pmids", where)),
                 train_cases)


def _strings(raw: Mapping[str, Any], key: str, where: str) -> list[str]:
  value = raw.get(key) or []
  if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
    raise ConfigError(f"{where}.{key}: got {value!r}; set a list of paths, e.g. [{key}.txt]")
  return value


def _path(value: Any, base: pathlib.Path, where: str) -> str:
  if not isinstance(value, str) or not value:
    raise ConfigError(f"{where}: got {value!r}; set a path")
  return str(base / value)  # an absolute value stays as it is


def _train_spec(spec: str, base: pathlib.Path, where: str) -> str:
  kind, _, path = spec.partition(":")
  if kind not in TRAIN_KINDS or not path:
    raise ConfigError(f"{where}: got {spec!r}; write phenopackets:PATH or jsonl:PATH")
  return f"{kind}:{_path(path, base, where)}"


def evaluate_argv(options: Options, phenopacket_dir: str | pathlib.Path,
                  out_dir: str | pathlib.Path) -> list[str]:
  """The `rarejax evaluate` arguments that rank every phenopacket of `phenopacket_dir` with the
  configured method and write rarejax's report, with cases.tsv, to `out_dir`."""
  argv = ["--benchmark", f"phenopackets:{phenopacket_dir}", "--methods", options.method,
          "--modes", options.mode, "--top_k", str(options.top_k), "--out", str(out_dir),
          "--quiet"]
  if options.checkpoint:
    argv += ["--checkpoint", options.checkpoint]
  for path in options.exclude_pmids:
    argv += ["--exclude_pmids", path]
  for spec in options.train_cases:
    argv += ["--train_cases", spec]
  return argv
