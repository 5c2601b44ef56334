"""TFDS builders materializing the knowledge corpus, simulated and real cases, RERS trajectories.

Offline, deterministic (same config → same TFRecord bytes) and versioned. A BuilderConfig holds
every parameter, including the knowledge base's version digest (which covers the excluded
PMIDs): its name is `<hash of the parameters>-kb<digest>`, so a corpus built with held-out
publications excluded lives in a different folder from one built without, and the stamp is
stored in the dataset's metadata and checked on every load (`KnowledgeMismatchError`).

  builder            splits              one example is
  KnowledgeCorpus    train               a profile document or a QA pair (rarejax.data.corpus)
  SimulatedCases     train, validation   a simulated patient's note, gold, phenotypes, difficulty
                                         knobs, and prompts/reference responses (both task levels)
  RealCases          train, validation   the same for phenopackets, case texts and JSONL cases,
                                         split by publication
  Trajectories       train               a RERS trajectory (rarejax.data.trajectory schema)

Build with `prepare(config, data_dir, kb)`; configs come from `<Config>.create(kb, ...)`.
Data lives in data_dir/<builder>/<config name>/<version>/.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import zlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from rarejax import cases as cases_lib
from rarejax import knowledge
from rarejax.cases.case import thaw
from rarejax.data import corpus
from rarejax.data import targets as targets_lib
from rarejax.data import trajectory as trajectory_lib
from rarejax.data.tf_setup import tf

import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order  (after tf_setup)

tfds.disable_progress_bar()

DATA_VERSION = "1.0.0"  # bump when the generated examples change
_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(tfds.core.BuilderConfig))
_SOURCE_SUFFIXES = (".json", ".txt", ".jsonl")


class KnowledgeMismatchError(ValueError):
  """A dataset was built from (or is asked for with) a different knowledge base version."""


class DataSourceError(ValueError):
  """A source file is missing, empty or unreadable; names the dataset and the file."""


def _short_hash(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def source_digest(path: str | os.PathLike) -> str:
  """sha256 prefix of a file, or of every case file (.json/.txt/.jsonl) under a directory."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"source not found: {path}")
  files = [path] if path.is_file() else sorted(
      p for p in path.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES)
  digest = hashlib.sha256()
  for file in files:
    digest.update(str(file.relative_to(path) if file != path else file.name).encode())
    digest.update(hashlib.sha256(file.read_bytes()).digest())
  return digest.hexdigest()[:16]


@dataclasses.dataclass(eq=False, kw_only=True)
class RarejaxConfig(tfds.core.BuilderConfig):
  """Parameters shared by every builder; create configs with `create`, never by hand."""
  kb_digest: str
  diseases: tuple[str, ...] = ()  # disease subset; () = every OMIM disease
  seed: int = 0

  def params(self) -> dict[str, Any]:
    """Every parameter beyond tfds' own fields, JSON-ready."""
    return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
            if f.name not in _BASE_FIELDS}

  @classmethod
  def create(cls, kb: knowledge.KnowledgeBase, **params) -> RarejaxConfig:
    """A config for `kb` named `<hash of params>-kb<knowledge digest>`."""
    if "diseases" in params:
      params["diseases"] = tuple(sorted(set(params["diseases"])))
    config = cls(name="unnamed", kb_digest=kb.version.digest, **params)
    spec = {k: v for k, v in config.params().items() if k != "kb_digest"}
    config.name = f"{_short_hash([cls.__name__, spec])}-kb{kb.version.digest}"
    config.description = (f"{cls.__name__} on knowledge {kb.version.digest} "
                          f"({len(config.diseases) or 'all'} diseases)")
    return config


def _jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(eq=False, kw_only=True)
class KnowledgeConfig(RarejaxConfig):
  findings_questions: int = 3  # findings → disease questions per disease


@dataclasses.dataclass(eq=False, kw_only=True)
class SimulatedConfig(RarejaxConfig):
  n_train: int = 10  # simulated patients per disease in 'train'
  n_validation: int = 2  # ... and in 'validation' (different draws; training-time checks)
  n_test: int = 0  # ... and in 'test' (different draws again; what the eval stage reports)
  simulator: cases_lib.SimulatorConfig = dataclasses.field(
      default_factory=cases_lib.SimulatorConfig)
  render: cases_lib.RenderConfig = dataclasses.field(default_factory=cases_lib.RenderConfig)
  n_ranked: int = 10  # entries of the reference differential
  reasoning: str = "full"  # reference reasoning style (targets.REASONING_STYLES)
  instruction: str = "full"  # prompt style (format.INSTRUCTION_STYLES)
  answer: str = "name_id"  # answer line style (targets.ANSWER_STYLES)


