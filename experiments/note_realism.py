"""How far rendered notes are from oracle terms, per note style: text-vs-oracle gap, recognition.

A rendered note that writes every finding as its HPO label makes the text pipeline (concept
recognizer → classical ranker) equal to the oracle pipeline (the case's own HPO terms); on real
narrative notes text mode loses a lot. For every renderer style (rarejax.cases.render.STYLES) this
renders the same held-out cases in that style alone and reports:
  rankers      top-1/top-10 of Resnik and the likelihood-ratio ranker in text mode (the note read
               by rarejax's concept recognizer) and oracle mode (the case's terms), and the gap
               (oracle − text);
  recognition  precision/recall of the observed HPO ids recognized in the note against the case's
               observed terms, exact and tolerant (concepts.RecognitionScore), and the share of
               its excluded terms recognized as negated;
on two case sets:
  simulated    patients of --n_diseases OMIM diseases drawn with --seed from the embedded
               knowledge (the knowledge they are drawn from ranks them);
  phenopackets --n_phenopackets real cases drawn with --seed from phenopacket-store (when the zip
               is present), ranked with knowledge excluding every benchmark publication
               (--exclude_pmids) and the cases' own.
Beside them: the 48 narrative case texts' numbers from experiments/results/recognizers (read, not
recomputed). Writes <out>/note_realism.json and .md with the command, seed and versions.
Reproduce (repository root; ~10 min on 2 busy cores):
  nice -n 19 .venv/bin/python experiments/note_realism.py
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time
import zipfile
from typing import Any, Sequence

import numpy as np

from rarejax import knowledge
from rarejax.cases import (STYLES, Case, PatientSimulator, RenderConfig, pmids, read_phenopackets,
                           render_cases)
from rarejax.evaluate import benchmarks as benchmarks_lib
from rarejax.evaluate import methods as methods_lib
from rarejax.knowledge import grounding
from rarejax.phenotypes import concepts

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RANKERS = ("resnik", "likelihood_ratio")


def _texts_script():
  """experiments/recognizers_texts.py (its versions and rank summary are this script's too)."""
  spec = importlib.util.spec_from_file_location(
      "recognizers_texts", pathlib.Path(__file__).with_name("recognizers_texts.py"))
  module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


texts_lib = _texts_script()


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n_diseases", type=int, default=150)
  parser.add_argument("--n_phenopackets", type=int, default=150)
  parser.add_argument("--seed", type=int, default=2207)
  parser.add_argument("--styles", default=",".join(STYLES))
  parser.add_argument("--phenopackets",
                      default=str(DATA / "phenopacket-store" / "phenopacket-store-dev.zip"))
  parser.add_argument("--exclude_pmids",
                      default=str(DATA / "phenopacket-store" / "benchmark_pmids.txt"))
  parser.add_argument("--texts_results", default=str(
      ROOT / "experiments" / "results" / "recognizers" / "recognizers_texts.json"))
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "note_realism"))
  return parser.parse_args(argv)


def simulated_cases(kb: knowledge.KnowledgeBase, n_diseases: int, seed: int) -> list[Case]:
  """One simulated patient of each of `n_diseases` OMIM diseases drawn with `seed`."""
  diseases = benchmarks_lib.choose_diseases(kb, n_diseases, seed)
  return PatientSimulator(kb).simulate_many(diseases, 1, seed)


def phenopacket_sample(zip_path: str, n: int, seed: int, kb: knowledge.KnowledgeBase
                       ) -> list[Case]:
  """`n` phenopackets drawn with `seed` from a phenopacket-store zip (only they are read)."""
  with zipfile.ZipFile(zip_path) as store, tempfile.TemporaryDirectory() as tmp:
    members = sorted(m for m in store.namelist() if m.endswith(".json"))
    chosen = np.random.default_rng(seed).choice(len(members), min(n, len(members)), replace=False)
    store.extractall(tmp, [members[i] for i in sorted(chosen)])
    cases, _ = read_phenopackets(tmp, kb=kb)
  return [c for c in cases if c.observed]


