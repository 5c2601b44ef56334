"""`rarejax diagnose`: a clinical note or phenopacket → ranked differential, reasoning and evidence.

  python -m rarejax diagnose --note "..."        # the released model (releases/, rarejax.release)
  python -m rarejax diagnose --checkpoint WORKDIR/sft/export --file note.txt
  echo "Tall; arachnodactyly; ectopia lentis." | python -m rarejax diagnose --checkpoint E --file -
  python -m rarejax diagnose --checkpoint EXPORT --note "..." --think_tokens 256 --json
  python -m rarejax diagnose --checkpoint EXPORT --phenopacket PMID_1_P1.json --out result.json
  python -m rarejax diagnose --checkpoint EXPORT --batch notes/ --out results.json

For each input the model (greedy by default) writes its reasoning and a ranked differential;
every entry is grounded to a disease id (rarejax.evaluate.model_method, the evaluation's
grounding), and the note's findings — HPO concepts recognized in the note, or a phenopacket's
structured phenotypes — are matched to each candidate's annotations (rarejax.evaluate.evidence):
which support it, which argue against it. rarejax's concept recognizer finds them, or FastHPOCR's
with --recognizer fasthpocr (the 'fasthpocr' extra).

Inputs: --note TEXT, --file PATH ('-' reads stdin), --phenopacket PATH (rendered to a note with
the knowledge base), or --batch DIR (every .txt note and .json phenopacket under it, one result
each; an unreadable file is reported and counted, the rest still run). Notes longer than
MAX_NOTE_CHARS are cut with a warning; a note longer than the model's cache is cut further
(warned too). --think_tokens N caps the reasoning at N tokens and still ends with an answer.

Output: a readable table on stdout, or the JSON document with --json; --out FILE writes the
JSON atomically. Exit codes: 0 all inputs diagnosed; 1 a batch ran but some inputs failed;
2 bad input or checkpoint (one line on stderr naming the input and the fix).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import textwrap
from typing import Any, Sequence

from rarejax import atomic_io
from rarejax import cases as cases_lib
from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import release
from rarejax import startup
from rarejax.evaluate import evidence
from rarejax.evaluate import generation
from rarejax.evaluate import model_method
from rarejax.phenotypes import concepts
from rarejax.phenotypes import fasthpocr
from rarejax.phenotypes import recognizers
from rarejax.train import checkpoint

MAX_NOTE_CHARS = 50_000
BATCH_SUFFIXES = (".txt", ".json")
SCHEMA = "rarejax.diagnose/1"
# A disease named by an id the knowledge has no name for (an open-domain answer, learned from
# cases: grader.ground_entry's 'unindexed_id').
UNNAMED = "(no name in this knowledge release)"
PROG = "rarejax diagnose"


class InputError(ValueError):
  """An input cannot be diagnosed; the message names it and says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Input:
  """One thing to diagnose: a note, or a structured case whose note is rendered later."""
  name: str  # where it came from: '--note', '<stdin>' or a path
  note: str = ""
  case: cases_lib.Case | None = None  # a phenopacket's case (structured phenotypes)
  warnings: tuple[str, ...] = ()


def note_input(text: str, name: str) -> Input:
  """A note checked for content and cut to MAX_NOTE_CHARS (with a warning)."""
  if not text.strip():
    raise InputError(f"{name}: the note is empty; give the clinical note text (history, "
                     "examination, findings)")
  warnings = ()
  if len(text) > MAX_NOTE_CHARS:
    warnings = (f"the note has {len(text):,} characters; only the first {MAX_NOTE_CHARS:,} are "
                "read",)
    text = text[:MAX_NOTE_CHARS]
  return Input(name, note=text, warnings=warnings)


def read_note_file(path: str) -> Input:
  """A note from a UTF-8 text file, or from stdin for '-'."""
  if path == "-":
    return note_input(sys.stdin.read(), "<stdin>")
  file = pathlib.Path(path)
  if not file.is_file():
    raise InputError(f"{path}: no such file; --file takes a UTF-8 text file with the note "
                     "('-' reads stdin)")
  try:
    text = file.read_bytes().decode("utf-8-sig")
  except UnicodeDecodeError as err:
    raise InputError(f"{path}: not UTF-8 text (byte {err.start}); save the note as UTF-8"
                     ) from None
  return note_input(text, path)