@dataclasses.dataclass(eq=False, kw_only=True)
class RealConfig(RarejaxConfig):
  phenopackets: tuple[str, ...] = ()  # .json files, directories or phenopacket-store zips
  texts: tuple[str, ...] = ()  # case-text files or directories
  jsonl: tuple[str, ...] = ()  # JSONL case files
  source_digests: tuple[str, ...] = ()  # filled by create: content hash of every source
  validation_fraction: float = 0.2  # of publications
  split_seed: int = 0
  # the inner split of the training publications (cases.development_split): its validation
  # publications are the 'validation' split, the outer validation cases are left out entirely
  inner_split: bool = False
  render: cases_lib.RenderConfig = dataclasses.field(default_factory=cases_lib.RenderConfig)
  n_ranked: int = 10
  reasoning: str = "full"
  instruction: str = "full"
  answer: str = "name_id"
  # Renderings of each structured 'train' case (no note of its own): the first with every finding,
  # each further one a new note (another renderer seed: style, wording, order) of the case with a
  # `mask_rate` fraction of its observed findings dropped (at least one kept). Cases with a
  # written note and 'validation' cases appear once, as they are.
  renderings: int = 1
  mask_rate: float = 0.0

  def __post_init__(self):
    if self.renderings < 1 or not 0 <= self.mask_rate < 1:
      raise ValueError(f"RealConfig needs renderings >= 1 and 0 <= mask_rate < 1, got "
                       f"{self.renderings}, {self.mask_rate}")

  @classmethod
  def create(cls, kb: knowledge.KnowledgeBase, **params) -> RealConfig:
    sources = [p for key in ("phenopackets", "texts", "jsonl") for p in params.get(key, ())]
    if not sources:
      raise ValueError("RealConfig needs at least one source (phenopackets, texts or jsonl)")
    for key in ("phenopackets", "texts", "jsonl"):
      params[key] = tuple(str(pathlib.Path(p).resolve()) for p in params.get(key, ()))
    params["source_digests"] = tuple(source_digest(p) for key in ("phenopackets", "texts", "jsonl")
                                     for p in params[key])
    return super().create(kb, **params)


@dataclasses.dataclass(eq=False, kw_only=True)
class TrajectoryConfig(RarejaxConfig):
  path: str = ""  # the RERS trajectory JSONL
  source_digest: str = ""  # filled by create

  @classmethod
  def create(cls, kb: knowledge.KnowledgeBase, **params) -> TrajectoryConfig:
    path = pathlib.Path(params.get("path", ""))
    if not path.is_file():
      raise FileNotFoundError(f"trajectories: file not found: {path}")
    params.update(path=str(path.resolve()), source_digest=source_digest(path))
    return super().create(kb, **params)


Rows = list[tuple[str, dict[str, Any]]]


class RarejaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Common machinery: knowledge checks, metadata, split generation from in-memory rows."""
  VERSION = tfds.core.Version(DATA_VERSION)
  RELEASE_NOTES = {DATA_VERSION: "First release."}
  FEATURES: dict[str, Any] = {}
  # Nothing is downloaded, so there is no checksums file next to the code; this also keeps tfds
  # 4.9.10 from importing `importlib_resources` (not installed) to locate one.
  code_path = None

  def __init__(self, *, config: RarejaxConfig, data_dir: str | os.PathLike,
               kb: knowledge.KnowledgeBase | None = None):
    if kb is not None and kb.version.digest != config.kb_digest:
      raise KnowledgeMismatchError(
          f"{self.name}/{config.name}: config is for knowledge {config.kb_digest}, but the "
          f"knowledge base given has digest {kb.version.digest}")
    self.kb = kb
    super().__init__(config=config, data_dir=os.fspath(data_dir))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=tfds.features.FeaturesDict(self.FEATURES),
                                 metadata=tfds.core.MetadataDict())

  @property
  def where(self) -> str:
    return f"{self.name}/{self.builder_config.name}"

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    if self.kb is None:
      raise ValueError(f"{self.where} is not built yet in {self.data_dir}; pass the knowledge "
                       "base (kb=...) to build it")
    splits = self._rows()
    if not splits.get("train"):
      raise DataSourceError(f"{self.where}: the train split would be empty")
    for split in [s for s, rows in splits.items() if not rows]:
      logging.warning("%s: split %r is empty and is not written", self.where, split)
      del splits[split]
    self.info.metadata.update(
        knowledge=self.kb.version.as_dict(), excluded_pmids=list(self.kb.version.excluded_pmids),
        config=self.builder_config.params(), **self._extra_metadata(splits))
    return {split: self._generate_examples(rows) for split, rows in splits.items()}

  def _generate_examples(self, rows: Rows) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from rows

  @abc.abstractmethod
  def _rows(self) -> dict[str, Rows]:
    """(key, example) rows of every split, generated from the knowledge base and sources."""

  def _extra_metadata(self, splits: dict[str, Rows]) -> dict[str, Any]:
    del splits
    return {}

  def check_knowledge(self) -> None:
    """Raises KnowledgeMismatchError unless the stored stamp matches the config's digest."""
    if not self.is_prepared():
      raise ValueError(f"{self.where} is not built in {self.data_dir_root}; build it first with "
                       "rarejax.data.builders.prepare(config, data_dir, kb)")
    stored = self.info.metadata.get("knowledge", {}).get("digest")
    if stored != self.builder_config.kb_digest:
      raise KnowledgeMismatchError(
          f"{self.where} at {self.data_dir} was built from knowledge {stored}, but knowledge "
          f"{self.builder_config.kb_digest} was requested; rebuild it or use the matching "
          "knowledge base")

  def dataset(self, split: str = "train", shuffle_files: bool = False,
              seed: int | None = None) -> tf.data.Dataset:
    """The split as a tf.data.Dataset of feature dicts, after the knowledge check."""
    self.check_knowledge()
    if split not in self.info.splits:
      raise ValueError(f"{self.where} has no split {split!r}; it has {list(self.info.splits)}")
    read_config = tfds.ReadConfig(shuffle_seed=seed) if seed is not None else None
    return self.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)


_TEXT = tfds.features.Text()
_TEXTS = tfds.features.Sequence(tfds.features.Text())


class KnowledgeCorpus(RarejaxBuilder, skip_registration=True):
  """Disease profile documents and knowledge QA pairs (rarejax.data.corpus)."""
  name = "rarejax_knowledge"
  FEATURES = {"id": _TEXT, "kind": _TEXT, "disease_id": _TEXT, "question": _TEXT,
              "answer": _TEXT}

  def _rows(self) -> dict[str, Rows]:
    config = self.builder_config
    diseases = config.diseases or tuple(self.kb.disease_ids("OMIM"))
    examples = corpus.knowledge_examples(self.kb, diseases, config.seed,
                                         config.findings_questions)
    return {"train": [(ex["id"], ex) for ex in examples]}


CASE_FEATURES = {
    "case_id": _TEXT, "note": _TEXT, "gold_ids": _TEXTS, "observed": _TEXTS, "excluded": _TEXTS,
    "age": np.float32,  # years; NaN when unknown
    "sex": _TEXT, "onset": _TEXT, "source": _TEXT, "pmid": _TEXT,
    "provenance": _TEXT,  # JSON: simulator/renderer knobs, seeds, source file...
    "n_noise": np.int32, "n_imprecise": np.int32,  # difficulty of simulated cases (0 if real)
    "prompt": _TEXT, "response": _TEXT,  # task level 'differential'
    "prompt_final": _TEXT, "response_final": _TEXT,  # task level 'final'
}


def case_row(case: cases_lib.Case, made: dict[str, str]) -> dict[str, Any]:
  """A Case and its prompts/responses as a CASE_FEATURES example."""
  provenance = thaw(case.provenance)
  return {
      "case_id": case.id, "note": case.note, "gold_ids": list(case.gold_ids),
      "observed": list(case.observed), "excluded": list(case.excluded),
      "age": math.nan if case.age is None else case.age, "sex": case.sex or "",
      "onset": case.onset or "", "source": case.source, "pmid": case.pmid or "",
      "provenance": json.dumps(provenance, sort_keys=True, ensure_ascii=False),
      "n_noise": len(provenance.get("noise", ())),
      "n_imprecise": len(provenance.get("imprecise", ())), **made}


def case_from_example(example: dict[str, Any], split: str = "train") -> cases_lib.Case:
  """A case dataset example (CASE_FEATURES, as Python values) as a Case: case_row's inverse."""
  age = example["age"]
  return cases_lib.Case(
      id=example["case_id"], note=example["note"], gold_ids=tuple(example["gold_ids"]),
      observed=tuple(example["observed"]), excluded=tuple(example["excluded"]),
      age=None if math.isnan(age) else age, sex=example["sex"] or None,
      onset=example["onset"] or None, source=example["source"], split=split,
      pmid=example["pmid"] or None, provenance=json.loads(example["provenance"]))


