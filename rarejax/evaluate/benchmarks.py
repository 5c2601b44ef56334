"""Evaluation benchmarks: cases with notes from simulation, phenopackets, narrative texts or JSONL, and
the publications the honest protocol must exclude from the knowledge for each.

Spec strings (the `--benchmark` flag of `python -m rarejax.evaluate.run`):

  phenopackets:PATH[:SPLIT]     a phenopacket zip, directory or file, rendered to notes; SPLIT is
                                'all' (default), 'validation' (the validation publications of
                                `split_by_publication(fraction, seed)` are evaluated and the
                                training publications' cases come along as training cases) or
                                'inner' (the same, one level down, for choices made while
                                developing: cases.development_split(inner=True); the outer
                                validation publications are left out and excluded from the
                                knowledge)
  texts:PATH                    a case-text file or directory of *.txt (rarejax.cases.text)
  jsonl:PATH                    JSON Lines of {id, note, gold_ids, ...Case fields}
  simulated:N_DISEASES:N_PER    N_PER simulated patients of each of N_DISEASES OMIM diseases drawn
                                with the seed, from the evaluation knowledge (use a seed that no
                                training data used)
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rarejax import knowledge
from rarejax.cases import (HELDOUT, Case, PatientSimulator, ReadReport, RenderConfig,
                           SimulatorConfig, development_split, pmids, read_jsonl,
                           read_phenopackets, read_text_cases, render_cases)

KINDS = ("phenopackets", "texts", "jsonl", "simulated")
PHENOPACKET_SPLITS = ("all", "validation", "inner")


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """Cases to evaluate (each with a note), where they came from, and training cases that came along.

  Attributes:
    name: short name used in reports and file names.
    cases: the evaluated cases.
    source: one line saying what was read and how.
    config: how the benchmark was built (recorded in reports).
    train_cases: training-publication cases of a development split (empty otherwise).
    from_publications: True for real cases: their publications must be excluded from the
      knowledge used to evaluate them (`exclude_pmids`). False for simulated cases.
    heldout_pmids: publications neither evaluated nor trained on that the knowledge must not
      contain either (the outer validation publications of an 'inner' development split).
  """
  name: str
  cases: tuple[Case, ...]
  source: str
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  train_cases: tuple[Case, ...] = ()
  from_publications: bool = True
  heldout_pmids: tuple[str, ...] = ()

  def __post_init__(self):
    if not self.cases:
      raise ValueError(f"benchmark {self.name!r} has no cases ({self.source})")
    missing = [c.id for c in self.cases if not c.note.strip()]
    if missing:
      raise ValueError(f"benchmark {self.name!r}: {len(missing)} cases have no note "
                       f"(e.g. {missing[0]!r}); render structured cases with render_cases first")

  @property
  def exclude_pmids(self) -> tuple[str, ...]:
    """The publications whose annotation rows the evaluation knowledge must not contain."""
    if not self.from_publications:
      return ()
    return tuple(sorted({*pmids(self.cases), *self.heldout_pmids}))


def knowledge_exclusions(benchmarks: Iterable[Benchmark]) -> list[str]:
  """The honest protocol's knowledge exclusion list: every evaluated publication, sorted."""
  return sorted({p for b in benchmarks for p in b.exclude_pmids})


def require_path(path: str | pathlib.Path, what: str) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{what} not found: {path}")
  return path


def _checked_read(cases: list[Case], report: ReadReport, path: pathlib.Path, what: str
                  ) -> list[Case]:
  if not cases:
    detail = f"; first problem: {report.examples[0]}" if report.examples else ""
    raise ValueError(f"no readable {what} in {path} ({report.n_skipped} skipped{detail})")
  return cases


def load_phenopackets(path: str | pathlib.Path, kb: knowledge.KnowledgeBase, split: str = "all",
                      validation_fraction: float = 0.2, seed: int = 0,
                      render_config: RenderConfig = RenderConfig(), render_seed: int = 0,
                      name: str | None = None) -> Benchmark:
  """Phenopackets rendered to notes; `split='validation'` gives the development protocol's cases,
  `split='inner'` those of its inner split (see the module docstring).

  `kb` maps obsolete/alternative HPO ids and writes the notes (it never leaks into rankings;
  pass the full knowledge base).
  """
  if split not in PHENOPACKET_SPLITS:
    raise ValueError(f"phenopacket split must be one of {PHENOPACKET_SPLITS}, got {split!r}")
  path = require_path(path, "phenopacket source")
  cases, report = read_phenopackets(path, kb=kb)
  cases = render_cases(_checked_read(cases, report, path, "phenopackets"), kb, render_config,
                       render_seed)
  config = {"kind": "phenopackets", "path": str(path), "split": split, "n_read": report.n_read,
            "n_skipped": report.n_skipped, "render": dataclasses.asdict(render_config),
            "render_seed": render_seed}
  train: list[Case] = []
  heldout: list[str] = []
  if split != "all":
    cases = development_split(cases, validation_fraction, seed, inner=split == "inner")
    train = [c for c in cases if c.split == "train"]
    heldout = pmids(c for c in cases if c.split == HELDOUT)
    cases = [c for c in cases if c.split == "validation"]
    config.update(validation_fraction=validation_fraction, split_seed=seed,
                  n_train_cases=len(train), n_train_publications=len(pmids(train)),
                  n_heldout_publications=len(heldout))
  source = (f"{len(cases)} phenopackets from {path.name}"
            + (f" ({split} validation publications: {validation_fraction:.0%}, seed {seed})"
               if split != "all" else ""))
  return Benchmark(name or f"phenopackets_{split}", tuple(cases), source, config, tuple(train),
                   heldout_pmids=tuple(heldout))


