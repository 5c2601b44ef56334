"""Classical rankers on real phenopackets under the honest protocol (full vs publication-excluded knowledge).

Splits the cases by publication into train/validation (validation_fraction of the publications),
and reports, side by side on the same cases:
  full_knowledge        validation cases; all annotations (leaky: annotations cite these papers)
  heldout_knowledge     validation cases; every annotation row citing a validation publication
                        removed (the honest protocol); kNN over training-publication cases;
                        fusion weights chosen on an inner split of the training publications
  all_dev_excluded      every case; rows citing any dev publication removed (annotation-only
                        rankers; the number the issue asks for as "(b)")
Writes <out>/baselines_phenopacket.json and .md. Reproduce:
  .venv/bin/python experiments/baselines_phenopacket.py \
      --phenopackets ../shared/data/phenopacket-store/phenopacket-store-dev.zip
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np
import tqdm

from rarejax import knowledge
from rarejax.cases import phenopacket, split
from rarejax.evaluate import metrics
from rarejax.phenotypes import baselines
from rarejax.phenotypes.phenotype_index import PhenotypeIndex

KS = (1, 3, 10)


def _evaluate(ranker, index, cases, tie_break, label):
  ranked = baselines.rank_cases(ranker, index, tqdm.tqdm(cases, desc=label, leave=False,
                                                         mininterval=5),
                                [c.gold_ids for c in cases], tie_break)
  ranks = [r.gold_rank for r in ranked]
  annotated = [r for r, c in zip(ranks, cases) if any(g in index.disease_index for g in c.gold_ids)]
  return {"all": _summary(ranks), "gold_annotated": _summary(annotated)}


def _summary(ranks):
  estimates = metrics.summarize(ranks, ks=KS)
  return {"n": len(ranks), **{name: e.as_dict() for name, e in estimates.items()}}


def _knowledge(exclude):
  return knowledge.load_knowledge(exclude_pmids=exclude)


def _setting(kb, val_cases, train_cases, inner_kb, inner_train, inner_val, seed):
  """Rankers + fusion for one knowledge base; fusion weights tuned on the inner split only."""
  index = PhenotypeIndex(kb)
  tie_break = baselines.make_tie_break(len(index.disease_ids), seed)
  rankers = baselines.default_rankers(index, train_cases, [c.gold_ids for c in train_cases])
  inner_index = PhenotypeIndex(inner_kb)
  inner_rankers = baselines.default_rankers(inner_index, inner_train,
                                            [c.gold_ids for c in inner_train])
  weights, k, inner_mrr = baselines.choose_fusion_weights(
      list(inner_rankers.values()), inner_index, inner_val, [c.gold_ids for c in inner_val],
      baselines.make_tie_break(len(inner_index.disease_ids), seed))
  fusion = baselines.FusionRanker(list(rankers.values()), weights, tie_break, k=k)
  results = {name: _evaluate(r, index, val_cases, tie_break, name) for name, r in rankers.items()}
  results["fusion"] = _evaluate(fusion, index, val_cases, tie_break, "fusion")
  results["fusion"]["weights"] = dict(zip(rankers, weights))
  results["fusion"]["k"] = k
  results["fusion"]["inner_validation_mrr"] = inner_mrr
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--phenopackets", required=True, help="phenopacket zip, directory or file")
  parser.add_argument("--validation_fraction", type=float, default=0.2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="results/baselines")
  args = parser.parse_args()
  start = time.time()
  kb_full = knowledge.load_knowledge()
  cases, report = phenopacket.read_phenopackets(args.phenopackets, kb=kb_full)
  cases = split.split_by_publication(cases, args.validation_fraction, args.seed)
  train = [c for c in cases if c.split == "train"]
  val = [c for c in cases if c.split == "validation"]
  inner = split.split_by_publication(train, args.validation_fraction, args.seed + 1)
  inner_train = [c for c in inner if c.split == "train"]
  inner_val = [c for c in inner if c.split == "validation"]
  print(f"{report.n_read} cases read ({report.n_skipped} skipped); "
        f"{len(split.pmids(train))} train / {len(split.pmids(val))} validation publications; "
        f"{len(train)} / {len(val)} cases")

  out = {"inputs": {"phenopackets": str(args.phenopackets), "n_cases": len(cases),
                    "n_train": len(train), "n_validation": len(val),
                    "n_inner_train": len(inner_train), "n_inner_validation": len(inner_val),
                    "validation_fraction": args.validation_fraction, "seed": args.seed,
                    "read_report": {"n_read": report.n_read, "n_skipped": report.n_skipped}},
         "versions": {"python": platform.python_version(), "numpy": np.__version__}}
  heldout = split.pmids(val)
  out["full_knowledge"] = _setting(kb_full, val, train, kb_full, inner_train, inner_val, args.seed)
  out["full_knowledge"]["knowledge"] = kb_full.version.as_dict()
  kb_heldout = _knowledge(heldout)
  kb_inner = _knowledge(heldout + split.pmids(inner_val))
  out["heldout_knowledge"] = _setting(kb_heldout, val, train, kb_inner, inner_train, inner_val,
                                      args.seed)
  out["heldout_knowledge"]["knowledge"] = kb_heldout.version.as_dict()
  kb_all = _knowledge(split.pmids(cases))
  index_all = PhenotypeIndex(kb_all)
  tie_all = baselines.make_tie_break(len(index_all.disease_ids), args.seed)
  out["all_dev_excluded"] = {name: _evaluate(r, index_all, cases, tie_all, name)
                             for name, r in baselines.default_rankers(index_all).items()}
  out["all_dev_excluded"]["knowledge"] = kb_all.version.as_dict()
  out["wall_seconds"] = round(time.time() - start, 1)

  folder = pathlib.Path(args.out)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "baselines_phenopacket.json").write_text(json.dumps(out, indent=2, default=str))
  table = _markdown(out)
  (folder / "baselines_phenopacket.md").write_text(table)
  print(table)


def _markdown(out) -> str:
  lines = ["| setting | ranker | cases | top-1 [95% CI] | top-3 | top-10 | MRR | top-1 (gold annotated) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for setting in ("full_knowledge", "heldout_knowledge", "all_dev_excluded"):
    for name, result in out[setting].items():
      if name == "knowledge":
        continue
      a, g = result["all"], result["gold_annotated"]
      cells = [f"{a[m]['value']:.3f} [{a[m]['low']:.3f}, {a[m]['high']:.3f}]"
               for m in ("top1", "top3", "top10", "mrr")]
      lines.append(f"| {setting} | {name} | {a['n']} | " + " | ".join(cells) +
                   f" | {g['top1']['value']:.3f} (n={g['n']}) |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
