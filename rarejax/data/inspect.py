"""Command: build the data for a knowledge base, inspect one task (counts, token lengths, examples).

  python -m rarejax.data.inspect --workdir /tmp/rj --task diagnosis --diseases 50
  python -m rarejax.data.inspect --workdir /tmp/rj --task knowledge_lm --sequence_length 512

--task is a role of stage.register_tasks (knowledge_lm, knowledge_qa, diagnosis,
diagnosis_final, prompts, prompts_final, sft_mixture, real_diagnosis, real_prompts) or a
registered task name. Prints example counts, a histogram of prompt/response/total token
lengths, how many examples exceed the sequence length, the packing efficiency, and a few
decoded examples; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Sequence

import numpy as np

from rarejax import knowledge
from rarejax.data import batches
from rarejax.data import packing
from rarejax.data import stage

import seqio  # pylint: disable=g-bad-import-order  (tf_setup ran through the imports above)

BIN_EDGES = (0, 64, 128, 256, 512, 1024, 2048, 4096)
BAR_WIDTH = 40


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m rarejax.data.inspect", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="datasets go to WORKDIR/data")
  parser.add_argument("--task", default="diagnosis", help="role or registered task name")
  parser.add_argument("--split", default="train")
  parser.add_argument("--diseases", type=int, default=50, help="OMIM subset size (0 = all)")
  parser.add_argument("--n_train", type=int, default=10, help="simulated patients per disease")
  parser.add_argument("--n_validation", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--vocab_size", type=int, default=8192)
  parser.add_argument("--tokenizer", default="", help="pretrained .model or tokenizer.json")
  parser.add_argument("--exclude_pmids", default="", help="comma-separated PMIDs to exclude")
  parser.add_argument("--phenopackets", nargs="*", default=[], help="real phenopacket sources")
  parser.add_argument("--texts", nargs="*", default=[], help="case-text files or folders")
  parser.add_argument("--sequence_length", type=int, default=1024)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--max_examples", type=int, default=5000, help="examples measured")
  parser.add_argument("--show", type=int, default=2, help="decoded examples printed")
  parser.add_argument("--json", default="", help="write the numbers to this file")
  return parser.parse_args(argv)


def histogram(lengths: np.ndarray) -> list[tuple[str, int]]:
  """(bin label, count) over BIN_EDGES, last bin open-ended."""
  edges = (*BIN_EDGES, np.inf)
  counts = np.histogram(lengths, bins=edges)[0] if len(lengths) else np.zeros(len(BIN_EDGES))
  labels = [f"{lo}-{hi - 1}" if np.isfinite(hi) else f"{lo}+" for lo, hi in zip(edges, edges[1:])]
  return list(zip(labels, (int(c) for c in counts)))


def length_summary(lengths: np.ndarray) -> dict[str, float]:
  """Mean, median, 90th percentile and maximum of token lengths."""
  if not len(lengths):
    return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "max": 0.0}
  return {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
          "p90": float(np.percentile(lengths, 90)), "max": float(lengths.max())}


def measure(task: str, split: str, sequence_length: int, batch_size: int,
            max_examples: int) -> dict:
  """Counts, lengths and packing efficiency of up to max_examples examples of one split."""
  shard = seqio.ShardInfo(index=0, num_shards=1)
  prompt_lengths, response_lengths = [], []
  for example in batches.get_examples(task, split, shard_info=shard):
    prompt_lengths.append(len(example["inputs"]))
    response_lengths.append(len(example["targets"]))
    if len(prompt_lengths) >= max_examples:
      break
  prompts, responses = np.array(prompt_lengths), np.array(response_lengths)
  totals = prompts + responses
  stats = packing.PackStats()
  rows = 0
  for batch in batches.get_batches(task, sequence_length, batch_size, split, shard, pack=True,
                                   num_epochs=1, shuffle=False, stats=stats):
    rows += batch["targets"].shape[0]
    if stats.examples >= max_examples:
      break
  return {
      "task": task, "split": split, "examples": len(totals), "sequence_length": sequence_length,
      "prompt_tokens": length_summary(prompts), "response_tokens": length_summary(responses),
      "total_tokens": length_summary(totals), "histogram_total": histogram(totals),
      "over_sequence_length": int((totals > sequence_length).sum()),
      "packing": {"rows": stats.rows, "segments": stats.segments, "dropped": stats.dropped,
                  "chunked": stats.chunked,
                  "fill": stats.tokens / max(1, stats.rows * sequence_length)},
  }


def print_report(report: dict, out=None) -> None:
  """Prints counts, token-length summaries, the histogram and packing numbers."""
  out = out or sys.stdout
  print(f"task {report['task']} [{report['split']}]: {report['examples']} examples", file=out)
  for key in ("prompt_tokens", "response_tokens", "total_tokens"):
    s = report[key]
    print(f"  {key:16s} mean {s['mean']:7.1f}  p50 {s['p50']:6.0f}  p90 {s['p90']:6.0f}  "
          f"max {s['max']:6.0f}", file=out)
  peak = max([c for _, c in report["histogram_total"]] + [1])
  print("  total tokens per example:", file=out)
  for label, count in report["histogram_total"]:
    print(f"    {label:>10s} {count:6d} {'#' * round(BAR_WIDTH * count / peak)}", file=out)
  p = report["packing"]
  print(f"  longer than {report['sequence_length']}: {report['over_sequence_length']} "
        f"(dropped when prompted, chunked when plain LM)", file=out)
  print(f"  packed into {p['rows']} rows of {report['sequence_length']}: {p['segments']} segments, "
        f"fill {100 * p['fill']:.1f}%, dropped {p['dropped']}, chunked {p['chunked']}", file=out)


def show_examples(task: str, split: str, count: int, out=None) -> None:
  """Prints the first `count` examples decoded (prompt tail and response)."""
  out = out or sys.stdout
  provider = batches.provider_of(task)
  vocabulary = provider.output_features["targets"].vocabulary
  shard = seqio.ShardInfo(index=0, num_shards=1)
  for i, example in enumerate(batches.get_examples(task, split, shard_info=shard)):
    if i >= count:
      break
    prompt = vocabulary.decode(example["inputs"].tolist())
    response = vocabulary.decode(example["targets"].tolist())
    print(f"--- example {i} ({len(example['inputs'])} + {len(example['targets'])} tokens) ---",
          file=out)
    print(f"[prompt, last 400 chars] ...{prompt[-400:]}" if prompt else "[no prompt]", file=out)
    print(f"[response] {response}", file=out)


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the command; returns the report dict."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  exclude = [p for p in args.exclude_pmids.split(",") if p.strip()]
  kb = knowledge.load_knowledge(exclude_pmids=exclude)
  spec = stage.DataSpec(n_diseases=args.diseases or None, seed=args.seed, n_train=args.n_train,
                        n_validation=args.n_validation, vocab_size=args.vocab_size,
                        tokenizer=args.tokenizer, phenopackets=tuple(args.phenopackets),
                        texts=tuple(args.texts))
  data = stage.prepare_data(kb, pathlib.Path(args.workdir) / "data", spec)
  names = stage.register_tasks(data)
  task = names.get(args.task, args.task)
  print(f"knowledge {kb.version.digest} ({len(exclude)} PMIDs excluded); vocabulary "
        f"{data.vocabulary_path}")
  report = measure(task, args.split, args.sequence_length, args.batch_size, args.max_examples)
  print_report(report)
  show_examples(task, args.split, args.show)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
  return report


if __name__ == "__main__":
  main()
