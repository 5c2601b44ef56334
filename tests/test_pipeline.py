"""Integration: the tiny pipeline (data → cpt → sft → eval) runs, resumes, skips and guards its workdir."""
import json
import pathlib

import pytest

from rarejax import main as main_lib
from rarejax.train import pipeline_stage as train_stages
from rarejax.train import writers

pytestmark = pytest.mark.integration

TINY = ["--gin_file", "experiments/tiny.gin", "--gin_bindings", "LoopConfig.checkpoint_every = 2"]


def _run(workdir, *extra):
  return main_lib.main(["--workdir", str(workdir), *TINY, *extra])


# A model answering first with one disease-id piece (the full recipe's answer).
ID_PIECES = ["DataSpec.id_pieces = True", "DataSpec.answer = 'id'", "DataSpec.reasoning = 'none'",
             "DataSpec.instruction = 'none'", "DataSpec.n_ranked = 1"]


def _bound(bindings):
  """--gin_bindings flags for each binding."""
  return [flag for binding in bindings for flag in ("--gin_bindings", binding)]


def _losses(folder):
  return [r["train/loss"] for r in writers.read_metrics(folder) if "train/loss" in r]


def test_pipeline_runs_resumes_and_skips(tmp_path, monkeypatch, capsys):
  straight = tmp_path / "straight"
  assert _run(straight) == 0
  results = {s: json.loads((straight / s / "result.json").read_text())
             for s in ("data", "cpt", "sft", "eval")}
  cpt_losses = _losses(straight / "cpt")
  assert len(cpt_losses) == 6 and cpt_losses[-1] < cpt_losses[0]
  assert results["sft"]["steps"] == 6 and results["cpt"]["stopped"] == "completed"
  evaluated = results["eval"]
  for method in ("model.cpt", "model.sft", "resnik.oracle", "resnik.text",
                 "likelihood_ratio.oracle", "case_resnik.oracle", "rrf.text",
                 "resnik.oracle.all_omim"):
    assert 0.0 <= evaluated[method]["top1"] <= evaluated[method]["top10"] <= 1.0, method
  assert evaluated["resnik.oracle"]["top1"] > 0  # 4 diseases: the oracle ranker finds some
  assert evaluated["n_cases"] == 4  # the test split: one draw per disease, apart from validation
  report = (straight / "eval" / "report" / "report.md").read_text()
  assert "model.sft" in report and "resnik.text" in report
  assert (straight / "operative_config.gin").read_text().count("num_steps") >= 2

  # Kill cpt after its step-4 checkpoint (the batch iterator dies), then run again: it resumes.
  # This run's workdir is given relative to the current directory.
  monkeypatch.chdir(tmp_path)
  killed = pathlib.Path("killed")
  original = train_stages._batches_for

  def dying(*args, **kwargs):
    batches_from = original(*args, **kwargs)
    def from_step(start):
      for step, batch in enumerate(batches_from(start), start):
        if step == 4:
          raise KeyboardInterrupt("simulated kill")
        yield batch
    return from_step
  monkeypatch.setattr(train_stages, "_batches_for", dying)
  with pytest.raises(KeyboardInterrupt):
    _run(killed)
  monkeypatch.setattr(train_stages, "_batches_for", original)
  assert not (killed / "cpt" / "result.json").exists()
  assert _run(killed) == 0
  assert _losses(killed / "cpt")[-1] == cpt_losses[-1]
  killed_sft = json.loads((killed / "sft" / "result.json").read_text())
  assert killed_sft["train"]["loss"] == results["sft"]["train"]["loss"]
  # Recorded paths are absolute: valid from any directory (e.g. an ablation arm's).
  assert killed_sft["export"] == str(tmp_path / "killed" / "sft" / "export")

  # A complete workdir is skipped; a different config is refused; a typo fails before work.
  capsys.readouterr()
  assert _run(straight) == 0
  assert "already complete" not in capsys.readouterr().out  # logged, not printed
  assert _run(straight, "--gin_bindings", "CPT_STEPS = 7") == 2
  assert "different config" in capsys.readouterr().err
  assert _run(tmp_path / "typo", "--gin_bindings", "cpt/LoopConfig.num_stepz = 7") == 2
  assert "num_stepz" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_an_id_piece_sft_export_carries_its_answer_prior_and_trains_soft_targets(tmp_path):
  """A model answering first with id pieces: its sft export gets the training answers' prior,
  over exactly the diseases it was trained to name; with soft targets, every diagnosis example
  gets the Resnik teacher's row, aligned with its cached target, and the loss reads them."""
  bindings = ["run_pipeline.stages = ['data', 'sft']", *ID_PIECES,
              "sft/train_batches.soft_targets = @SoftTargets()", "SoftTargets.k = 3"]
  assert _run(tmp_path, *_bound(bindings)) == 0
  metas = [json.loads(p.read_text()) for p in
           (tmp_path / "data" / "token_cache").glob("*/train/soft-resnik-k3-t0.5/meta.json")]
  assert len(metas) == 1  # the simulated diagnosis task; knowledge QA gets none
  assert metas[0]["agreement"] == 1.0 and metas[0]["examples"] == 12  # 4 diseases x 3 patients
  soft_ce = [r["train/soft_ce"] for r in writers.read_metrics(tmp_path / "sft")
             if "train/soft_ce" in r]
  assert soft_ce and all(v > 0 for v in soft_ce)
  from rarejax.sample import answer_prior  # pylint: disable=import-outside-toplevel
  prior = answer_prior.read(tmp_path / "sft" / "export")
  simulated = json.loads((tmp_path / "data" / "result.json").read_text())
  assert prior is not None and sum(prior.values()) == pytest.approx(1.0)
  assert len(prior) == 4 and all(k.startswith(("OMIM:", "ORPHA:")) for k in prior), prior
  assert simulated["vocab_size"] > 600  # the id pieces grew the vocabulary



