"""Evaluation outputs: metrics JSON, per-case TSV and a markdown report with plots.

One evaluation run writes, under its output folder (every file atomically: temp file + rename):

  metrics.json      per benchmark, method and slice: top-1/3/5/10, MRR and found-rate with
                    bootstrap intervals (metrics.summarize), top-k curves, accuracy by number of
                    findings, calibration when a method states confidences; plus every input and
                    version (knowledge stamps, packages, git commit, config)
  cases.tsv         one row per (case, method, candidate): ids, labels, scores, the gold rank
                    (what the PhEval runner, rarejax.pheval, turns into PhEval's results)
  report.md         tables and plots (plots/*.png) a person can read
  responses/BENCH/METHOD.jsonl
                    a model's full response per case, with its gold rank, format validity and
                    flags (only for methods that write text)

Slices: 'all'; 'seen' / 'unseen' (a gold disease is / is not among the training diseases, when
those are given); 'unannotated' (no gold disease has an annotation in the methods' knowledge, when
that is given: only a model that learned the disease from cases can name it); 'few_findings' (at
most FEW_FINDINGS observed findings). A method is scored on
the cases it applies to (oracle mode needs structured phenotypes); `n` says how many.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import pathlib
import platform
import re
import subprocess
from typing import Any, Mapping, Sequence

import numpy as np

from rarejax.atomic_io import write_atomic
from rarejax.evaluate import benchmarks as benchmarks_lib
from rarejax.evaluate import methods as methods_lib
from rarejax.evaluate import metrics

SCHEMA = "rarejax.evaluate.metrics/1"
KS = (1, 3, 5, 10)
FEW_FINDINGS = 3
STYLE_SLICE = "style:"  # prefix of the per-style slices
FINDING_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 8), (9, 12), (13, 10**9))
CALIBRATION_BINS = 10
PACKAGES = ("rarejax", "numpy", "scipy", "matplotlib", "jax", "flax", "phenopackets", "rapidfuzz")
TSV_COLUMNS = ("benchmark", "case_id", "method", "gold_ids", "gold_rank", "n_findings", "rank",
               "disease_id", "label", "score", "confidence")


@dataclasses.dataclass
class MethodResult:
  """One method on one benchmark: outputs and gold ranks aligned with the benchmark's cases
  (None where the method does not apply to the case)."""
  name: str
  config: Mapping[str, Any]
  outputs: list[methods_lib.MethodOutput | None]
  gold_ranks: list[int | None]

  @property
  def applied(self) -> np.ndarray:
    """bool [N] cases the method answered."""
    return np.array([o is not None for o in self.outputs], dtype=bool)


@dataclasses.dataclass
class BenchmarkResult:
  """All methods on one benchmark, with what slicing needs per case."""
  benchmark: benchmarks_lib.Benchmark
  methods: list[MethodResult]
  n_findings: list[int]  # observed findings per case (structured, else recognized in the note)
  seen: list[bool] | None  # gold disease among the training diseases; None when not known
  annotated: list[bool] | None = None  # gold disease annotated in the knowledge; None: not known

  def slices(self) -> dict[str, np.ndarray]:
    """Slice name → bool [N] mask over the cases."""
    n = len(self.benchmark.cases)
    out = {"all": np.ones(n, dtype=bool)}
    if self.seen is not None:
      out["seen"] = np.array(self.seen, dtype=bool)
      out["unseen"] = ~out["seen"]
    if self.annotated is not None:
      out["unannotated"] = ~np.array(self.annotated, dtype=bool)
    out["few_findings"] = np.array(self.n_findings) <= FEW_FINDINGS
    styles = [case.provenance.get("renderer", {}).get("style") for case in self.benchmark.cases]
    if len(set(styles) - {None}) > 1:
      for style in sorted(set(styles) - {None}):
        out[STYLE_SLICE + style] = np.array([s == style for s in styles])
    return out


# ---- numbers ---------------------------------------------------------------------------------


def topk_curve(gold_ranks: Sequence[int | None], max_k: int) -> list[float]:
  """Fraction of cases with gold rank ≤ k, for k = 1..max_k."""
  ranks = np.array([np.inf if r is None else r for r in gold_ranks], dtype=np.float64)
  return [float((ranks <= k).mean()) for k in range(1, max_k + 1)] if len(ranks) else []


def by_findings(gold_ranks: Sequence[int | None], n_findings: Sequence[int]) -> list[dict]:
  """Top-1 and top-10 per bin of the number of observed findings (empty bins left out)."""
  ranks = np.array([np.inf if r is None else r for r in gold_ranks], dtype=np.float64)
  counts = np.asarray(n_findings)
  rows = []
  for low, high in FINDING_BINS:
    mask = (counts >= low) & (counts <= high)
    if mask.any():
      rows.append({"bin": _bin_label(low, high), "n": int(mask.sum()),
                   "top1": float((ranks[mask] <= 1).mean()),
                   "top10": float((ranks[mask] <= 10).mean())})
  return rows


def _bin_label(low: int, high: int) -> str:
  return str(low) if low == high else (f"{low}+" if high >= 10**9 else f"{low}-{high}")


def calibration(outputs: Sequence[methods_lib.MethodOutput], gold_ranks: Sequence[int | None],
                n_bins: int = CALIBRATION_BINS) -> dict | None:
  """Reliability of stated confidences over all candidates (correct = the gold candidate);
  None when no candidate has a confidence."""
  pairs = [(c.confidence, rank == gold)
           for output, gold in zip(outputs, gold_ranks)
           for rank, c in enumerate(output.candidates, 1) if c.confidence is not None]
  if not pairs:
    return None
  confidence = np.clip(np.array([p[0] for p in pairs], dtype=np.float64), 0.0, 1.0)
  correct = np.array([p[1] for p in pairs], dtype=np.float64)
  which = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
  bins = []
  ece = 0.0
  for b in range(n_bins):
    mask = which == b
    if mask.any():
      mean_conf, accuracy = float(confidence[mask].mean()), float(correct[mask].mean())
      ece += mask.mean() * abs(mean_conf - accuracy)
      bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "n": int(mask.sum()),
                   "confidence": mean_conf, "accuracy": accuracy})
  return {"n_candidates": len(pairs), "ece": float(ece), "bins": bins}


def _summary(gold_ranks: Sequence[int | None], n_bootstrap: int, seed: int) -> dict:
  if not gold_ranks:
    return {"n": 0}
  estimates = metrics.summarize(gold_ranks, ks=KS, n_bootstrap=n_bootstrap, seed=seed)
  return {"n": len(gold_ranks), **{k: e.as_dict() for k, e in estimates.items()}}


def method_metrics(result: BenchmarkResult, method: MethodResult, n_bootstrap: int = 1000,
                   seed: int = 0) -> dict:
  """Metrics of one method on one benchmark: per slice, curves, calibration."""
  applied = method.applied
  ranks = [r for r, a in zip(method.gold_ranks, applied) if a]
  outputs = [o for o in method.outputs if o is not None]
  findings = [n for n, a in zip(result.n_findings, applied) if a]
  max_k = max([len(o.candidates) for o in outputs] + [max(KS)])
  return {
      "config": dict(method.config),
      "n_applicable": int(applied.sum()),
      "well_formed_rate": float(np.mean([o.well_formed for o in outputs])) if outputs else None,
      "flags": dict(sorted(collections.Counter(f for o in outputs for f in o.flags).items())),
      "metrics": {name: _summary([r for r, m, a in zip(method.gold_ranks, mask, applied) if m and a],
                                 n_bootstrap, seed)
                  for name, mask in result.slices().items()},
      "topk_curve": topk_curve(ranks, max_k),
      "by_findings": by_findings(ranks, findings),
      "calibration": calibration(outputs, ranks),
  }


def metrics_json(results: Sequence[BenchmarkResult], provenance: Mapping[str, Any],
                 n_bootstrap: int = 1000, seed: int = 0) -> dict:
  """The whole metrics document (see module docstring)."""
  out = {"schema": SCHEMA, "provenance": dict(provenance), "ks": list(KS),
         "few_findings_max": FEW_FINDINGS, "benchmarks": {}}
  for result in results:
    bench = result.benchmark
    out["benchmarks"][bench.name] = {
        "source": bench.source, "config": dict(bench.config), "n_cases": len(bench.cases),
        "n_excluded_publications": len(bench.exclude_pmids),
        "slices": {k: int(v.sum()) for k, v in result.slices().items()},
        "methods": {m.name: method_metrics(result, m, n_bootstrap, seed) for m in result.methods},
    }
  return out


# ---- files -----------------------------------------------------------------------------------


def _tsv_cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return re.sub(r"[\t\r\n]+", " ", str(value))


def _tsv(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> str:
  lines = ["\t".join(columns)] + ["\t".join(map(_tsv_cell, row)) for row in rows]
  return "\n".join(lines) + "\n"


def case_rows(results: Sequence[BenchmarkResult]) -> list[tuple]:
  """Rows of cases.tsv (TSV_COLUMNS); a case a method answered with nothing gets one empty row."""
  rows = []
  for result in results:
    for method in result.methods:
      for case, output, gold, findings in zip(result.benchmark.cases, method.outputs,
                                              method.gold_ranks, result.n_findings):
        if output is None:
          continue
        head = (result.benchmark.name, case.id, method.name, ",".join(case.gold_ids), gold,
                findings)
        if not output.candidates:
          rows.append(head + (None,) * 5)
        for rank, c in enumerate(output.candidates, 1):
          rows.append(head + (rank, c.disease_id, c.label, c.score, c.confidence))
  return rows


def safe_name(text: str) -> str:
  """A file-name-safe version of an id or name."""
  return re.sub(r"[^\w.-]+", "_", text).strip("_") or "unnamed"


def write_responses(folder: pathlib.Path, results: Sequence[BenchmarkResult]) -> int:
  """One JSON-lines file per (benchmark, method) that wrote text; returns how many."""
  count = 0
  for result in results:
    for method in result.methods:
      rows = [{"case_id": case.id, "gold_ids": list(case.gold_ids), "gold_rank": gold,
               "well_formed": output.well_formed, "flags": list(output.flags),
               "response": output.raw_text}
              for case, output, gold in zip(result.benchmark.cases, method.outputs,
                                            method.gold_ranks)
              if output is not None and output.raw_text is not None]
      if rows:
        target = folder / safe_name(result.benchmark.name) / f"{safe_name(method.name)}.jsonl"
        write_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        count += 1
  return count


# ---- plots -----------------------------------------------------------------------------------


def _figure_bytes(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  return buffer.getvalue()


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  return pyplot


def _styles(names: Sequence[str]) -> dict[str, dict]:
  """One colour per base method, solid lines for text mode and dashed for oracle mode."""
  colours = {}
  out = {}
  for name in names:
    base, _, mode = name.partition(".")
    colours.setdefault(base, f"C{len(colours) % 10}")
    out[name] = {"color": colours[base], "linestyle": "--" if mode == "oracle" else "-",
                 "marker": "o", "markersize": 3}
  return out


def _legend_outside(ax) -> None:
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)


def plot_topk(bench: str, methods: Mapping[str, dict]) -> bytes:
  """Top-k accuracy curves, one line per method."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.2))
  styles = _styles(list(methods))
  for name, m in methods.items():
    curve = m["topk_curve"]
    ax.plot(range(1, len(curve) + 1), curve, label=f"{name} (n={m['n_applicable']})",
            **styles[name])
  ax.set(xlabel="k", ylabel="top-k accuracy", title=f"{bench}: gold disease within the top k",
         ylim=(0, 1))
  ax.grid(alpha=0.3)
  _legend_outside(ax)
  data = _figure_bytes(fig)
  plt.close(fig)
  return data


