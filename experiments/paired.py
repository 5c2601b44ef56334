"""Paired comparison of two methods on the same cases, from a report's per-case gold ranks.

  .venv/bin/python experiments/paired.py experiments/results/full/sft750_dev_protocol/ranks.tsv \
      --a model.text --b rrf.text --benchmark phenopackets_validation

ranks.tsv has one row per (benchmark, case, method) with the gold rank (empty: not in the list),
as cut from a report's cases.tsv. Prints, for top-1 and top-10: each method's accuracy, the
cases only A or only B gets right, and the paired bootstrap of the difference A - B (mean and
95% interval over resampled cases, and how often A is ahead).
"""
import argparse
import csv
import sys

import numpy as np


def read_ranks(path: str, benchmark: str, method: str) -> dict[str, float]:
  """{case_id: gold rank, inf when absent} of one method on one benchmark."""
  out = {}
  with open(path, newline="") as f:
    for row in csv.DictReader(f, delimiter="\t"):
      if row["benchmark"] == benchmark and row["method"] == method:
        out[row["case_id"]] = float(row["gold_rank"]) if row["gold_rank"] else np.inf
  if not out:
    raise SystemExit(f"{path}: no rows for method {method!r} on benchmark {benchmark!r}")
  return out


def compare(a: np.ndarray, b: np.ndarray, k: int, n_bootstrap: int, seed: int) -> dict:
  hit_a, hit_b = (a <= k).astype(float), (b <= k).astype(float)
  diff = hit_a - hit_b
  rng = np.random.default_rng(seed)
  samples = diff[rng.integers(0, len(diff), size=(n_bootstrap, len(diff)))].mean(axis=1)
  return {"a": hit_a.mean(), "b": hit_b.mean(), "only_a": int((diff > 0).sum()),
          "only_b": int((diff < 0).sum()), "diff": diff.mean(),
          "low": np.percentile(samples, 2.5), "high": np.percentile(samples, 97.5),
          "a_ahead": float((samples > 0).mean())}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("ranks")
  parser.add_argument("--a", required=True)
  parser.add_argument("--b", required=True)
  parser.add_argument("--benchmark", default="phenopackets_validation")
  parser.add_argument("--n_bootstrap", type=int, default=10000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  a, b = (read_ranks(args.ranks, args.benchmark, m) for m in (args.a, args.b))
  cases = sorted(set(a) & set(b))
  ranks_a = np.array([a[c] for c in cases])
  ranks_b = np.array([b[c] for c in cases])
  print(f"{args.benchmark}: {len(cases)} cases, A = {args.a}, B = {args.b}")
  for k in (1, 10):
    r = compare(ranks_a, ranks_b, k, args.n_bootstrap, args.seed)
    print(f"top-{k}: A {r['a']:.3f}  B {r['b']:.3f}  only A {r['only_a']}  only B {r['only_b']}  "
          f"A-B {r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]  A ahead in "
          f"{100 * r['a_ahead']:.1f}% of resamples")
  return 0


if __name__ == "__main__":
  sys.exit(main())