def _case_rows(kb: knowledge.KnowledgeBase, config: RarejaxConfig,
               cases: Sequence[cases_lib.Case]) -> Rows:
  """Rows for rendered cases, keyed by position (case ids may repeat across sources)."""
  maker = targets_lib.DiagnosisTargets(kb, config.diseases, config.n_ranked, config.seed,
                                       config.reasoning, config.instruction, config.answer)
  return [(f"{i:08d}", case_row(case, maker.example(case))) for i, case in enumerate(cases)]


class SimulatedCases(RarejaxBuilder, skip_registration=True):
  """Simulated patients with rendered notes, gold ids, difficulty knobs and reference responses."""
  name = "rarejax_simulated_cases"
  FEATURES = CASE_FEATURES

  def _rows(self) -> dict[str, Rows]:
    config = self.builder_config
    diseases = config.diseases or tuple(self.kb.disease_ids("OMIM"))
    simulator = cases_lib.PatientSimulator(self.kb, config.simulator)
    ends = np.cumsum([config.n_train, config.n_validation, config.n_test]).tolist()
    ranges = {"train": range(ends[0]), "validation": range(ends[0], ends[1])}
    if config.n_test:
      ranges["test"] = range(ends[1], ends[2])
    out = {}
    for split, indices in ranges.items():
      simulated = [simulator.simulate(d, config.seed, i) for d in diseases for i in indices]
      rendered = cases_lib.render_cases(simulated, self.kb, config.render, config.seed)
      out[split] = _case_rows(self.kb, config, [dataclasses.replace(c, split=split)
                                                for c in rendered])
    return out


class RealCases(RarejaxBuilder, skip_registration=True):
  """Real cases (phenopackets, case texts, JSONL) split by publication, notes rendered if absent."""
  name = "rarejax_real_cases"
  FEATURES = CASE_FEATURES

  def _read(self) -> list[cases_lib.Case]:
    config = self.builder_config
    readers: list[tuple[str, Callable]] = (
        [(p, lambda p: cases_lib.read_phenopackets(p, self.kb)) for p in config.phenopackets]
        + [(p, cases_lib.read_text_cases) for p in config.texts]
        + [(p, cases_lib.read_jsonl) for p in config.jsonl])
    out = []
    for path, reader in readers:
      try:
        read, report = reader(path)
      except (OSError, ValueError) as err:
        raise DataSourceError(f"{self.where}: cannot read {path}: {err}") from err
      if not read:
        raise DataSourceError(f"{self.where}: no readable case in {path}: {report.summary()}")
      if report.n_skipped:
        logging.warning("%s: %s: %s", self.where, path, report.summary())
      out.extend(read)
    return out

  def _rows(self) -> dict[str, Rows]:
    config = self.builder_config
    cases = self._read()
    if config.diseases:
      keep = set(config.diseases)
      cases = [c for c in cases if keep.intersection(c.gold_ids)]
    cases = [c for c in cases_lib.development_split(cases, config.validation_fraction,
                                                    config.split_seed, config.inner_split)
             if c.split != cases_lib.HELDOUT]
    train = [c for c in cases if c.split == "train"]
    rendered = {"train": [], "validation": cases_lib.render_cases(
        [c for c in cases if c.split == "validation"], self.kb, config.render, config.seed)}
    structured = [c for c in train if not c.note and c.observed]  # written notes stay as written
    for k in range(config.renderings):
      variants = (train if k == 0 else
                  [_masked(c, config.mask_rate, config.seed, k) for c in structured])
      rendered["train"] += cases_lib.render_cases(variants, self.kb, config.render, config.seed + k)
    return {split: _case_rows(self.kb, config, rows) for split, rows in rendered.items()}

  def _extra_metadata(self, splits: dict[str, Rows]) -> dict[str, Any]:
    """Whether every validation publication is excluded from the knowledge (honest protocol)."""
    pmids = {row["pmid"] for _, row in splits.get("validation", ()) if row["pmid"]}
    held_out = pmids <= set(self.kb.version.excluded_pmids)
    if pmids and not held_out:
      logging.warning("%s: %d validation publications are NOT excluded from the knowledge base; "
                      "validation scores will be optimistic", self.where,
                      len(pmids - set(self.kb.version.excluded_pmids)))
    return {"validation_pmids": sorted(pmids), "validation_pmids_excluded": held_out}


