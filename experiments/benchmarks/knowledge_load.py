"""Benchmark: cold and cached load time of the knowledge base, each in a fresh Python process.

Targets (issue #2): cold ≤ 10 s, cached ≤ 1 s on the 2-core machine. Writes
experiments/benchmarks/results/knowledge_load.json. Reproduce:
  .venv/bin/python experiments/benchmarks/knowledge_load.py [--repeats 3] [--shared ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from rarejax import knowledge
t1 = time.perf_counter()
kwargs = json.loads(sys.argv[1])
kb = knowledge.load_knowledge(**kwargs)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "n_diseases": len(kb.diseases),
                  "n_terms": len(kb.ontology), "digest": kb.version.digest}))
"""


def _run(kwargs: dict) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(kwargs)], check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _measure(kwargs: dict, repeats: int) -> dict:
  with tempfile.TemporaryDirectory() as cache:
    cold = [_run({**kwargs, "cache_dir": cache, "use_cache": False}) for _ in range(repeats)]
    _run({**kwargs, "cache_dir": cache})  # writes the cache
    cached = [_run({**kwargs, "cache_dir": cache}) for _ in range(repeats)]
  return {"cold_load_s": statistics.median(r["load_s"] for r in cold),
          "cached_load_s": statistics.median(r["load_s"] for r in cached),
          "import_s": statistics.median(r["import_s"] for r in cached),
          "n_diseases": cold[0]["n_diseases"], "n_terms": cold[0]["n_terms"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--shared", default=str(pathlib.Path(__file__).parents[3] / "shared" / "data"))
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
  args = parser.parse_args()
  results = {"hpo_only": _measure({}, args.repeats)}
  knowledge_dir = pathlib.Path(args.shared) / "knowledge"
  if knowledge_dir.is_dir():
    results["hpo_ordo_mondo"] = _measure({
        "ordo_path": str(knowledge_dir / "ordo-2018-07-12.json.gz"),
        "mondo_sssom_paths": [str(knowledge_dir / "mondo_exactmatch_omim.sssom.tsv"),
                              str(knowledge_dir / "mondo_exactmatch_orphanet.sssom.tsv")]},
        args.repeats)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "knowledge_load.json").write_text(json.dumps(results, indent=2))
  print(f"{'sources':<16}{'cold s':>8}{'cached s':>10}{'import s':>10}")
  for name, r in results.items():
    print(f"{name:<16}{r['cold_load_s']:>8.2f}{r['cached_load_s']:>10.2f}{r['import_s']:>10.2f}")


if __name__ == "__main__":
  main()
