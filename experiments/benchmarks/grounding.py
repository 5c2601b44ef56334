"""Benchmark of the grounding index: build time, lookup latency, and fuzzy-cutoff calibration.

Calibration: (a) one random letter edit in N disease labels — how often each cutoff recovers the
right disease; (b) labels of held-out diseases (removed from the index) — how often the fuzzy
matcher grounds them to some other disease anyway (an upper bound on false matches: a held-out
label may legitimately match a differently spelled twin of the same disease).

  .venv/bin/python experiments/benchmarks/grounding.py [--n 2000]
      [--sources ../shared/data/knowledge]
Writes experiments/benchmarks/results/grounding.json.
"""
import argparse
import json
import pathlib
import random
import string
import time

from rarejax import knowledge
from rarejax.data import format as format_lib
from rarejax.evaluate import grader
from rarejax.knowledge import grounding

CUTOFFS = (80, 85, 88, 90, 92, 95)
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "grounding.json"


def _typo(name: str, rng: random.Random) -> str:
  """One random edit (substitute, delete, insert, transpose) of a letter of `name`."""
  letters = [i for i, c in enumerate(name) if c.isalpha()]
  i = rng.choice(letters)
  op = rng.choice("sdit")
  if op == "s":
    return name[:i] + rng.choice(string.ascii_lowercase) + name[i + 1:]
  if op == "d":
    return name[:i] + name[i + 1:]
  if op == "i":
    return name[:i] + rng.choice(string.ascii_lowercase) + name[i:]
  j = min(i + 1, len(name) - 1)
  return name[:i] + name[j] + name[i] + name[j + 1:] if j > i else name


def _timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def _entries(kb, skip=frozenset()):
  return [(d.id, (d.name, *d.synonyms)) for d in kb.diseases.values() if d.id not in skip]


def _calibrate_typos(index, diseases, rng):
  """Per cutoff: fraction of one-edit labels grounded to the right disease / a wrong one."""
  right = {c: 0 for c in CUTOFFS}
  wrong = {c: 0 for c in CUTOFFS}
  fuzzy_seconds = []
  for disease in diseases:
    query = _typo(disease.name, rng)
    result, seconds = _timed(index.ground, query)
    if result.kind == "fuzzy":
      fuzzy_seconds.append(seconds)
    correct = any(index.equivalence.same(c, disease.id) for c in result.candidates)
    for cutoff in CUTOFFS:
      if result.kind == "exact" or (result.kind == "fuzzy" and result.score >= cutoff):
        right[cutoff] += correct
        wrong[cutoff] += not correct
  n = len(diseases)
  return ({c: right[c] / n for c in CUTOFFS}, {c: wrong[c] / n for c in CUTOFFS}, fuzzy_seconds)


def _calibrate_held_out(kb, held_out):
  """Per cutoff: fraction of held-out labels the fuzzy matcher grounds to another disease."""
  skip = frozenset(d.id for d in held_out)
  index = grounding.GroundingIndex(_entries(kb, skip), fuzzy_cutoff=0, cache_size=0)
  scores = []
  for disease in held_out:
    result = index.ground(disease.name)
    if result.kind == "fuzzy":
      scores.append(result.score)
  exact = sum(index.ground(d.name).kind == "exact" for d in held_out) / len(held_out)
  return {c: sum(s >= c for s in scores) / len(held_out) for c in CUTOFFS}, exact


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=2000, help="diseases sampled for calibration")
  parser.add_argument("--sources", type=pathlib.Path, default=None,
                      help="folder with ORDO JSON and MONDO SSSOM files (optional)")
  args = parser.parse_args()
  kb = knowledge.load_knowledge()
  report = {"n_diseases": len(kb.diseases)}
  if args.sources:
    enriched = knowledge.load_knowledge(
        ordo_path=args.sources / "ordo-2018-07-12.json.gz",
        mondo_sssom_paths=[args.sources / "mondo_exactmatch_omim.sssom.tsv",
                           args.sources / "mondo_exactmatch_orphanet.sssom.tsv"])
    _, seconds = _timed(grounding.GroundingIndex.from_knowledge, enriched)
    report["build_s_with_sources"] = seconds
  index, seconds = _timed(lambda: grounding.GroundingIndex.from_knowledge(kb, cache_size=0))
  report["build_s"] = seconds
  rng = random.Random(0)
  diseases = rng.sample(sorted(kb.diseases.values(), key=lambda d: d.id), args.n)
  _, seconds = _timed(lambda: [index.ground(d.name) for d in diseases])
  report["exact_lookup_ms"] = 1000 * seconds / len(diseases)
  responses = [format_lib.format_response("r", [(d.name, None) for d in diseases[i:i + 10]])
               for i in range(0, len(diseases), 10)]
  _, seconds = _timed(lambda: [grader.grade(r, ["OMIM:154700"], index) for r in responses])
  report["grade_10_names_ms"] = 1000 * seconds / len(responses)
  # The calibration index uses cutoff 0 so that every best fuzzy score is seen once.
  calibration = grounding.GroundingIndex.from_knowledge(kb, fuzzy_cutoff=0, cache_size=0)
  right, wrong, fuzzy_seconds = _calibrate_typos(calibration, diseases, rng)
  report["fuzzy_lookup_ms_mean"] = 1000 * sum(fuzzy_seconds) / max(1, len(fuzzy_seconds))
  report["fuzzy_lookup_ms_max"] = 1000 * max(fuzzy_seconds, default=0.0)
  report["typo_right"], report["typo_wrong"] = right, wrong
  held_out = diseases[: args.n // 4]
  report["held_out_fuzzy_match"], report["held_out_exact_twin"] = _calibrate_held_out(kb, held_out)
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(report, indent=2) + "\n")
  print(f"diseases {report['n_diseases']}  build {report['build_s']:.2f}s"
        + (f"  (with ORDO+MONDO {report['build_s_with_sources']:.2f}s)" if args.sources else ""))
  print(f"exact lookup {report['exact_lookup_ms']:.3f} ms   fuzzy lookup mean "
        f"{report['fuzzy_lookup_ms_mean']:.2f} ms, max {report['fuzzy_lookup_ms_max']:.2f} ms")
  print(f"grade a 10-entry answer (names only, uncached): {report['grade_10_names_ms']:.2f} ms")
  print(f"held-out labels with an exact twin: {report['held_out_exact_twin']:.3f}")
  print("cutoff  typo→right  typo→wrong  held-out→fuzzy match")
  for c in CUTOFFS:
    print(f"{c:6d}  {right[c]:10.3f}  {wrong[c]:10.3f}  {report['held_out_fuzzy_match'][c]:10.3f}")


if __name__ == "__main__":
  main()