def plot_by_findings(bench: str, methods: Mapping[str, dict]) -> bytes:
  """Top-1 and top-10 by number of observed findings, one line per method."""
  plt = _pyplot()
  labels = [_bin_label(low, high) for low, high in FINDING_BINS]
  sizes: dict[str, int] = {}
  for m in methods.values():
    for row in m["by_findings"]:
      sizes.setdefault(row["bin"], row["n"])
  shown = [label for label in labels if label in sizes]
  position = {label: i for i, label in enumerate(shown)}
  fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
  styles = _styles(list(methods))
  for ax, key in zip(axes, ("top1", "top10")):
    for name, m in methods.items():
      rows = m["by_findings"]
      ax.plot([position[r["bin"]] for r in rows], [r[key] for r in rows], label=name,
              **styles[name])
    ax.set_xticks(range(len(shown)), [f"{b}\n(n={sizes[b]})" for b in shown], fontsize=8)
    ax.set(xlabel="observed findings in the case", title=f"{bench}: {key} by number of findings",
           ylim=(0, 1))
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy")
  _legend_outside(axes[1])
  data = _figure_bytes(fig)
  plt.close(fig)
  return data


def plot_calibration(bench: str, methods: Mapping[str, dict]) -> bytes:
  """Reliability diagram for the methods that state confidences."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
  for name, m in methods.items():
    bins = m["calibration"]["bins"]
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
            label=f"{name} (ECE {m['calibration']['ece']:.3f})")
  ax.set(xlabel="stated confidence", ylabel="fraction correct", xlim=(0, 1), ylim=(0, 1),
         title=f"{bench}: calibration")
  ax.grid(alpha=0.3)
  _legend_outside(ax)
  data = _figure_bytes(fig)
  plt.close(fig)
  return data


def write_plots(folder: pathlib.Path, doc: Mapping) -> dict[str, dict[str, str]]:
  """PNG plots per benchmark; returns benchmark → plot kind → path relative to the report."""
  written: dict[str, dict[str, str]] = {}
  for bench, entry in doc["benchmarks"].items():
    methods = {n: m for n, m in entry["methods"].items() if m["n_applicable"]}
    if not methods:
      continue
    plots = {"topk": plot_topk(bench, methods), "findings": plot_by_findings(bench, methods)}
    confident = {n: m for n, m in methods.items() if m["calibration"]}
    if confident:
      plots["calibration"] = plot_calibration(bench, confident)
    written[bench] = {}
    for kind, data in plots.items():
      relative = f"plots/{safe_name(bench)}_{kind}.png"
      write_atomic(folder / relative, data)
      written[bench][kind] = relative
  return written


# ---- markdown --------------------------------------------------------------------------------


def _cell(summary: Mapping, key: str, interval: bool = False) -> str:
  if not summary.get("n") or key not in summary:
    return "–"
  e = summary[key]
  return (f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" if interval
          else f"{e['value']:.3f}")


def main_table(methods: Mapping[str, dict]) -> list[str]:
  lines = ["| method | n | top-1 [95% CI] | top-3 | top-5 | top-10 [95% CI] | MRR | found |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, m in methods.items():
    s = m["metrics"]["all"]
    lines.append(f"| {name} | {s.get('n', 0)} | {_cell(s, 'top1', True)} | {_cell(s, 'top3')} | "
                 f"{_cell(s, 'top5')} | {_cell(s, 'top10', True)} | {_cell(s, 'mrr')} | "
                 f"{_cell(s, 'found')} |")
  return lines


def _slice_table(methods: Mapping[str, dict], names: Sequence[str],
                 slices: Mapping[str, int]) -> list[str]:
  """top-1 / top-10 of every method on each of the slices `names`."""
  lines = ["| method | " + " | ".join(f"{s} (n={slices[s]}) top-1 / top-10" for s in names) + " |",
           "| --- |" + " --- |" * len(names)]
  for name, m in methods.items():
    cells = [f"{_cell(m['metrics'][s], 'top1')} / {_cell(m['metrics'][s], 'top10')}"
             for s in names]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines


def _gap_table(methods: Mapping[str, dict]) -> list[str]:
  """Oracle minus text for every base method run in both modes."""
  lines = []
  for name, m in methods.items():
    base, _, mode = name.partition(".")
    other = methods.get(f"{base}.text")
    if mode != "oracle" or other is None:
      continue
    o, t = m["metrics"]["all"], other["metrics"]["all"]
    if not o.get("n") or not t.get("n"):
      continue
    gap = lambda k: o[k]["value"] - t[k]["value"]
    lines.append(f"| {base} | {o['top1']['value']:.3f} | {t['top1']['value']:.3f} | "
                 f"{gap('top1'):+.3f} | {o['top10']['value']:.3f} | {t['top10']['value']:.3f} | "
                 f"{gap('top10'):+.3f} |")
  if not lines:
    return []
  return ["| method | top-1 oracle | top-1 text | gap | top-10 oracle | top-10 text | gap |",
          "| --- | --- | --- | --- | --- | --- | --- |", *lines]


def _model_lines(methods: Mapping[str, dict]) -> list[str]:
  """One line per model method: checkpoint, answer format, flags, training-knowledge check."""
  lines = []
  for name, m in methods.items():
    config = m["config"]
    if config.get("kind") != "model" or not m["n_applicable"]:
      continue
    flags = ", ".join(f"{k} {v}" for k, v in m["flags"].items()) or "none"
    check = config.get("knowledge_check", {})
    lines.append(f"- `{name}`: checkpoint `{config['checkpoint']}`; well-formed answers "
                 f"{m['well_formed_rate']:.1%}; flagged answers: {flags}; training knowledge: "
                 f"{check.get('status', 'unverified')} ({check.get('detail', 'not checked')}). "
                 f"Confidence = {config['confidence']}.")
  return lines + [""] if lines else []


def markdown(doc: Mapping, plots: Mapping[str, Mapping[str, str]]) -> str:
  """The human-readable report."""
  prov = doc["provenance"]
  lines = ["# Evaluation report", "",
           f"Written {prov.get('written_at', '')} — git `{prov.get('git', {}).get('commit', '?')}`"
           f"{' (uncommitted changes)' if prov.get('git', {}).get('dirty') else ''}; "
           f"evaluation knowledge `{prov.get('knowledge', {}).get('digest', '?')}` "
           f"({prov.get('knowledge', {}).get('n_excluded_pmids', 0)} publications excluded).", "",
           "Gold ranks are ID-grounded (exact-match equivalents count); a method's list holds its "
           "top-k candidates, so MRR and found-rate are over those. Intervals: 95% bootstrap "
           "over cases. Modes: *oracle* = the case's structured HPO terms, *text* = HPO concepts "
           "recognized in the note.", ""]
  for bench, entry in doc["benchmarks"].items():
    methods = entry["methods"]
    lines += [f"## {bench}", "", f"{entry['source']}. {entry['n_cases']} cases; "
              f"{entry['n_excluded_publications']} of their publications excluded from the "
              "knowledge.", "", *main_table(methods), "", "Slices:", "",
              *_slice_table(methods, [s for s in entry["slices"] if s != "all"
                                      and not s.startswith(STYLE_SLICE)], entry["slices"]), ""]
    styles = [s for s in entry["slices"] if s.startswith(STYLE_SLICE)]
    if styles:
      lines += ["Note styles (the renderer's, rarejax.cases.render):", "",
                *_slice_table(methods, styles, entry["slices"]), ""]
    gap = _gap_table(methods)
    if gap:
      lines += ["Oracle phenotypes vs concepts recognized in the note:", "", *gap, ""]
    for kind, path in plots.get(bench, {}).items():
      lines += [f"![{bench} {kind}]({path})", ""]
    lines += _model_lines(methods)
    fusion = {n: m["config"] for n, m in methods.items() if "weights" in m["config"]}
    for name, config in fusion.items():
      lines.append(f"- `{name}`: weights {config['weights']}, k={config['k']}, chosen on "
                   f"{config['n_tuning_cases']} tuning cases (tuning MRR "
                   f"{config['tuning_mrr']:.3f}).")
    lines.append("")
  lines += ["## Inputs and versions", "", "```json", json.dumps(prov, indent=2, default=str),
            "```", ""]
  return "\n".join(lines)


# ---- provenance and the whole run ----------------------------------------------------------


def git_state(folder: pathlib.Path | None = None) -> dict[str, Any]:
  """Commit and dirty flag of the repository holding this package (read-only git calls)."""
  folder = folder or pathlib.Path(__file__).resolve().parent
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                            capture_output=True, text=True, timeout=10, check=True).stdout
    return {"commit": commit, "dirty": bool(status.strip())}
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
  """Installed versions of the packages that shape the numbers (absent ones left out)."""
  out = {"python": platform.python_version()}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return out


def provenance(knowledge_stamps: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
  """Everything a reader needs to reproduce a run: knowledge, packages, git commit, config."""
  return {"written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "knowledge": knowledge_stamps.get("evaluation", {}),
          "knowledge_stamps": dict(knowledge_stamps), "versions": package_versions(),
          "git": git_state(), "config": dict(config)}


def write_report(folder: str | os.PathLike, results: Sequence[BenchmarkResult],
                 provenance_info: Mapping[str, Any], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, pathlib.Path]:
  """Writes every output of a run; returns name → path of what was written."""
  folder = pathlib.Path(folder)
  doc = metrics_json(results, provenance_info, n_bootstrap, seed)
  paths = {"metrics": folder / "metrics.json", "cases": folder / "cases.tsv",
           "report": folder / "report.md"}
  write_atomic(paths["metrics"], json.dumps(doc, indent=2, default=str))
  write_atomic(paths["cases"], _tsv(case_rows(results), TSV_COLUMNS))
  if write_responses(folder / "responses", results):
    paths["responses"] = folder / "responses"
  plots = write_plots(folder, doc)
  write_atomic(paths["report"], markdown(doc, plots))
  return paths
