"""The quickstart ablations, each arm branching from a finished quickstart run with the same budget.

  .venv/bin/python experiments/ablations.py --base workdir/quickstart

  rers_vs_rejection     the base run's rers → trajectory_sft, next to an arm whose rers stage is
                        plain rejection sampling (SynthesisConfig.mode = 'rejection': K + R·M
                        samples per case, the most RERS may spend); both from the same sft model
  curriculum_vs_shuffled  the base run's rl (dual-level curriculum), next to an arm whose rl
                        stage draws cases shuffled (CurriculumConfig.mode = 'shuffled'), both from
                        the same trajectory_sft model and for the same number of RL steps

An arm copies the base run's completed stages it shares (their result.json point at the base
run's exports, which stay where they are), then runs the remaining stages with its bindings;
its eval stage evaluates only the arm's new model, on the same held-out notes as the base run.
Summaries go to --out/<ablation>.json (read by notebooks/ablation.ipynb) with the command lines.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

from rarejax import atomic_io

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("top1", "top3", "top10", "mrr")
ABLATIONS = {
    "rers_vs_rejection": {
        "title": "RERS vs plain rejection sampling (same sampling budget), after trajectory SFT",
        "shared": ("data", "cpt", "sft"), "stage": "rers", "model": "trajectory_sft",
        "base_arm": "rers", "arm": "rejection",
        "bindings": ["rers/SynthesisConfig.mode = 'rejection'",
                     "run_pipeline.stages = ['data', 'cpt', 'sft', 'rers', 'trajectory_sft', "
                     "'eval']", "eval_stage.model_stages = ['trajectory_sft']"]},
    "curriculum_vs_shuffled": {
        "title": "Dual-level curriculum vs shuffled RL (same RL steps), held-out notes",
        "shared": ("data", "cpt", "sft", "rers", "trajectory_sft"), "stage": "rl", "model": "rl",
        "base_arm": "curriculum", "arm": "shuffled",
        "bindings": ["rl/CurriculumConfig.mode = 'shuffled'",
                     "eval_stage.model_stages = ['rl']"]},
}


def _result(workdir: pathlib.Path, stage: str) -> dict:
  path = workdir / stage / "result.json"
  if not path.is_file():
    raise SystemExit(f"ablations: {path} is missing: run the quickstart to completion first "
                     f"(bash experiments/quickstart.sh), or pass its workdir with --base")
  return json.loads(path.read_text())


def _branch(base: pathlib.Path, arm: pathlib.Path, shared) -> None:
  arm.mkdir(parents=True, exist_ok=True)
  for stage in shared:
    if not (arm / stage / "result.json").is_file():
      shutil.rmtree(arm / stage, ignore_errors=True)
      shutil.copytree(base / stage, arm / stage, ignore=shutil.ignore_patterns("checkpoints"))


def _row(workdir: pathlib.Path, spec: dict) -> dict:
  evaluated = _result(workdir, "eval")[f"model.{spec['model']}"]
  stage = _result(workdir, spec["stage"])
  row = {k: round(evaluated[k], 3) for k in METRICS}
  row["stage_wall_s"] = round(stage.get("wall_seconds", float("nan")))
  for key in ("coverage", "n_trajectories"):
    if key in stage:
      row[key] = round(stage[key], 3) if isinstance(stage[key], float) else stage[key]
  if "summary" in stage:
    row["summary"] = stage["summary"][:80]
  return row


def run(name: str, base: pathlib.Path, out_root: pathlib.Path, gin_file: str) -> dict:
  spec = ABLATIONS[name]
  arm_dir = base.parent / f"{base.name}-{name}-{spec['arm']}"
  _branch(base, arm_dir, spec["shared"])
  command = [sys.executable, "-m", "rarejax.main", "--workdir", str(arm_dir), "--gin_file",
             gin_file] + [a for b in spec["bindings"] for a in ("--gin_bindings", b)]
  print(f"[{name}] {' '.join(command)}", flush=True)
  subprocess.run(command, check=True, cwd=ROOT)
  before = _result(base, "eval").get(f"model.{spec['shared'][-1]}")
  doc = {"title": spec["title"], "base": str(base), "arm_workdir": str(arm_dir),
         "command": command, "columns": [*METRICS, "stage_wall_s", "coverage", "n_trajectories"],
         "arms": {spec["base_arm"]: _row(base, spec), spec["arm"]: _row(arm_dir, spec)}}
  if before:
    doc["arms"] = {f"before ({spec['shared'][-1]})": {k: round(before[k], 3) for k in METRICS},
                   **doc["arms"]}
  atomic_io.write_atomic(out_root / f"{name}.json", json.dumps(doc, indent=2))
  return doc


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base", default="workdir/quickstart", help="a finished quickstart run")
  parser.add_argument("--gin_file", default="experiments/quickstart.gin")
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "ablations"))
  parser.add_argument("--only", choices=sorted(ABLATIONS), action="append")
  args = parser.parse_args(argv)
  base = pathlib.Path(args.base).resolve()
  _result(base, "eval")
  for name in args.only or ABLATIONS:
    doc = run(name, base, pathlib.Path(args.out), args.gin_file)
    print(f"\n{doc['title']}")
    for arm, row in doc["arms"].items():
      print(f"  {arm:24s} " + "  ".join(f"{k} {row[k]}" for k in METRICS if k in row))
  return 0


if __name__ == "__main__":
  sys.exit(main())
