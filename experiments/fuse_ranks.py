"""Reciprocal-rank fusion of two methods' ranked lists from a report's cases.tsv (no tuning).

  .venv/bin/python experiments/fuse_ranks.py RESULTS/cases.tsv --a model.text --b rrf.text \
      --out RESULTS/fused_ranks.tsv

A fixed rule, declared before any fused number was seen and never tuned: each disease scores
sum over the two methods of 1 / (k + rank) with k = 60 (Cormack et al. 2009), over the top-k
lists the report holds; ties go to A's order, then B's. The fused list's gold rank is the
position of the first disease that either method's own list was judged right with (the gold rank
rows of cases.tsv, so the grader's id-equivalence rules carry over). Writes ranks.tsv rows
(benchmark, case_id, method, gold_ids, gold_rank) for the fused method `A+B` next to A's and B's
own, which experiments/paired.py compares, and prints top-1 / top-10 of the three.
"""
import argparse
import collections
import csv


def read_lists(path: str, methods: tuple[str, str]) -> dict:
  """{(benchmark, case_id): {method: (gold_ids, gold_rank, [disease ids in rank order])}}."""
  cases = collections.defaultdict(dict)
  with open(path, newline="") as f:
    for row in csv.DictReader(f, delimiter="\t"):
      if row["method"] not in methods:
        continue
      entry = cases[row["benchmark"], row["case_id"]].setdefault(
          row["method"], (row["gold_ids"], int(row["gold_rank"]) if row["gold_rank"] else None, []))
      if row["rank"]:
        entry[2].append((int(row["rank"]), row["disease_id"]))
  for per_method in cases.values():
    for *_, ranked in per_method.values():
      ranked.sort()
  return cases


def fuse(a: list[str], b: list[str], k: float) -> list[str]:
  """The two lists fused by reciprocal rank; ties keep A's order, then B's."""
  score = collections.defaultdict(float)
  for ranked in (a, b):
    for rank, disease in enumerate(ranked, 1):
      score[disease] += 1.0 / (k + rank)
  order = {d: i for i, d in enumerate(dict.fromkeys(a + b))}
  return sorted(score, key=lambda d: (-score[d], order[d]))


def fused_rank(per_method: dict, k: float, top_k: int) -> int | None:
  """Gold rank of the fused list: the first disease that a method's own list was right with."""
  hits, lists = set(), []
  for _, gold_rank, ranked in per_method.values():
    ids = [d for _, d in ranked if d]
    lists.append(ids)
    if gold_rank is not None:
      hits.add(dict(ranked)[gold_rank])
  for rank, disease in enumerate(fuse(*lists, k)[:top_k], 1):
    if disease in hits:
      return rank
  return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("cases_tsv")
  parser.add_argument("--a", required=True)
  parser.add_argument("--b", required=True)
  parser.add_argument("--k", type=float, default=60.0)
  parser.add_argument("--top_k", type=int, default=10)
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  methods = (args.a, args.b)
  name = f"{args.a.split('.')[0]}+{args.b}"
  cases = read_lists(args.cases_tsv, methods)
  incomplete = [key for key, per in cases.items() if len(per) < 2]
  if incomplete:
    raise SystemExit(f"{args.cases_tsv}: {len(incomplete)} cases lack rows of {methods} "
                     f"(e.g. {incomplete[0]}); fuse methods evaluated on the same cases")
  rows, hits = [], collections.defaultdict(lambda: [0, 0, 0])
  for (benchmark, case_id), per_method in sorted(cases.items()):
    ranks = {m: per_method[m][1] for m in methods}
    ranks[name] = fused_rank(per_method, args.k, args.top_k)
    for method, rank in ranks.items():
      rows.append((benchmark, case_id, method, per_method[args.a][0],
                   "" if rank is None else rank))
      count = hits[benchmark, method]
      count[0] += 1
      count[1] += rank == 1
      count[2] += rank is not None and rank <= 10
  with open(args.out, "w", newline="") as f:
    writer = csv.writer(f, delimiter="\t", lineterminator="\n")
    writer.writerow(("benchmark", "case_id", "method", "gold_ids", "gold_rank"))
    writer.writerows(rows)
  for (benchmark, method), (n, top1, top10) in sorted(hits.items()):
    print(f"{benchmark:<26} {method:<22} n={n:<5} top-1 {top1 / n:.3f}  top-10 {top10 / n:.3f}")
  print(f"rule: reciprocal rank fusion, k={args.k:g}, top-{args.top_k} lists; wrote {args.out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
