"""Rare-disease knowledge: HPO ontology, disease annotations, exclusion by publication, grounding."""
from rarejax.knowledge.annotations import DEFAULT_FREQUENCY, Annotation, Disease, HpoaFormatError
from rarejax.knowledge.base import (KnowledgeBase, VersionStamp, hpo_data_dir, load_knowledge,
                                    normalize_pmids, pmids_digest, read_pmid_file)
from rarejax.knowledge.ontology import OboFormatError, Ontology, Synonym, Term
from rarejax.knowledge.sources import SourceFormatError
from rarejax.knowledge.grounding import GroundingIndex, GroundingResult, IdEquivalence
