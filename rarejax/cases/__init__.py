"""Cases: the one Case type, readers (phenopackets, text, JSONL), patient simulator and note renderer."""
from rarejax.cases.case import HELDOUT, Case, CaseFormatError, FrozenMap, ReadReport
from rarejax.cases.jsonl import parse_jsonl_line, read_jsonl, write_jsonl
from rarejax.cases.phenopacket import (PhenopacketParser, parse_phenopacket, read_phenopacket,
                                       read_phenopackets)
from rarejax.cases.render import (DEFAULT_STYLES, NEGATION_CUES, STYLES, RenderConfig, forbidden_names,
                                  leaks, render_cases, render_note)
from rarejax.cases.simulate import PatientSimulator, SimulatorConfig
from rarejax.cases.split import (INNER_SEED_OFFSET, development_split, pmids, publication_of,
                                 split_by_publication)
from rarejax.cases.text import parse_text_cases, read_text_cases, read_text_file
