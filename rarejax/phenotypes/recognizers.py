"""Either concept recognizer by name: rarejax's own or FastHPOCR with rarejax's negation.

`make_recognizer` lives apart from both recognizers' modules: rarejax.phenotypes.fasthpocr builds on
rarejax.phenotypes.concepts (its negation and mention types), so concepts must not import it back.
"""
from __future__ import annotations

from rarejax import knowledge
from rarejax.phenotypes import concepts
from rarejax.phenotypes import fasthpocr


def make_recognizer(name: str, kb: knowledge.KnowledgeBase,
                    related: bool = False) -> concepts.Recognizer:
  """The recognizer `name` (one of concepts.RECOGNIZERS) over the knowledge base's ontology.

  Args:
    name: 'rarejax' (rarejax.phenotypes.concepts) or 'fasthpocr' (needs the 'fasthpocr' extra).
    kb: the knowledge base whose ontology (and, for FastHPOCR, hp.obo) is indexed.
    related: the rarejax recognizer also matches RELATED synonyms (FastHPOCR always does).

  Raises:
    ValueError: unknown name, or `related` with FastHPOCR.
    fasthpocr.MissingExtraError: FastHPOCR is not installed.
  """
  if name == "rarejax":
    return concepts.ConceptRecognizer.from_knowledge(kb,
                                                     concepts.RecognizerConfig(related=related))
  if name == "fasthpocr":
    if related:
      raise ValueError("related synonyms are an option of the rarejax recognizer (FastHPOCR "
                       "always indexes RELATED synonyms)")
    return fasthpocr.FastHPOCRRecognizer.from_knowledge(kb)
  raise ValueError(f"unknown recognizer {name!r}; choose one of {concepts.RECOGNIZERS}")
