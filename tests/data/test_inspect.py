"""The inspect command builds a tiny data set and reports counts, lengths and decoded examples."""
import json

from rarejax.data import inspect as inspect_cmd


def test_inspect_reports_counts_histogram_and_examples(tmp_path, capsys):
  out = tmp_path / "report.json"
  report = inspect_cmd.main(["--workdir", str(tmp_path), "--task", "knowledge_qa",
                             "--diseases", "3", "--n_train", "1", "--n_validation", "1",
                             "--vocab_size", "800", "--sequence_length", "256",
                             "--batch_size", "4", "--show", "1", "--json", str(out)])
  printed = capsys.readouterr().out
  assert report["examples"] > 0 and report["task"].startswith("rarejax_knowledge_qa_")
  assert sum(count for _, count in report["histogram_total"]) == report["examples"]
  assert 0 < report["packing"]["fill"] <= 1
  assert json.loads(out.read_text())["examples"] == report["examples"]
  assert "total tokens per example" in printed and "--- example 0" in printed
  assert "Question: " in printed and "[response]" in printed
