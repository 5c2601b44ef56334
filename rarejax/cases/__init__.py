"""Cases: the one Case type, readers (phenopackets, text, JSONL), patient simulator and note renderer."""
