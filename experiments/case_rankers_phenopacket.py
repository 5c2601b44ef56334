"""Case-based Resnik and rank fusion on real phenopackets: every choice on an inner split, then validation once.

The development protocol of baselines_phenopacket.py: cases split by publication into train /
validation (validation_fraction of the publications, seed), validation publications excluded
from the knowledge. Every choice is made on an INNER split of the training publications (the
same fraction, seed + 1), with the inner-validation publications excluded from the knowledge
too, the rankers searching the inner-training cases only:
  - the case-based Resnik variant (BMA query→case or symmetric; disease = best case or mean of
    its 2 or 3 best cases), by inner MRR;
  - the old fusion (resnik, likelihood ratio, kNN; FusionRanker) and the new RankFusion
    (resnik, likelihood ratio, kNN, case Resnik; weights, k, sum or mean over the rankers that
    rank a disease; annotation rankers never weighted 0), by inner MRR; the same grid with
    zero weights allowed everywhere ('free') is reported for comparison.
With --final, the chosen settings then run ONCE on the validation cases (rankers searching every
training case), with seen / unseen slices (seen: the gold disease has a training case).
Writes <out>/case_rankers_phenopacket.json and .md. Reproduce:
  .venv/bin/python experiments/case_rankers_phenopacket.py --final \
      --phenopackets ../shared/data/phenopacket-store/phenopacket-store-dev.zip \
      --out experiments/results/baselines
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

from rarejax import knowledge
from rarejax.cases import phenopacket, split
from rarejax.evaluate import metrics
from rarejax.phenotypes import baselines
from rarejax.phenotypes.phenotype_index import PhenotypeIndex

VARIANTS = {f"case_resnik{'_sym' if sym else ''}_top{top}": (sym, top)
            for sym in (False, True) for top in (1, 2, 3)}
OLD_FUSED = ("resnik", "likelihood_ratio", "case_knn")
KS = (1, 3, 10)


def _rankers(index, train, variants):
  gold = [c.gold_ids for c in train]
  rankers = dict(baselines.default_rankers(index, train, gold))
  for name, (symmetric, top) in variants.items():
    rankers[name] = baselines.CaseResnikRanker(index, train, gold, symmetric, top, name)
  return {name: baselines.Memoized(r) for name, r in rankers.items()}


def _evaluate(ranker, index, cases, seen, tie_break):
  ranked = baselines.rank_cases(ranker, index, cases, [c.gold_ids for c in cases], tie_break)
  ranks = [r.gold_rank for r in ranked]
  return {"all": _summary(ranks),
          "seen": _summary([r for r, s in zip(ranks, seen) if s]),
          "unseen": _summary([r for r, s in zip(ranks, seen) if not s])}


def _summary(ranks):
  estimates = metrics.summarize(ranks, ks=KS)
  return {"n": len(ranks), **{name: e.as_dict() for name, e in estimates.items()}}


def _seen(cases, train):
  known = {g for c in train for g in c.gold_ids}
  return [any(g in known for g in c.gold_ids) for c in cases]


def _mrr(result):
  return result["all"]["mrr"]["value"]


def choose(kb_inner, inner_train, inner_val, seed):
  """Every choice, on the inner split: (results by ranker, case variant, old and new fusion).

  The new fusion's grid is tried twice: 'free' (any ranker may get weight 0) and the library's
  (annotation rankers never 0: baselines.ANNOTATION_WEIGHTS); the chosen one is the library's
  best, so that a disease without training cases is always ranked.
  """
  index = PhenotypeIndex(kb_inner)
  tie_break = baselines.make_tie_break(len(index.disease_ids), seed)
  rankers = _rankers(index, inner_train, VARIANTS)
  seen = _seen(inner_val, inner_train)
  results = {name: _evaluate(r, index, inner_val, seen, tie_break) for name, r in rankers.items()}
  variant = max(VARIANTS, key=lambda n: _mrr(results[n]))
  gold = [c.gold_ids for c in inner_val]
  old = baselines.choose_fusion_weights([rankers[n] for n in OLD_FUSED], index, inner_val, gold,
                                        tie_break)
  old_fusion = baselines.FusionRanker([rankers[n] for n in OLD_FUSED], old[0], tie_break, old[1])
  results["fusion"] = _evaluate(old_fusion, index, inner_val, seen, tie_break)
  results["fusion"]["choice"] = {"weights": old[0], "k": old[1], "mrr": old[2]}
  fused = [*OLD_FUSED, variant]
  ranks, gold_idx = baselines.tuning_ranks([rankers[n] for n in fused], index, inner_val, gold,
                                           tie_break)
  case = baselines.CASE_WEIGHTS
  grids = {"free": [case] * 4, "annotation_kept": [baselines.ANNOTATION_WEIGHTS] * 2 + [case] * 2}
  choices = {}
  for grid_name, grid in grids.items():
    settings = baselines.rank_fusion_grid(ranks, gold_idx, tie_break, grid)
    for mean in (False, True):
      label = f"rrf_{'mean' if mean else 'sum'}_{grid_name}"
      choice = choices[label] = max((c for c in settings if c.mean == mean),
                                    key=lambda c: c.mrr)
      ranker = baselines.RankFusion([rankers[n] for n in fused], choice.weights, tie_break,
                                    choice.k, choice.mean, label)
      results[label] = _evaluate(ranker, index, inner_val, seen, tie_break)
      results[label]["choice"] = dataclasses.asdict(choice)
  new = max((c for label, c in choices.items() if label.endswith("annotation_kept")),
            key=lambda c: c.mrr)
  return results, variant, {"weights": dict(zip(OLD_FUSED, old[0])), "k": old[1]}, \
      {"weights": dict(zip(fused, new.weights)), "k": new.k, "mean": new.mean}


def final(kb, train, val, variant, old, new, seed):
  """The chosen rankers and fusions on the validation cases, once."""
  index = PhenotypeIndex(kb)
  tie_break = baselines.make_tie_break(len(index.disease_ids), seed)
  rankers = _rankers(index, train, {variant: VARIANTS[variant]})
  rankers["fusion"] = baselines.FusionRanker([rankers[n] for n in old["weights"]],
                                             list(old["weights"].values()), tie_break, old["k"])
  rankers["rrf"] = baselines.RankFusion([rankers[n] for n in new["weights"]],
                                        list(new["weights"].values()), tie_break, new["k"],
                                        new["mean"])
  seen = _seen(val, train)
  return {name: _evaluate(r, index, val, seen, tie_break) for name, r in rankers.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--phenopackets", required=True, help="phenopacket zip, directory or file")
  parser.add_argument("--validation_fraction", type=float, default=0.2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--final", action="store_true",
                      help="after the inner-split choices, evaluate them on the validation cases")
  parser.add_argument("--out", default="experiments/results/baselines")
  args = parser.parse_args()
  start = time.time()
  cases, report = phenopacket.read_phenopackets(args.phenopackets, kb=knowledge.load_knowledge())
  cases = split.split_by_publication(cases, args.validation_fraction, args.seed)
  train = [c for c in cases if c.split == "train"]
  val = [c for c in cases if c.split == "validation"]
  inner = split.split_by_publication(train, args.validation_fraction, args.seed + 1)
  inner_train = [c for c in inner if c.split == "train"]
  inner_val = [c for c in inner if c.split == "validation"]
  kb_inner = knowledge.load_knowledge(exclude_pmids=split.pmids(val) + split.pmids(inner_val))
  out = {"inputs": {"phenopackets": str(args.phenopackets), "n_read": report.n_read,
                    "n_train": len(train), "n_validation": len(val),
                    "n_inner_train": len(inner_train), "n_inner_validation": len(inner_val),
                    "validation_fraction": args.validation_fraction, "seed": args.seed},
         "inner_knowledge": kb_inner.version.as_dict()}
  inner_results, variant, old, new = choose(kb_inner, inner_train, inner_val, args.seed)
  out.update(inner=inner_results, chosen={"case_resnik": variant, "fusion": old, "rrf": new})
  if args.final:
    kb = knowledge.load_knowledge(exclude_pmids=split.pmids(val))
    out["validation"] = final(kb, train, val, variant, old, new, args.seed)
    out["validation_knowledge"] = kb.version.as_dict()
  out["wall_seconds"] = round(time.time() - start, 1)
  folder = pathlib.Path(args.out)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "case_rankers_phenopacket.json").write_text(json.dumps(out, indent=2, default=str))
  table = report(out)
  (folder / "case_rankers_phenopacket.md").write_text(table)
  print(table)


def report(out) -> str:
  """The markdown summary of a results JSON: what was chosen, then the inner and validation tables."""
  inputs, chosen = out["inputs"], out["chosen"]
  text = [f"# Case rankers and fusions on {inputs['phenopackets']}", "",
          "Reproduce: `.venv/bin/python experiments/case_rankers_phenopacket.py --final "
          f"--phenopackets {inputs['phenopackets']} --out experiments/results/baselines`", "",
          f"Chosen on the inner split: case ranker `{chosen['case_resnik']}`; old fusion "
          f"{chosen['fusion']}; rrf {chosen['rrf']}. Seen: the gold disease has a training case.",
          "", _markdown(out["inner"], f"inner split ({inputs['n_inner_validation']} cases; "
                        "every choice)")]
  if "validation" in out:
    text += ["", _markdown(out["validation"], f"validation ({inputs['n_validation']} cases; "
                           "run once)")]
  return "\n".join(text)


def _markdown(results, title) -> str:
  lines = [f"### {title}", "",
           "| ranker | top-1 [95% CI] | top-10 | MRR | seen top-1 / top-10 | unseen top-1 / top-10 |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name, result in results.items():
    a, s, u = result["all"], result["seen"], result["unseen"]
    lines.append(
        f"| {name} | {a['top1']['value']:.3f} [{a['top1']['low']:.3f}, {a['top1']['high']:.3f}]"
        f" | {a['top10']['value']:.3f} | {a['mrr']['value']:.3f} | "
        f"{s['top1']['value']:.3f} / {s['top10']['value']:.3f} (n={s['n']}) | "
        f"{u['top1']['value']:.3f} / {u['top10']['value']:.3f} (n={u['n']}) |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
