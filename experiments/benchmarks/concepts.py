"""Benchmark of HPO concept recognition on rendered notes: recall/precision against the structured
phenotypes the notes were written from (observed and excluded, exact and ancestor-tolerant), and speed.

Notes are rendered by rarejax.cases.render_note from simulated patients of `--n_diseases` OMIM
diseases (one patient each, fixed seed), with the default RenderConfig (30% exact synonyms, 15%
layperson synonyms) and a harder one (all synonyms/layperson where HPO has them).

The renderer writes HPO's own labels and synonyms, so these numbers are an upper bound for the
recognizer (they test matching, normalization and negation, not paraphrase). When the narrative
case texts are present (../shared/data/case-texts/dev) their speed and mention counts are
reported too (they have no gold HPO ids).

  .venv/bin/python experiments/benchmarks/concepts.py [--n_diseases 500] [--seed 0]
Writes experiments/benchmarks/results/concepts.json.
"""
import argparse
import json
import pathlib
import statistics
import time

import numpy as np

from rarejax import knowledge
from rarejax.cases import PatientSimulator, RenderConfig, read_text_cases, render_note
from rarejax.phenotypes import concepts

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "concepts.json"
CASE_TEXTS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "case-texts" / "dev"
RENDERINGS = {"default": RenderConfig(), "hard": RenderConfig(synonym_rate=0.5, layperson_rate=0.5)}


def _evaluate(recognizer, kb, cases, render_config, seed):
  notes = [render_note(c, kb, render_config, seed) for c in cases]
  observed, excluded = concepts.RecognitionScore(), concepts.RecognitionScore()
  times = []
  for case, note in zip(cases, notes):
    start = time.perf_counter()
    found = recognizer.recognize(note)
    times.append(time.perf_counter() - start)
    observed.add(found.observed, case.observed, kb.ontology)
    excluded.add(found.excluded, case.excluded, kb.ontology)
  return {"observed": observed.as_dict(), "excluded": excluded.as_dict(),
          "ms_per_note_median": 1e3 * statistics.median(times),
          "ms_per_note_p95": 1e3 * float(np.quantile(times, 0.95)),
          "chars_per_note_median": statistics.median(map(len, notes))}


def _real_texts(recognizer):
  """Speed and mention counts on the narrative case texts (no gold ids to score against)."""
  cases, _ = read_text_cases(CASE_TEXTS)
  times, counts = [], []
  for case in cases:
    start = time.perf_counter()
    found = recognizer.recognize(case.note)
    times.append(time.perf_counter() - start)
    counts.append((len(found.observed), len(found.excluded)))
  return {"n_notes": len(cases), "chars_per_note_median": statistics.median(len(c.note) for c in cases),
          "ms_per_note_median": 1e3 * statistics.median(times),
          "ms_per_note_max": 1e3 * max(times),
          "observed_per_note_median": statistics.median(c[0] for c in counts),
          "excluded_per_note_median": statistics.median(c[1] for c in counts)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n_diseases", type=int, default=500)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  kb = knowledge.load_knowledge()
  diseases = kb.disease_ids("OMIM")
  rng = np.random.default_rng(args.seed)
  chosen = [diseases[i] for i in sorted(rng.choice(len(diseases), args.n_diseases, replace=False))]
  cases = PatientSimulator(kb).simulate_many(chosen, 1, args.seed)
  out = {"n_notes": len(cases), "seed": args.seed, "knowledge": kb.version.as_dict(), "runs": {}}
  for related in (False, True):
    start = time.perf_counter()
    recognizer = concepts.ConceptRecognizer.from_knowledge(
        kb, concepts.RecognizerConfig(related=related))
    build = time.perf_counter() - start
    for name, render_config in RENDERINGS.items():
      key = f"{name}/related={related}"
      out["runs"][key] = {"build_seconds": build, "n_phrases": recognizer.n_phrases,
                          **_evaluate(recognizer, kb, cases, render_config, args.seed)}
    if CASE_TEXTS.exists():
      out["runs"][f"case_texts/related={related}"] = _real_texts(recognizer)
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2))
  print("| notes | related | obs P/R exact | obs P/R tolerant | exc P/R exact | exc P/R tolerant "
        "| ms/note (median, p95) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for key, run in out["runs"].items():
    if key.startswith("case_texts"):
      print(f"case texts ({key}): {json.dumps(run)}")
      continue
    o, e = run["observed"], run["excluded"]
    name, related = key.split("/")
    print(f"| {name} | {related.split('=')[1]} | {o['precision_exact']:.3f}/{o['recall_exact']:.3f} "
          f"| {o['precision_tolerant']:.3f}/{o['recall_tolerant']:.3f} "
          f"| {e['precision_exact']:.3f}/{e['recall_exact']:.3f} "
          f"| {e['precision_tolerant']:.3f}/{e['recall_tolerant']:.3f} "
          f"| {run['ms_per_note_median']:.2f}, {run['ms_per_note_p95']:.2f} |")


if __name__ == "__main__":
  main()