def test_ranker_hints_end_the_same_prompts_in_training_and_inference(tmp_path):
  """With ranker hints, the sft stage builds them for the diagnosis task (not knowledge QA), the
  export records them, the eval stage evaluates it, and the model's prompt for a training note
  at inference is exactly that cached example's prompt after BOS: the same hints in both."""
  from rarejax import experiment  # pylint: disable=import-outside-toplevel
  from rarejax import export as export_lib  # pylint: disable=import-outside-toplevel
  from rarejax.data import cached_batches, ranker_hints  # pylint: disable=import-outside-toplevel
  from rarejax.evaluate import model_method  # pylint: disable=import-outside-toplevel
  bindings = ["run_pipeline.stages = ['data', 'sft', 'eval']", *ID_PIECES,
              "sft/train_batches.ranker_hints = @RankerHints()", "RankerHints.k = 3"]
  assert _run(tmp_path, *_bound(bindings)) == 0
  metas = [json.loads(p.read_text()) for p in
           (tmp_path / "data" / "token_cache").glob("*/train/hints-resnik-k3/meta.json")]
  assert len(metas) == 1 and metas[0]["examples"] == 12  # 4 diseases x 3 simulated patients
  assert metas[0]["gold_among_hints"] > 0 and metas[0]["mean_hints"] == 3
  model = export_lib.load_model(tmp_path / "sft" / "export")
  assert ranker_hints.RankerHints.from_metadata(model.metadata) == ranker_hints.RankerHints(k=3)
  evaluated = json.loads((tmp_path / "eval" / "result.json").read_text())
  assert 0.0 <= evaluated["model.sft"]["top10"] <= 1.0
  main_lib.parse_config(["experiments/tiny.gin"], ["LoopConfig.checkpoint_every = 2", *bindings])
  kb, data, names = experiment.experiment_data(tmp_path)
  split = cached_batches.open_split(
      cached_batches.split_dir(data.data_dir, names["diagnosis"], "train"),
      hints=ranker_hints.RankerHints(k=3))
  method = model_method.ModelMethod(model, experiment.grounding_index(kb), hint_knowledge=kb)
  for i, row in enumerate(experiment.simulated_rows(data, "train")):
    tokens, cut = method.prompt_tokens(row["note"])
    assert not cut and tokens[1:] == split.example(i)[0].tolist(), i
    assert method.hints.tokens(row["note"])[-3:] == tokens[-3:]
  with pytest.raises(ValueError, match="hint_knowledge"):
    model_method.ModelMethod(model, experiment.grounding_index(kb))
