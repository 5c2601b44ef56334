"""The RERS report: cases covered, yield per round, why responses were rejected (JSON and markdown).

Built from the per-case statistics of rarejax.rers.synthesize (`ChunkResult.cases`):
  coverage         cases with at least one kept trajectory (all, and by case source)
  rounds           per round: responses sampled, trajectories kept, yield (kept / sampled),
                   cases first covered in that round
  rejections       per round and in total: responses failing each keep rule (a response may fail
                   several), and 'duplicate' for a kept response the case already had
  budget           responses and tokens sampled (the ablation compares these), masking, skips
"""
from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

from rarejax.rers import filters


def _ratio(a: float, b: float) -> float:
  return a / b if b else 0.0


def summarize(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Aggregates per-case statistics into the report's numbers."""
  n_rounds = max((len(c["sampled"]) for c in cases), default=0)
  rounds = []
  for r in range(n_rounds):
    sampled = sum(c["sampled"][r] for c in cases if r < len(c["sampled"]))
    kept = sum(c["kept"][r] for c in cases if r < len(c["kept"]))
    first = sum(1 for c in cases if _first_covered(c) == r)
    rejected = collections.Counter()
    for c in cases:
      if r < len(c["rejected"]):
        rejected.update(c["rejected"][r])
    rounds.append({"round": r, "sampled": sampled, "kept": kept, "yield": _ratio(kept, sampled),
                   "newly_covered": first, "rejected": _ordered(rejected)})
  total_rejected = collections.Counter()
  for row in rounds:
    total_rejected.update(row["rejected"])
  by_source: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  for c in cases:
    by_source[c["source"] or "unknown"][0] += 1
    by_source[c["source"] or "unknown"][1] += _first_covered(c) is not None
  n_covered = sum(1 for c in cases if _first_covered(c) is not None)
  masked = [len(c["masked"]) for c in cases]
  return {
      "n_cases": len(cases), "n_covered": n_covered, "coverage": _ratio(n_covered, len(cases)),
      "n_trajectories": sum(sum(c["kept"]) for c in cases),
      "coverage_by_source": {s: {"n_cases": n, "n_covered": k, "coverage": _ratio(k, n)}
                             for s, (n, k) in sorted(by_source.items())},
      "rounds": rounds, "rejected": _ordered(total_rejected),
      "sampled_responses": sum(sum(c["sampled"]) for c in cases),
      "sampled_tokens": sum(c["tokens"] for c in cases),
      "cases_masked": sum(1 for m in masked if m), "findings_masked": sum(masked),
      "skipped": dict(collections.Counter(c["skipped"] for c in cases if c["skipped"])),
      "not_reflected": dict(sum((collections.Counter(c["not_reflected"]) for c in cases),
                                collections.Counter())),
  }


def _first_covered(case: Mapping[str, Any]) -> int | None:
  return next((r for r, k in enumerate(case["kept"]) if k), None)


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
  """Counts in rule order, then any other reason."""
  order = {rule: i for i, rule in enumerate(filters.RULES)}
  return {k: counts[k] for k in sorted(counts, key=lambda k: (order.get(k, len(order)), k))}


def markdown(summary: Mapping[str, Any], header: Mapping[str, Any]) -> str:
  """A readable report: the settings in `header`, coverage, the rounds table, rejections."""
  lines = ["# RERS report", ""]
  lines += [f"- {key}: {value}" for key, value in header.items()]
  lines += ["", f"Cases covered: {summary['n_covered']} / {summary['n_cases']} "
            f"({summary['coverage']:.1%}); trajectories kept: {summary['n_trajectories']}; "
            f"responses sampled: {summary['sampled_responses']} "
            f"({summary['sampled_tokens']} tokens).", ""]
  lines += ["| source | cases | covered | coverage |", "|---|---:|---:|---:|"]
  lines += [f"| {s} | {v['n_cases']} | {v['n_covered']} | {v['coverage']:.1%} |"
            for s, v in summary["coverage_by_source"].items()]
  lines += ["", "| round | sampled | kept | yield | newly covered |", "|---:|---:|---:|---:|---:|"]
  lines += [f"| {r['round']} | {r['sampled']} | {r['kept']} | {r['yield']:.1%} | "
            f"{r['newly_covered']} |" for r in summary["rounds"]]
  reasons = list(summary["rejected"])
  if reasons:
    lines += ["", "Rejections (responses failing each rule; one response may fail several):", "",
              "| round | " + " | ".join(reasons) + " |", "|---:|" + "---:|" * len(reasons)]
    lines += [f"| {r['round']} | " + " | ".join(str(r["rejected"].get(k, 0)) for k in reasons)
              + " |" for r in summary["rounds"]]
  lines += ["", f"Masking: {summary['findings_masked']} findings hidden in "
            f"{summary['cases_masked']} cases. Skipped cases: {summary['skipped'] or 'none'}. "
            f"Failures not reflected: {summary['not_reflected'] or 'none'}.", ""]
  return "\n".join(lines)
