"""Chooses the answer-prior weight from a `rarejax evaluate --prior_weight w1,w2,...` report.

  .venv/bin/python experiments/choose_prior_weight.py INNER_REPORT/metrics.json \
      [--benchmark phenopackets_inner] [--out INNER_REPORT/prior_weight.json]

The rule, fixed before any inner number was seen (README, "Dividing out the answers' prior"):
the weight whose model method has the highest mean of top-1 and top-10 over the benchmark's
cases, the smaller weight on a tie. Run it on the inner split's report only: the weight it picks
is then used, once, on the outer validation cases. Prints a table of every weight with its
slices and writes the choice as JSON.
"""
import argparse
import json
import pathlib
import re
import sys

METHOD = re.compile(r"model\.text\.w(?P<weight>[0-9.]+(?:e-?[0-9]+)?)")


def weights_of(methods: dict) -> dict[float, dict]:
  """{weight: the method's metrics} for the report's model.text.w<weight> methods."""
  out = {}
  for name, result in methods.items():
    match = METHOD.fullmatch(name)
    if match:
      out[float(match["weight"])] = result["metrics"]
  return out


def choose(per_weight: dict[float, dict]) -> float:
  """The weight with the highest mean of top-1 and top-10 (all cases); the smaller on a tie."""
  def score(weight):
    metrics = per_weight[weight]["all"]
    return (metrics["top1"]["value"] + metrics["top10"]["value"]) / 2
  return max(sorted(per_weight), key=lambda w: (round(score(w), 12), -w))


def table(per_weight: dict[float, dict]) -> list[str]:
  slices = list(next(iter(per_weight.values())))
  rows = ["| w | " + " | ".join(f"{s} top-1 / top-10" for s in slices) + " |",
          "| --- |" + " --- |" * len(slices)]
  for weight in sorted(per_weight):
    cells = [f"{per_weight[weight][s]['top1']['value']:.3f} / "
             f"{per_weight[weight][s]['top10']['value']:.3f}" for s in slices]
    rows.append(f"| {weight:g} | " + " | ".join(cells) + " |")
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("metrics", help="metrics.json of the inner-split evaluation")
  parser.add_argument("--benchmark", default=None, help="default: the report's only benchmark")
  parser.add_argument("--out", default=None, help="where to write the choice (JSON)")
  args = parser.parse_args(argv)
  benchmarks = json.loads(pathlib.Path(args.metrics).read_text())["benchmarks"]
  name = args.benchmark or (next(iter(benchmarks)) if len(benchmarks) == 1 else None)
  if name not in benchmarks:
    parser.error(f"{args.metrics} has benchmarks {sorted(benchmarks)}: pass --benchmark")
  per_weight = weights_of(benchmarks[name]["methods"])
  if len(per_weight) < 2:
    parser.error(f"{args.metrics}: {name} has {len(per_weight)} model.text.w<weight> methods; "
                 "evaluate with --prior_weight w1,w2,... (at least two weights)")
  chosen = choose(per_weight)
  print("\n".join(table(per_weight)) + f"\n\nchosen: w = {chosen:g} ({name}, "
        f"{benchmarks[name]['n_cases']} cases)")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(
        {"prior_weight": chosen, "benchmark": name, "n_cases": benchmarks[name]["n_cases"],
         "rule": "highest mean of top-1 and top-10; the smaller weight on a tie",
         "source": str(args.metrics)}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
