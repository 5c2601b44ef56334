"""Writes the released model: an export as releases/<name>/ with a model card built from its report.

  .venv/bin/python experiments/make_release.py --export WORKDIR/sft/export \
      --report experiments/results/full/dev_protocol/metrics.json \
      --exclude_pmids ../shared/data/phenopacket-store/benchmark_pmids.txt

The card's tables are read from the `rarejax evaluate` report of the export (metrics.json): every
benchmark, every method and slice with its top-1 / top-10. The publications the model's knowledge
excludes are listed in metadata.json (`knowledge.excluded_pmids`, checked against the export's
stamp) so an evaluation can give the classical rankers the same knowledge. A release replaces
the previous one.
"""
import argparse
import datetime
import json
import pathlib
import sys

import jax

from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import release
from rarejax.sample import answer_prior

ROOT = pathlib.Path(__file__).resolve().parents[1]


def report_tables(metrics: dict) -> str:
  """Markdown: per benchmark, a row per method with top-1 / top-10 per slice."""
  out = []
  for name, bench in metrics["benchmarks"].items():
    slices = list(bench["slices"])
    out.append(f"### {name}\n\n{bench['source']} ({bench['n_cases']} cases; slices: " +
               ", ".join(f"{s} n={bench['slices'][s]}" for s in slices) + ")\n")
    out.append("| method | " + " | ".join(f"{s} top-1 / top-10" for s in slices) + " |")
    out.append("| --- |" + " --- |" * len(slices))
    for method, result in bench["methods"].items():
      if not result["metrics"]["all"]["n"]:
        continue  # the method does not apply (e.g. oracle rankers on texts without phenotypes)
      cells = [f"{result['metrics'][s]['top1']['value']:.3f} / "
               f"{result['metrics'][s]['top10']['value']:.3f}" for s in slices]
      out.append(f"| {method} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)


def model_card(name: str, model: export_lib.LoadedModel, metrics: dict, notes: str) -> str:
  config = model.config
  n_params = sum(x.size for x in jax.tree.leaves(model.params))
  stamp = model.metadata.get("knowledge", {})
  return f"""# {name}

A rarejax model for rare-disease diagnosis from a clinical note: it reads the note and ranks
OMIM diseases. Trained from scratch on one 2-core CPU with `gin_configs/experiments/full.gin`
(answer first: each disease is one vocabulary piece, and the differential is the model's
probability of naming each disease first). Released {datetime.date.today().isoformat()}.

- Architecture: Llama-family decoder, {config.num_layers} layers, d_model {config.d_model},
  {config.num_heads} heads, vocabulary {config.vocab_size} (SentencePiece; one piece per disease
  id), {n_params / 1e6:.1f}M parameters, stored in bfloat16.
- Knowledge: HPO release {stamp.get('hpo_release', '?')}; {stamp.get('n_excluded_pmids', '?')}
  publications excluded from every annotation it learned from (every phenopacket-store
  publication and narrative case text: benchmark_pmids.txt), so it can be evaluated honestly on
  any of those cases.
- Training data: simulated patients of every annotated OMIM disease rendered to notes, knowledge
  QA, and the real phenopacket-store cases of the dev zip's training publications (80% of its
  publications), each rendered several times. The validation publications' cases were never
  seen.

## Use

```bash
rarejax diagnose --note "A 4-year-old boy with ..."   # this release is the default model
```

## Evaluation (dev protocol: held-out publications, same knowledge for every method)

{report_tables(metrics)}
Methods: `model.text` is this model on the note; `resnik`, `likelihood_ratio`, `case_knn` and
`fusion` are classical rankers given the same knowledge and the same training cases (`oracle`:
the case's structured HPO terms; `text`: HPO concepts recognized in the note).

## Limits

{notes}
"""


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--export", required=True, help="a training stage's export folder")
  parser.add_argument("--report", required=True, help="metrics.json of its rarejax evaluate run")
  parser.add_argument("--exclude_pmids", action="append", default=[],
                      help="the publication lists its knowledge excluded, checked against the "
                      "export's knowledge stamp and recorded in metadata.json")
  parser.add_argument("--name", default=release.DEFAULT_NAME)
  parser.add_argument("--limits", default="", help="a markdown file with the card's limits")
  parser.add_argument("--prior_weight", type=float, default=None,
                      help="the answer-prior weight the release ranks with by default "
                      "(rarejax.sample.answer_prior; chosen on the inner split), recorded in "
                      "metadata.json; default: the export's (0 when none)")
  args = parser.parse_args(argv)
  model = export_lib.load_model(args.export)
  metrics = json.loads(pathlib.Path(args.report).read_text())
  excluded = knowledge.normalize_pmids(p for f in args.exclude_pmids
                                       for p in knowledge.read_pmid_file(f))
  stamp = dict(model.metadata.get("knowledge") or {})
  if "excluded_pmids" not in stamp:  # an export that records its exclusions by hash only
    if stamp.get("excluded_pmids_sha256") != knowledge.pmids_digest(excluded):
      raise SystemExit(f"{args.export}: the --exclude_pmids lists ({len(excluded)} publications) "
                       "are not the exclusions its knowledge stamp records; pass the files it "
                       "was trained with")
    stamp["excluded_pmids"] = list(excluded)
  notes = pathlib.Path(args.limits).read_text() if args.limits else "See the README."
  extra = {"evaluation_report": metrics["provenance"]}
  if args.prior_weight is not None:
    if args.prior_weight and answer_prior.read(args.export) is None:
      raise SystemExit(f"--prior_weight {args.prior_weight} needs {args.export}/"
                       f"{answer_prior.FILE}: python -m rarejax.sample.answer_prior --workdir W")
    extra[answer_prior.PRIOR_WEIGHT] = args.prior_weight
  out = release.write_release(
      args.export, ROOT / "releases" / args.name, model_card(args.name, model, metrics, notes),
      model.params, {**model.metadata, "knowledge": stamp}, extra)
  size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
  print(f"wrote {out} ({size:.1f} MiB)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
