"""The 'eval' stage of the pipeline, registered here: every export and the classical rankers on held-out simulated notes."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import gin

from rarejax import cases
from rarejax import experiment
from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import pipeline
from rarejax.data import builders
from rarejax.evaluate import benchmarks as benchmarks_lib
from rarejax.evaluate import generation, model_method
from rarejax.evaluate import methods as methods_lib
from rarejax.evaluate import report as report_lib
from rarejax.evaluate import run as run_lib
from rarejax.phenotypes import concepts


@gin.configurable(denylist=["ctx"])
def eval_stage(ctx: pipeline.StageContext, num_cases: int = 100,
               rankers: Sequence[str] = methods_lib.DEFAULT_CLASSICAL,
               modes: Sequence[str] = methods_lib.MODES, max_new_tokens: int = 512,
               batch_size: int = 100, n_bootstrap: int = 1000,
               model_stages: Sequence[str] = ()) -> dict:
  """Held-out simulated notes (the 'test' split, which nothing before this stage reads): the
  export of every earlier stage (greedy) next to classical rankers over the experiment's
  diseases — reading the structured phenotypes ('oracle') and the HPO concepts recognized in the
  note ('text') — plus, when the experiment has a subset of the diseases, oracle Resnik over every
  disease ('resnik.oracle.all_omim'), all through the one report path. The case-based rankers
  search the simulated training cases (what the model learned from); the fusions' weights are
  chosen on the validation split. `rankers` default to methods.DEFAULT_CLASSICAL
  (methods.CLASSICAL adds the older kNN and fusion).

  `model_stages` limits the models to those stages' exports (default: every export).
  Writes the evaluation report to <stage>/report/ (metrics.json with bootstrap intervals,
  report.md with plots, cases.tsv, PhEval files, responses) and a summary to metrics.json.
  """
  kb, data, _ = experiment.experiment_data(ctx.workdir)
  rows = experiment.held_out_cases(data, num_cases, "test")
  cases = tuple(builders.case_from_example(r, "test") for r in rows)
  diseases = data.simulated.diseases or None
  bench = benchmarks_lib.Benchmark(
      "simulated_heldout", cases, from_publications=False,
      source=f"{len(cases)} held-out simulated notes ({data.simulated.name})",
      config={"n_diseases": len(diseases) if diseases else "all OMIM"})
  index = experiment.grounding_index(kb)
  generation_config = generation.GenerationConfig(max_new_tokens=max_new_tokens)
  methods: list[methods_lib.Method] = [
      model_method.ModelMethod(export_lib.load_model(result["export"]), index,
                               generation_config, batch_size=batch_size,
                               instruction=data.spec.instruction, name=f"model.{stage}",
                               hint_knowledge=kb)
      for stage, result in ctx.results.items()
      if result.get("export") and (not model_stages or stage in model_stages)]
  recognizer = concepts.ConceptRecognizer.from_knowledge(kb)
  train_cases, tuning = (), None
  if set(rankers) & set(methods_lib.NEEDS_TRAINING_CASES):
    train_cases = _simulated_cases(data, "train")
    tuning = methods_lib.FusionTuning(kb, train_cases, _simulated_cases(data, "validation"))
  methods += methods_lib.classical_methods(kb, rankers, modes, train_cases, tuning,
                                           recognizer=recognizer, disease_ids=diseases)
  if diseases:  # the model's world vs every disease (without a subset, resnik.oracle is that)
    methods += [dataclasses.replace(method, suffix=".all_omim")
                for method in methods_lib.classical_methods(kb, ["resnik"], ["oracle"])]
  equivalence = knowledge.IdEquivalence({d.id: d.xrefs for d in kb.diseases.values()})
  results = run_lib.evaluate([bench], methods, equivalence, recognizer)
  config = {"num_cases": len(cases), "rankers_over": bench.config["n_diseases"],
            "max_new_tokens": max_new_tokens, "n_bootstrap": n_bootstrap}
  paths = report_lib.write_report(
      ctx.folder / "report", results, report_lib.provenance(
          {"evaluation": kb.version.as_dict()}, config), n_bootstrap=n_bootstrap)
  reported = json.loads(paths["metrics"].read_text())["benchmarks"][bench.name]["methods"]
  result = {"n_cases": len(cases), "report": str(paths["report"]),
            **{name: {k: m["metrics"]["all"][k]["value"] for k in ("top1", "top3", "top10", "mrr")}
               for name, m in reported.items()}}
  result["summary"] = ", ".join(f"{k} top1 {v['top1']:.3f} top10 {v['top10']:.3f}"
                                for k, v in result.items() if isinstance(v, dict))
  pipeline.write_json_atomically(ctx.folder / "metrics.json", result)
  return result


def _simulated_cases(data, split: str) -> tuple[cases.Case, ...]:
  return tuple(builders.case_from_example(r, split)
               for r in experiment.simulated_rows(data, split))


pipeline.register_stage("eval", eval_stage)