def load_texts(path: str | pathlib.Path, name: str | None = None) -> Benchmark:
  """Narrative case texts (one file or a directory of *.txt)."""
  path = require_path(path, "case-text source")
  cases, report = read_text_cases(path)
  cases = _checked_read(cases, report, path, "case texts")
  return Benchmark(name or "texts", tuple(cases), f"{len(cases)} narrative case texts from {path}",
                   {"kind": "texts", "path": str(path), "n_read": report.n_read,
                    "n_skipped": report.n_skipped})


def load_jsonl(path: str | pathlib.Path, name: str | None = None) -> Benchmark:
  """Cases from JSON Lines ({id, note, gold_ids, ...})."""
  path = require_path(path, "JSONL file")
  cases, report = read_jsonl(path)
  cases = _checked_read(cases, report, path, "JSONL cases")
  return Benchmark(name or "jsonl", tuple(cases), f"{len(cases)} JSONL cases from {path}",
                   {"kind": "jsonl", "path": str(path), "n_read": report.n_read,
                    "n_skipped": report.n_skipped})


def choose_diseases(kb: knowledge.KnowledgeBase, n_diseases: int, seed: int,
                    prefix: str = "OMIM") -> list[str]:
  """`n_diseases` disease ids of one namespace drawn without replacement by `seed`, sorted."""
  available = kb.disease_ids(prefix)
  if not 1 <= n_diseases <= len(available):
    raise ValueError(f"n_diseases must be in [1, {len(available)}] ({prefix} diseases with "
                     f"phenotype annotations), got {n_diseases}")
  rng = np.random.default_rng(seed)
  return sorted(available[i] for i in rng.choice(len(available), n_diseases, replace=False))


def load_simulated(kb: knowledge.KnowledgeBase, n_diseases: int, n_per_disease: int,
                   seed: int = 0, disease_ids: Sequence[str] | None = None,
                   simulator_config: SimulatorConfig = SimulatorConfig(),
                   render_config: RenderConfig = RenderConfig(),
                   name: str | None = None) -> Benchmark:
  """Simulated patients with rendered notes (from the knowledge the methods are evaluated with)."""
  if n_per_disease < 1:
    raise ValueError(f"n_per_disease must be >= 1, got {n_per_disease}")
  diseases = list(disease_ids) if disease_ids else choose_diseases(kb, n_diseases, seed)
  cases = PatientSimulator(kb, simulator_config).simulate_many(diseases, n_per_disease, seed)
  cases = render_cases(cases, kb, render_config, seed)
  config = {"kind": "simulated", "n_diseases": len(diseases), "n_per_disease": n_per_disease,
            "seed": seed, "simulator": dataclasses.asdict(simulator_config),
            "render": dataclasses.asdict(render_config), "knowledge": kb.version.digest}
  return Benchmark(name or "simulated", tuple(cases),
                   f"{len(cases)} simulated patients of {len(diseases)} diseases (seed {seed})",
                   config, from_publications=False)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  """A parsed `--benchmark` string: kind and its arguments (see the module docstring)."""
  kind: str
  path: str = ""
  split: str = "all"
  n_diseases: int = 0
  n_per_disease: int = 0

  @property
  def needs_evaluation_knowledge(self) -> bool:
    """Simulated benchmarks are drawn from the (exclusion-applied) evaluation knowledge."""
    return self.kind == "simulated"


def parse_spec(spec: str) -> BenchmarkSpec:
  """'phenopackets:PATH[:SPLIT]', 'texts:PATH', 'jsonl:PATH' or 'simulated:N_DISEASES:N_PER'."""
  kind, _, rest = spec.partition(":")
  if kind not in KINDS or not rest:
    raise ValueError(f"bad benchmark {spec!r}: expected KIND:ARGS with KIND one of {KINDS}, e.g. "
                     "phenopackets:store.zip:validation, texts:DIR, jsonl:FILE, simulated:100:2")
  if kind == "simulated":
    parts = rest.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
      raise ValueError(f"bad benchmark {spec!r}: expected simulated:N_DISEASES:N_PER with "
                       "positive integers, e.g. simulated:100:2")
    return BenchmarkSpec(kind, n_diseases=int(parts[0]), n_per_disease=int(parts[1]))
  if kind == "phenopackets":
    path, _, split = rest.rpartition(":")
    if path and split in PHENOPACKET_SPLITS:
      return BenchmarkSpec(kind, path=path, split=split)
  return BenchmarkSpec(kind, path=rest)


def load_spec(spec: BenchmarkSpec, kb: knowledge.KnowledgeBase, validation_fraction: float = 0.2,
              seed: int = 0, render_config: RenderConfig = RenderConfig()) -> Benchmark:
  """Loads a parsed spec. `kb`: the full knowledge for real cases, the evaluation knowledge for
  simulated ones (see BenchmarkSpec.needs_evaluation_knowledge)."""
  if spec.kind == "phenopackets":
    return load_phenopackets(spec.path, kb, spec.split, validation_fraction, seed, render_config)
  if spec.kind == "texts":
    return load_texts(spec.path)
  if spec.kind == "jsonl":
    return load_jsonl(spec.path)
  return load_simulated(kb, spec.n_diseases, spec.n_per_disease, seed,
                        render_config=render_config, name=f"simulated_{spec.n_diseases}x"
                        f"{spec.n_per_disease}")