def read_phenopacket_file(path: str) -> Input:
  """A phenopacket checked by the shared reader (its note is rendered once knowledge is loaded)."""
  if not pathlib.Path(path).is_file():
    raise InputError(f"{path}: no such file; --phenopacket takes a GA4GH Phenopacket v2 JSON "
                     "file")
  try:
    case = cases_lib.read_phenopacket(path)
  except cases_lib.CaseFormatError as err:
    raise InputError(f"malformed phenopacket {err}; fix the file (GA4GH Phenopacket v2 JSON "
                     "with phenotypicFeatures and a diagnosis)") from None
  return Input(path, case=case)


def batch_files(folder: str) -> list[pathlib.Path]:
  """The .txt and .json files under `folder`, sorted."""
  root = pathlib.Path(folder)
  if not root.is_dir():
    raise InputError(f"{folder}: no such folder; --batch takes a folder of .txt notes and .json "
                     "phenopackets")
  files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in BATCH_SUFFIXES)
  if not files:
    raise InputError(f"{folder}: no .txt or .json files inside; put one note or phenopacket per "
                     "file there")
  return files


def read_inputs(args: argparse.Namespace) -> tuple[list[Input], list[dict[str, str]]]:
  """(inputs, failures); a single bad input raises InputError, a bad batch file is a failure."""
  if args.note is not None:
    return [note_input(args.note, "--note")], []
  if args.file is not None:
    return [read_note_file(args.file)], []
  if args.phenopacket is not None:
    return [read_phenopacket_file(args.phenopacket)], []
  inputs, failures = [], []
  for path in batch_files(args.batch):
    try:
      reader = read_phenopacket_file if path.suffix.lower() == ".json" else read_note_file
      inputs.append(reader(str(path)))
    except InputError as err:
      failures.append({"input": str(path), "error": str(err)})
  return inputs, failures


# ---- running the model --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resources:
  """What diagnosing needs besides the inputs, loaded once: knowledge, its indexes, the model."""
  kb: knowledge.KnowledgeBase
  index: knowledge.GroundingIndex
  recognizer: concepts.Recognizer
  finder: evidence.EvidenceFinder
  model: export_lib.LoadedModel


def load_resources(args: argparse.Namespace) -> Resources:
  """Knowledge (with --ordo/--mondo_sssom), grounding index, --recognizer, the export."""
  kb = knowledge.load_knowledge(ordo_path=args.ordo, mondo_sssom_paths=args.mondo_sssom)
  index = knowledge.GroundingIndex.from_knowledge(kb)
  return Resources(kb, index, recognizers.make_recognizer(args.recognizer, kb),
                   evidence.EvidenceFinder(kb, index.equivalence),
                   export_lib.load_model(args.checkpoint, args.vocabulary))


def make_method(args: argparse.Namespace, resources: Resources) -> model_method.ModelMethod:
  """The model with the decoding flags."""
  config = generation.GenerationConfig(max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature, seed=args.seed,
                                       think_tokens=args.think_tokens)
  return model_method.ModelMethod(resources.model, resources.index, config, top_k=args.top_k,
                                  batch_size=args.model_batch_size,
                                  max_cache_length=args.max_cache_length,
                                  prior_weight=args.prior_weight and args.prior_weight[0],
                                  hint_knowledge=resources.kb)


def _finding_json(finding: evidence.NoteFinding, kb: knowledge.KnowledgeBase) -> dict[str, str]:
  return {"hpo_id": finding.hpo_id, "label": kb.ontology.name(finding.hpo_id),
          "text": finding.text}


def _evidence_json(items: Sequence[evidence.Evidence]) -> list[dict[str, Any]]:
  return [{"hpo_id": e.hpo_id, "label": e.label, "text": e.text, "relation": e.relation,
           "annotated_id": e.annotated_id, "annotated_label": e.annotated_label,
           "frequency": e.frequency} for e in items]