def recognition(notes: Sequence[Case], recognizer: concepts.Recognizer,
                ontology) -> dict[str, Any]:
  """Recognized observed ids against the cases' observed terms; excluded terms found negated."""
  score = concepts.RecognitionScore()
  negated = n_excluded = 0
  for case in notes:
    found = recognizer.recognize(case.note)
    score.add(found.observed, case.observed, ontology)
    excluded = {ontology.resolve(h) for h in case.excluded} - {None}
    negated += len(excluded & set(found.excluded))
    n_excluded += len(excluded)
  return {**score.as_dict(), "excluded_found_negated": negated / n_excluded if n_excluded else None,
          "n_excluded": n_excluded}


def _without_ranks(summary: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in summary.items() if k != "ranks"}


def _compare(text: dict[str, Any], oracle: dict[str, Any]) -> dict[str, Any]:
  """Text and oracle summaries (without per-case ranks) and the gap, oracle − text."""
  return {"text": _without_ranks(text), "oracle": _without_ranks(oracle),
          "gap_top1": oracle["top1"] - text["top1"], "gap_top10": oracle["top10"] - text["top10"]}


def case_set(name: str, cases: Sequence[Case], kb_render: knowledge.KnowledgeBase,
             kb_rank: knowledge.KnowledgeBase, styles: Sequence[str], seed: int
             ) -> dict[str, Any]:
  """Rankers in oracle mode once, then per style: the notes, their recognition and text ranks."""
  recognizer = concepts.ConceptRecognizer.from_knowledge(kb_rank)
  equivalence = grounding.IdEquivalence({d.id: d.xrefs for d in kb_render.diseases.values()})
  methods = methods_lib.classical_methods(kb_rank, RANKERS, methods_lib.MODES,
                                          recognizer=recognizer)
  rank_summary = texts_lib.rank_summary

  def summaries(mode: str, some: Sequence[Case]) -> dict[str, Any]:
    return {m.ranker.name: rank_summary(m, some, equivalence) for m in methods
            if m.reader.mode == mode}

  oracle = summaries("oracle", cases)
  out = {"n_cases": len(cases), "styles": {}}
  for style in styles:
    start = time.process_time()
    notes = render_cases(cases, kb_render, RenderConfig(styles=(style,)), seed)
    text = summaries("text", notes)
    out["styles"][style] = {
        "recognition": recognition(notes, recognizer, kb_rank.ontology),
        "rankers": {r: _compare(text[r], oracle[r]) for r in RANKERS},
        "cpu_seconds": time.process_time() - start,
        "example_note": notes[0].note}
    print(f"{name} {style}: {out['styles'][style]['rankers']['resnik']}", flush=True)
  return out


def narrative_texts(path: str) -> dict[str, Any] | None:
  """The narrative texts' text-vs-oracle numbers (rarejax recognizer), when the file exists."""
  if not pathlib.Path(path).is_file():
    return None
  doc = json.loads(pathlib.Path(path).read_text())
  entry, oracle = doc["recognizers"]["rarejax"], doc["oracle"]
  rankers = {r: _compare(entry["rankers"][f"{r}.text"], oracle[f"{r}.oracle"]) for r in RANKERS}
  return {"source": path, "command": doc["command"], "n_cases": doc["texts"]["n_cases"],
          "n_with_phenopackets": doc["texts"]["n_with_phenopackets"],
          "recognition": entry["extraction"], "rankers": rankers}


