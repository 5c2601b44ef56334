"""Writes notebooks/ablation.ipynb (the notebook is generated so that its source stays reviewable).

  .venv/bin/python notebooks/make_ablation_notebook.py
"""
import pathlib

import nbformat

CELLS = [
    ("markdown", """# RareDxR1 on rarejax: stage-by-stage results and ablations

Reads the artifacts of one pipeline run (`RAREJAX_WORKDIR`, default `workdir/quickstart`) and the
ablation summaries of `experiments/ablations.py` (`RAREJAX_ABLATIONS`, default
`experiments/results/ablations`). Nothing here trains or evaluates: every number comes from a
result file written by the run, so re-executing the notebook on the same run gives the same
tables. Every model and ranker below is judged on the same held-out simulated notes."""),
    ("code", """import json
import os
import pathlib

import matplotlib.pyplot as plt  # the kernel's inline backend keeps the figures

from rarejax.train import writers

ROOT = pathlib.Path(os.environ.get("RAREJAX_ROOT", pathlib.Path.cwd().parent))
WORKDIR = pathlib.Path(os.environ.get("RAREJAX_WORKDIR", ROOT / "workdir" / "quickstart"))
ABLATIONS = pathlib.Path(os.environ.get("RAREJAX_ABLATIONS",
                                        ROOT / "experiments" / "results" / "ablations"))
STAGE_ORDER = ["import_hf", "data", "cpt", "sft", "rers", "trajectory_sft", "rl", "eval"]


def table(header, rows):
  \"\"\"Prints a fixed-width text table.\"\"\"
  rows = [[str(c) for c in r] for r in rows]
  widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
  print(line(header))
  print(line(["-" * w for w in widths]))
  for r in rows:
    print(line(r))


results = {s: json.loads((WORKDIR / s / "result.json").read_text())
           for s in STAGE_ORDER if (WORKDIR / s / "result.json").is_file()}
print(f"run: {WORKDIR}  stages complete: {list(results)}")"""),
    ("markdown", "## Stages: wall time and summary"),
    ("code", """table(["stage", "wall s", "summary"],
      [[s, f"{r.get('wall_seconds', float('nan')):.0f}", r.get("summary", "")[:110]]
       for s, r in results.items()])
print(f"total: {sum(r.get('wall_seconds', 0) for r in results.values()) / 60:.1f} min")"""),
    ("markdown", """## Held-out simulated notes: every stage's model next to the classical rankers

The simulated `test` split, which no stage reads before eval. `model.<stage>` is the export of
that stage, greedy; `resnik` / `likelihood_ratio` rank the same diseases the model was trained
on, `case_knn` searches the simulated training notes the model learned from, `fusion` combines
the three (weights chosen on the validation split); each reads the structured phenotypes
(`oracle`) or the HPO concepts recognized in the note (`text`). Brackets: 95% bootstrap
intervals."""),
    ("code", """report = json.loads((WORKDIR / "eval" / "report" / "metrics.json").read_text())
bench, entry = next(iter(report["benchmarks"].items()))
methods = entry["methods"]


def cell(metric):
  return f"{metric['value']:.3f} [{metric['low']:.2f}, {metric['high']:.2f}]"


table(["method", "n", "top-1", "top-3", "top-10", "MRR", "well-formed"],
      [[name, m["metrics"]["all"]["n"], *(cell(m["metrics"]["all"][k])
                                          for k in ("top1", "top3", "top10", "mrr")),
        f"{m['well_formed_rate']:.2f}" if m["well_formed_rate"] is not None else "-"]
       for name, m in methods.items()])
extra = results.get("eval", {}).get("resnik.oracle.all_omim")
if extra:
  print(f"\\nresnik.oracle over every OMIM disease: top-1 {extra['top1']:.3f}, "
        f"top-10 {extra['top10']:.3f}")"""),
    ("code", """names = list(methods)
top1 = [methods[n]["metrics"]["all"]["top1"]["value"] for n in names]
top10 = [methods[n]["metrics"]["all"]["top10"]["value"] for n in names]
fig, ax = plt.subplots(figsize=(9, 3.5))
x = range(len(names))
ax.bar([i - 0.2 for i in x], top1, width=0.4, label="top-1")
ax.bar([i + 0.2 for i in x], top10, width=0.4, label="top-10")
ax.set_xticks(list(x), names, rotation=30, ha="right")
ax.set_ylim(0, 1)
ax.set_title(f"{bench}: held-out accuracy by stage and method")
ax.legend()
fig.tight_layout()
plt.show()"""),
    ("markdown", "## RERS: coverage, yield per round, rejection reasons"),
    ("code", """rers_report = WORKDIR / "rers" / "report.json"
if rers_report.is_file():
  rers = json.loads(rers_report.read_text())["summary"]
  print(f"cases covered: {rers['n_covered']}/{rers['n_cases']} ({rers['coverage']:.2f}); "
        f"trajectories kept: {rers['n_trajectories']}; sampled tokens: {rers['sampled_tokens']}")
  table(["round", "sampled", "kept", "yield", "newly covered"],
        [[r["round"], r["sampled"], r["kept"], f"{r['yield']:.3f}", r["newly_covered"]]
         for r in rers["rounds"]])
  table(["rejected by rule", "responses"], sorted(rers["rejected"].items(), key=lambda kv: -kv[1]))
else:
  print("this run has no rers stage")"""),
    ("markdown", "## RL: rewards and pass rate per step"),
    ("code", """rl_metrics = [r for r in writers.read_metrics(WORKDIR / "rl") if "rl/reward" in r] \\
    if (WORKDIR / "rl").is_dir() else []
if rl_metrics:
  keys = [k for k in rl_metrics[0] if k.startswith("rl/reward") or k == "rl/pass_rate"]
  fig, ax = plt.subplots(figsize=(8, 3.5))
  for k in keys:
    ax.plot([r["step"] for r in rl_metrics], [r[k] for r in rl_metrics], label=k, marker=".")
  ax.set_xlabel("RL step")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  plt.show()
  last = rl_metrics[-1]
  table(["metric", "last step"], [[k, f"{v:.4g}"] for k, v in last.items()
                                  if isinstance(v, (int, float)) and k.startswith(("rl/", "train/"))])
else:
  print("this run has no rl metrics")"""),
    ("markdown", """## Ablations (same budget per arm): RERS vs rejection sampling, curriculum vs shuffled

Written by `experiments/ablations.py`; each arm starts from the same sft checkpoint."""),
    ("code", """summaries = sorted(ABLATIONS.glob("*.json")) if ABLATIONS.is_dir() else []
for path in summaries:
  doc = json.loads(path.read_text())
  print(f"\\n{doc['title']}  ({path.name})")
  table(["arm", *doc["columns"]], [[arm, *(row.get(c, "-") for c in doc["columns"])]
                                   for arm, row in doc["arms"].items()])
if not summaries:
  print(f"no ablation summaries under {ABLATIONS}")"""),
]


def main() -> None:
  notebook = nbformat.v4.new_notebook()
  notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
  notebook.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown"
                    else nbformat.v4.new_code_cell(src) for kind, src in CELLS]
  path = pathlib.Path(__file__).with_name("ablation.ipynb")
  nbformat.write(notebook, path)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