def result_json(item: Input, note: str, findings: evidence.NoteFindings,
                diagnosis: model_method.Diagnosis, resources: Resources) -> dict[str, Any]:
  """The JSON result of one diagnosed input."""
  warnings = list(item.warnings)
  if diagnosis.note_cut:
    warnings.append("the note was cut at its end to fit the model's cache (--max_cache_length)")
  differential = []
  for rank, (entry, candidate) in enumerate(zip(diagnosis.ranked, diagnosis.candidates), 1):
    found = resources.finder.for_candidate(candidate.disease_id, findings)
    differential.append({
        "rank": rank, "disease_id": candidate.disease_id, "label": candidate.label,
        "score": candidate.score, "confidence": candidate.confidence,
        "written": entry.entry.raw_line.strip(), "grounding": entry.grounding.kind,
        "alternatives": list(candidate.alternatives),
        "supporting": _evidence_json(found.supporting),
        "contradicting": _evidence_json(found.contradicting)})
  parsed = diagnosis.parsed
  kb = resources.kb
  return {"input": item.name, "source": "phenopacket" if item.case else "note",
          "warnings": warnings, "note": note,
          "findings": {"observed": [_finding_json(f, kb) for f in findings.observed],
                       "excluded": [_finding_json(f, kb) for f in findings.excluded]},
          "differential": differential, "reasoning": parsed.reasoning,
          "answer_well_formed": parsed.well_formed, "format_problems": list(parsed.problems),
          "forced_answer": diagnosis.response.forced_answer, "response": diagnosis.response.text}


def diagnose_inputs(inputs: Sequence[Input], method: model_method.ModelMethod,
                    resources: Resources) -> list[dict[str, Any]]:
  """Renders phenopacket notes, runs the model on every note at once, gathers the evidence."""
  notes, findings = [], []
  for item in inputs:
    if item.case is not None:
      notes.append(cases_lib.render_note(item.case, resources.kb))
      findings.append(evidence.NoteFindings.structured(item.case.observed, item.case.excluded))
    else:
      notes.append(item.note)
      findings.append(evidence.NoteFindings.recognized(resources.recognizer.recognize(item.note)))
  diagnoses = method.diagnose(notes)
  return [result_json(i, n, f, d, resources)
          for i, n, f, d in zip(inputs, notes, findings, diagnoses)]


# ---- text output --------------------------------------------------------------------------


def _cut(text: str, width: int) -> str:
  return text if len(text) <= width else text[:width - 1] + "…"


def _support_cell(entry: dict) -> str:
  labels = [e["label"] for e in entry["supporting"]]
  against = len(entry["contradicting"])
  cell = ", ".join(labels[:3]) + (f" (+{len(labels) - 3})" if len(labels) > 3 else "")
  return (cell or "–") + (f"; against: {against}" if against else "")


def text_report(result: dict[str, Any]) -> str:
  """The readable form of one result."""
  lines = [f"== {result['input']} =="]
  lines += [f"warning: {w}" for w in result["warnings"]]
  observed = [f["label"] for f in result["findings"]["observed"]]
  excluded = [f["label"] for f in result["findings"]["excluded"]]
  lines.append(f"Findings ({len(observed)}): {', '.join(observed) or 'none recognized'}"
               + (f"; absent: {', '.join(excluded)}" if excluded else ""))
  if result["differential"]:
    lines.append(f"{'#':>2}  {'disease id':<14} {'score':>5} {'conf':>5}  {'disease':<44} "
                 "supporting findings")
    for entry in result["differential"]:
      conf = "" if entry["confidence"] is None else f"{entry['confidence']:.2f}"
      label = (entry["label"] or UNNAMED) if entry["disease_id"] else \
          f"(not grounded) {entry['written']}"
      lines.append(f"{entry['rank']:>2}  {entry['disease_id'] or '–':<14} {entry['score']:>5.3f} "
                   f"{conf:>5}  {_cut(label, 44):<44} {_support_cell(entry)}")
  else:
    problems = ", ".join(result["format_problems"]) or "no entries"
    lines.append(f"The model gave no differential ({problems}).")
  if result["forced_answer"]:
    lines.append("(the thinking budget ran out: the answer was forced)")
  lines.append("Reasoning:")
  reasoning = result["reasoning"].strip() or "(none)"
  lines += [textwrap.fill(p, 100, initial_indent="  ", subsequent_indent="  ")
            for p in reasoning.split("\n") if p.strip()]
  return "\n".join(lines)