def run(args: argparse.Namespace) -> dict[str, Any]:
  styles = [s.strip() for s in args.styles.split(",") if s.strip()]
  kb = knowledge.load_knowledge()
  doc: dict[str, Any] = {
      "command": " ".join(["nice -n 19", os.path.relpath(sys.executable, ROOT), *sys.argv]),
      "seed": args.seed, "versions": texts_lib.versions(),
      "knowledge": kb.version.as_dict(), "load_average_1min_at_start": os.getloadavg()[0],
      "sets": {}}
  doc["sets"]["simulated"] = case_set("simulated", simulated_cases(kb, args.n_diseases, args.seed),
                                      kb, kb, styles, args.seed)
  if pathlib.Path(args.phenopackets).is_file():
    cases = phenopacket_sample(args.phenopackets, args.n_phenopackets, args.seed, kb)
    exclude = [*pmids(cases), *(knowledge.read_pmid_file(args.exclude_pmids)
                                if pathlib.Path(args.exclude_pmids).is_file() else ())]
    honest = knowledge.load_knowledge(exclude_pmids=exclude)
    doc["sets"]["phenopackets"] = case_set("phenopackets", cases, kb, honest, styles, args.seed)
    doc["sets"]["phenopackets"]["n_excluded_pmids"] = honest.version.as_dict()["n_excluded_pmids"]
  else:
    print(f"phenopacket-store not found, skipped: {args.phenopackets}", flush=True)
  doc["narrative_texts"] = narrative_texts(args.texts_results)
  doc["load_average_1min_at_end"] = os.getloadavg()[0]
  return doc


def _pair(entry: dict[str, Any], key: str) -> str:
  return f"{entry['text'][key]:.3f} / {entry['oracle'][key]:.3f}"


def _row(label: str, n: int, recog: dict[str, Any], rankers: dict[str, Any]) -> str:
  cells = [label, str(n), f"{recog['precision_exact']:.3f} / {recog['recall_exact']:.3f}",
           f"{recog['precision_tolerant']:.3f} / {recog['recall_tolerant']:.3f}"]
  for r in RANKERS:
    entry = rankers[r]
    cells += [_pair(entry, "top1"), _pair(entry, "top10"),
              f"{entry['gap_top1']:+.3f} / {entry['gap_top10']:+.3f}"]
  return "| " + " | ".join(cells) + " |"


def markdown(doc: dict[str, Any]) -> str:
  """One table: a row per (case set, style), the narrative texts last."""
  lines = [
      "# Rendered notes against oracle terms, per note style", "",
      "Text mode reads the note with rarejax's concept recognizer; oracle mode reads the case's "
      "own HPO terms. Gap = oracle − text (top-1 / top-10). Recognition: observed ids against "
      "the case's observed terms.", "",
      "| cases, style | n | recognizer P / R exact | P / R tolerant | Resnik top-1 text / oracle | "
      "Resnik top-10 text / oracle | Resnik gap top-1 / top-10 | LR top-1 text / oracle | "
      "LR top-10 text / oracle | LR gap top-1 / top-10 |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, entry in doc["sets"].items():
    for style, result in entry["styles"].items():
      lines.append(_row(f"{name}, {style}", entry["n_cases"], result["recognition"],
                        result["rankers"]))
  texts = doc["narrative_texts"]
  if texts:
    lines.append(_row("48 narrative texts (experiments/results/recognizers)", texts["n_cases"],
                      texts["recognition"], texts["rankers"]))
  lines += ["", "Excluded terms recognized as negated: " + ", ".join(
      f"{name}/{style} {r['recognition']['excluded_found_negated']:.3f}"
      for name, entry in doc["sets"].items() for style, r in entry["styles"].items()), ""]
  if "phenopackets" in doc["sets"]:
    lines += [f"Phenopackets: ranked with knowledge excluding "
              f"{doc['sets']['phenopackets']['n_excluded_pmids']} publications (every benchmark "
              "publication and the cases' own).", ""]
  if texts:
    lines += [f"Narrative texts: {texts['n_cases']} cases in text mode, the "
              f"{texts['n_with_phenopackets']} with phenopackets in oracle mode; recognition "
              "against the union of those phenopackets' terms; from `" + texts["command"] + "`.",
              ""]
  lines += texts_lib.provenance_lines(doc)[1:]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  args = _args(argv)
  texts_lib.write_outputs(run(args), args.out, "note_realism", markdown)
  return 0


if __name__ == "__main__":
  sys.exit(main())