def _masked(case: cases_lib.Case, mask_rate: float, seed: int, k: int) -> cases_lib.Case:
  """The k-th re-rendering of a real case: its own id, no note, a `mask_rate` fraction of its
  observed findings dropped at random (at least one kept)."""
  rng = np.random.default_rng([seed, k, zlib.crc32(case.id.encode())])
  observed = case.observed
  n_drop = min(int(round(mask_rate * len(observed))), max(len(observed) - 1, 0))
  if n_drop:
    drop = set(rng.choice(len(observed), n_drop, replace=False).tolist())
    observed = tuple(h for i, h in enumerate(observed) if i not in drop)
  return dataclasses.replace(case, id=f"{case.id}~r{k}", note="", observed=observed)


class Trajectories(RarejaxBuilder, skip_registration=True):
  """RERS trajectories re-paired with their original prompts (rarejax.data.trajectory schema)."""
  name = "rarejax_trajectories"
  FEATURES = {"case_id": _TEXT, "prompt": _TEXT, "response": _TEXT, "gold_ids": _TEXTS,
              "task": _TEXT, "method": _TEXT, "teacher": _TEXT, "sample_index": np.int32,
              "reward": np.float32,  # NaN when not recorded
              "provenance": _TEXT}

  def _rows(self) -> dict[str, Rows]:
    path = self.builder_config.path
    try:
      trajectories = trajectory_lib.read_trajectories(path)
    except (OSError, trajectory_lib.TrajectoryFormatError) as err:
      raise DataSourceError(f"{self.where}: {err}") from err
    if not trajectories:
      raise DataSourceError(f"{self.where}: no trajectories in {path} (empty file)")
    rows = []
    for i, t in enumerate(trajectories):
      if t.kb_digest and t.kb_digest != self.builder_config.kb_digest:
        raise KnowledgeMismatchError(
            f"{self.where}: {path}:{i + 1} was written with knowledge {t.kb_digest}, not "
            f"{self.builder_config.kb_digest}")
      rows.append((f"{i:08d}", {
          "case_id": t.case_id, "prompt": t.prompt, "response": t.response,
          "gold_ids": list(t.gold_ids), "task": t.task, "method": t.method,
          "teacher": t.teacher, "sample_index": t.sample_index,
          "reward": math.nan if t.reward is None else t.reward,
          "provenance": json.dumps(thaw(t.provenance), sort_keys=True, ensure_ascii=False)}))
    return {"train": rows}


BUILDERS: dict[type[RarejaxConfig], type[RarejaxBuilder]] = {
    KnowledgeConfig: KnowledgeCorpus, SimulatedConfig: SimulatedCases, RealConfig: RealCases,
    TrajectoryConfig: Trajectories}


def builder_for(config: RarejaxConfig, data_dir: str | os.PathLike,
                kb: knowledge.KnowledgeBase | None = None) -> RarejaxBuilder:
  """The builder of a config (not prepared)."""
  return BUILDERS[type(config)](config=config, data_dir=data_dir, kb=kb)


def prepare(config: RarejaxConfig, data_dir: str | os.PathLike,
            kb: knowledge.KnowledgeBase | None = None) -> RarejaxBuilder:
  """Builds the dataset unless it exists (needs `kb` then), checks its knowledge stamp."""
  builder = builder_for(config, data_dir, kb)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  builder.check_knowledge()
  return builder


def examples(builder: RarejaxBuilder, split: str = "train") -> Iterator[dict[str, Any]]:
  """The split's examples as Python values (str for text, list[str] for text sequences)."""
  for example in tfds.as_numpy(builder.dataset(split)):
    yield {key: to_python(value) for key, value in example.items()}


def to_python(value: Any) -> Any:
  """A tf.data numpy value as Python: bytes → str, object arrays → list[str], scalars → items."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [v.decode("utf-8") for v in value]
  return value.item() if isinstance(value, np.generic) else value


TEXT_FIELDS = ("question", "answer", "note", "prompt", "response")


def texts(sources: Iterable[RarejaxBuilder], split: str = "train") -> Iterator[str]:
  """Every text field of the builders' examples, in a fixed order (tokenizer training corpus)."""
  for builder in sources:
    for example in examples(builder, split):
      yield from (example[f] for f in TEXT_FIELDS if example.get(f))