# ---- the command --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split("\n\n", 1)[1])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--note", help="the clinical note text")
  source.add_argument("--file", help="a UTF-8 text file with the note ('-' reads stdin)")
  source.add_argument("--phenopacket", help="a GA4GH Phenopacket v2 JSON file")
  source.add_argument("--batch", help="a folder of .txt notes and .json phenopackets")
  model_method.add_model_flags(parser, checkpoint_required=False)
  parser.add_argument("--top_k", type=int, default=10, help="candidates in the differential")
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--recognizer", choices=concepts.RECOGNIZERS, default="rarejax",
                      help="HPO concept recognizer that finds the note's findings (the evidence "
                      "per candidate): rarejax's own, or FastHPOCR (the 'fasthpocr' extra)")
  parser.add_argument("--ordo", default=None, help="ORDO JSON (names, synonyms, xrefs)")
  parser.add_argument("--mondo_sssom", action="append", default=[],
                      help="MONDO exact-match SSSOM file (repeatable)")
  parser.add_argument("--json", action="store_true", help="print the JSON document")
  parser.add_argument("--out", default=None, help="also write the JSON document to this file")
  parser.add_argument("--verbose", action="store_true",
                      help="show the libraries' start-up messages (TensorFlow, XLA, absl, CUDA), "
                      "hidden by default (rarejax.startup)")
  return parser


def _error(message: str) -> int:
  print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
  return 2


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
  if args.top_k < 1 or args.model_batch_size < 1 or args.max_new_tokens < 1:
    parser.error("need --top_k, --model_batch_size and --max_new_tokens >= 1")
  if not 0 <= args.think_tokens < args.max_new_tokens:
    parser.error("need 0 <= --think_tokens < --max_new_tokens (the answer needs tokens too)")
  if args.prior_weight is not None and len(args.prior_weight) > 1:
    parser.error("`rarejax diagnose` takes one --prior_weight (a comma list is for evaluate)")


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  startup.configure(args.verbose)
  _check(args, parser)
  args.checkpoint = args.checkpoint or str(release.DEFAULT_RELEASE)
  if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")  # non-ASCII notes on any console
  try:
    metadata = export_lib.read_metadata(args.checkpoint)
    export_lib.vocabulary_path(args.checkpoint, metadata, args.vocabulary)
    model_method.check_prior(args.checkpoint, metadata, args.prior_weight)
    inputs, failures = read_inputs(args)
  except (InputError, FileNotFoundError, ValueError) as err:
    return _error(str(err))
  for failure in failures:
    print(f"{PROG}: skipped {failure['error']}", file=sys.stderr)
  if not inputs:
    return _error(f"{args.batch}: none of the {len(failures)} files could be read (see above)")
  try:
    resources = load_resources(args)
  except fasthpocr.MissingExtraError as err:
    return _error(str(err))
  except (FileNotFoundError, ValueError, checkpoint.CorruptCheckpointError) as err:
    return _error(f"{args.checkpoint}: {err}")
  method = make_method(args, resources)
  results = diagnose_inputs(inputs, method, resources)
  for result in results:
    for warning in result["warnings"]:
      print(f"{PROG}: warning: {result['input']}: {warning}", file=sys.stderr)
  doc = {"schema": SCHEMA, "checkpoint": str(args.checkpoint),
         "generation": dict(method.config["generation"]),
         "knowledge": resources.kb.version.as_dict(),
         "n_inputs": len(inputs) + len(failures), "n_failed": len(failures),
         "results": results, "errors": failures}
  text = json.dumps(doc, indent=2, ensure_ascii=False)
  if args.out:
    atomic_io.write_atomic(args.out, text + "\n")
  if args.json:
    print(text)
  else:
    print("\n\n".join(text_report(r) for r in results))
    if failures:
      print(f"\n{len(failures)} of {doc['n_inputs']} inputs failed:\n" +
            "\n".join(f"  {f['error']}" for f in failures))
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
