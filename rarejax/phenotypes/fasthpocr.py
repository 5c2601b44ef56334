"""FastHPOCR as a concept recognizer: its HPO index over the knowledge's hp.obo, rarejax's negation.

FastHPOCR (Groza et al., PyPI `fasthpocr`, the optional extra 'fasthpocr') matches HPO labels,
EXACT and RELATED synonyms and xref names of 'Phenotypic abnormality' terms through clusters of
morphologically equivalent tokens. It has no negation of its own, so every mention it finds
goes through rarejax's NegEx-style `concepts.NegationDetector` (the same cues and scopes as the
rarejax recognizer): `recognize` returns the same `Recognized` as `concepts.ConceptRecognizer`.

The index is built from the very hp.obo the knowledge base was read from (checked by digest),
once: it is cached under $RAREJAX_CACHE/fasthpocr (default ~/.cache/rarejax/fasthpocr), keyed by
the file's digest, the FastHPOCR version and the index options.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import pathlib
import shutil
import tempfile
import warnings

from rarejax import knowledge
from rarejax.knowledge import base as knowledge_base
from rarejax.knowledge import ontology as ontology_lib
from rarejax.phenotypes import concepts

EXTRA = "fasthpocr"
INDEX_FILE = "hp.index"  # the name FastHPOCR gives its HPO index


class MissingExtraError(ImportError):
  """FastHPOCR is not installed; the message names the extra that installs it."""


def require() -> str:
  """The installed FastHPOCR version.

  Raises:
    MissingExtraError: FastHPOCR is not installed.
  """
  try:
    return importlib.metadata.version("FastHPOCR")
  except importlib.metadata.PackageNotFoundError:
    raise MissingExtraError(
        f"the 'fasthpocr' recognizer needs FastHPOCR, which is not installed: install rarejax's "
        f"'{EXTRA}' extra (pip install -e '.[{EXTRA}]'), or use --recognizer rarejax") from None


@dataclasses.dataclass(frozen=True)
class FastHPOCRConfig:
  """FastHPOCR's index and matching options, and the reach of the negation cues.

  Attributes:
    acronyms: also index 3-letter all-caps synonyms ('ASD'; FastHPOCR's allow3LetterAcronyms).
    longest_match: drop a mention nested inside a longer one (FastHPOCR's longestMatch).
    negation_window: as `concepts.RecognizerConfig.negation_window`.
  """
  acronyms: bool = False
  longest_match: bool = True
  negation_window: int = concepts.RecognizerConfig.negation_window

  def index_config(self) -> dict[str, bool]:
    return {"allow3LetterAcronyms": self.acronyms}


def default_cache_dir() -> pathlib.Path:
  """$RAREJAX_CACHE/fasthpocr, or ~/.cache/rarejax/fasthpocr (beside the knowledge cache)."""
  return knowledge_base.default_cache_dir().parent / "fasthpocr"


def build_index(obo_path: str | os.PathLike, config: FastHPOCRConfig = FastHPOCRConfig(),
                cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The FastHPOCR index of `obo_path` (built once, then read from the cache).

  Raises:
    MissingExtraError: FastHPOCR is not installed.
    RuntimeError: FastHPOCR wrote no index (its own messages are in the error).
  """
  version = require()
  obo_path = pathlib.Path(obo_path)
  options = json.dumps(config.index_config(), sort_keys=True)
  key = hashlib.sha256(f"{knowledge_base.file_digest(obo_path)}|{version}|{options}".encode())
  index = pathlib.Path(cache_dir or default_cache_dir()) / key.hexdigest()[:20] / INDEX_FILE
  if index.is_file():
    return index
  from FastHPOCR.IndexHPO import IndexHPO  # pylint: disable=import-outside-toplevel
  logging.warning("building the FastHPOCR index of %s (once; cached in %s)", obo_path,
                  index.parent)
  index.parent.parent.mkdir(parents=True, exist_ok=True)
  work = pathlib.Path(tempfile.mkdtemp(dir=index.parent.parent, prefix=".build-"))
  try:
    indexer = IndexHPO(str(obo_path), str(work), indexConfig=config.index_config())
    indexer.crIndexKB.compileClusterList = _cluster_members()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
      # pronto guesses the encoding of the (UTF-8) obo with chardet and warns that it guessed.
      warnings.simplefilter("ignore", UnicodeWarning)
      indexer.index()
    if not (work / INDEX_FILE).is_file():
      raise RuntimeError(f"FastHPOCR wrote no index for {obo_path}: {printed.getvalue().strip()}")
    index.parent.mkdir(exist_ok=True)
    os.replace(work / INDEX_FILE, index)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return index


def _cluster_members():
  """FastHPOCR's `CRIndexKB.compileClusterList`, the same lists in the same order, in one pass.

  FastHPOCR 0.1.4 scans its whole 573k-token vocabulary once per cluster the index uses (tens
  of minutes for HPO); this scans it once and answers every cluster from a dictionary.
  """
  members: dict[str, list[str]] = {}

  def compile_cluster_list(cluster_id: str, base_clusters: dict[str, str]) -> list[str]:
    if not members:
      for token, cluster in base_clusters.items():
        members.setdefault(cluster, []).append(token)
    return list(members.get(cluster_id, ()))

  return compile_cluster_list


class FastHPOCRRecognizer:
  """FastHPOCR's mentions of 'Phenotypic abnormality' terms, negated by rarejax's cues.

  Ids are resolved to current terms of `ontology` (alt ids, replaced obsolete terms); a mention
  of a term outside 'Phenotypic abnormality' or unknown to `ontology` is dropped.
  """
  name = "fasthpocr"

  def __init__(self, index: str | os.PathLike, ontology: ontology_lib.Ontology,
               config: FastHPOCRConfig = FastHPOCRConfig()):
    require()
    from FastHPOCR.HPOAnnotator import HPOAnnotator  # pylint: disable=import-outside-toplevel
    self._annotator = HPOAnnotator(str(index))
    self.ontology = ontology
    self.config = config
    self._negation = concepts.NegationDetector(config.negation_window)

  @classmethod
  def from_knowledge(cls, kb: knowledge.KnowledgeBase,
                     config: FastHPOCRConfig = FastHPOCRConfig(),
                     obo_path: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None) -> FastHPOCRRecognizer:
    """A recognizer indexing the hp.obo `kb` was read from (default: the embedded release).

    Raises:
      MissingExtraError: FastHPOCR is not installed.
      ValueError: `obo_path` is not the hp.obo of `kb`.
    """
    require()
    obo_path = pathlib.Path(obo_path or knowledge.hpo_data_dir() / "hp.obo")
    expected = dict(kb.version.sources).get("hp.obo")
    if knowledge_base.file_digest(obo_path) != expected:
      raise ValueError(f"{obo_path} is not the hp.obo this knowledge base was read from "
                       f"(sha256 {expected}); pass the knowledge's own hp.obo as obo_path")
    return cls(build_index(obo_path, config, cache_dir), kb.ontology, config)

  def recognize(self, note: str) -> concepts.Recognized:
    """Mentions of phenotypic abnormalities in `note`, in note order, negation resolved."""
    found = []
    for annotation in self._annotator.annotate(note, longestMatch=self.config.longest_match):
      hpo_id = self.ontology.resolve(annotation.getHPOUri())
      if hpo_id and self.ontology.is_phenotype(hpo_id):
        found.append((annotation.getStartOffset(), annotation.getEndOffset(), hpo_id))
    found.sort()
    negated = self._negation.negated_chars(note, [(start, end) for start, end, _ in found])
    return concepts.Recognized.from_mentions([
        concepts.Mention(hpo_id, start, end, note[start:end], neg)
        for (start, end, hpo_id), neg in zip(found, negated)])
