"""The evaluation runner: benchmarks × methods under the honest protocol → metrics, per-case files, report.

  python -m rarejax.evaluate.run \\
      --benchmark phenopackets:../shared/data/phenopacket-store/phenopacket-store-dev.zip:validation \\
      --benchmark texts:../shared/data/case-texts/dev --benchmark simulated:100:2 \\
      --methods resnik,likelihood_ratio,case_resnik,rrf --modes oracle,text --out results/eval \\
      [--checkpoint WORKDIR/sft/export]      # adds the model ('model.text') to the methods

The protocol (DESIGN.md, "Honest evaluation"), all in one command:
  1. real benchmarks are read with the full knowledge (to map HPO ids and write notes);
  2. every annotation row citing an evaluated publication is excluded from the knowledge the
     methods use, with those of `--exclude_pmids` files and, when a model is evaluated, those
     its training knowledge excluded (like for like); simulated benchmarks are drawn from that
     knowledge;
  3. training cases (the training publications of a `phenopackets:PATH:validation` split, plus
     `--train_cases`) feed the case rankers and fusions; any from an evaluated publication is
     dropped;
  4. fusion weights are chosen on an inner publication split of the training cases
     (`--tuning_fraction`), with those tuning publications excluded from the tuning knowledge
     too — never on the evaluated cases;
  5. the unseen-disease slice is the cases whose gold disease has no training case;
  6. the model (`--checkpoint`) reads the same notes; its answers are grounded with the full
     knowledge's names. An export whose training knowledge did not exclude every evaluated
     publication (export_lib.knowledge_check) is refused before anything is written, unless
     `--allow_dishonest` (the report then marks it) — train it under the same protocol.
`evaluate` is the library entry point for any `methods.Method` (a model method included).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Collection, Sequence

import numpy as np
import tqdm

from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import release
from rarejax import startup
from rarejax.cases import INNER_SEED_OFFSET, Case, pmids, read_jsonl, split_by_publication
from rarejax.evaluate import benchmarks as benchmarks_lib
from rarejax.evaluate import generation
from rarejax.evaluate import methods as methods_lib
from rarejax.evaluate import model_method
from rarejax.evaluate import report as report_lib
from rarejax.knowledge import grounding
from rarejax.phenotypes import concepts
from rarejax.phenotypes import fasthpocr
from rarejax.phenotypes import recognizers

TRAIN_KINDS = ("phenopackets", "jsonl")
MODEL = "model"
METHOD_NAMES = (MODEL, *methods_lib.CLASSICAL)


def findings_count(case: Case, recognizer: concepts.Recognizer) -> int:
  """Observed findings of a case: its structured ones, else those recognized in the note."""
  return len(case.observed) if case.observed else len(recognizer.recognize(case.note).observed)


def gold_among(cases: Sequence[Case], disease_ids: Collection[str] | None,
               equivalence: grounding.IdEquivalence) -> list[bool] | None:
  """Per case: a gold disease (or an exact-match equivalent) is among `disease_ids` (None: None)."""
  if disease_ids is None:
    return None
  among = {e for d in disease_ids for e in equivalence.equivalents(d)}
  return [any(grounding.canonical_id(g) in among for g in c.gold_ids) for c in cases]


def evaluate(benchmarks: Sequence[benchmarks_lib.Benchmark],
             methods: Sequence[methods_lib.Method], equivalence: grounding.IdEquivalence,
             recognizer: concepts.Recognizer,
             seen_disease_ids: Collection[str] | None = None, batch_size: int = 64,
             progress: bool = True, annotated_disease_ids: Collection[str] | None = None
             ) -> list[report_lib.BenchmarkResult]:
  """Runs every method on every benchmark (cases in batches) and judges each output's gold rank;
  `seen_disease_ids` / `annotated_disease_ids` give the report its seen and unannotated slices."""
  names = [m.name for m in methods]
  if len(set(names)) != len(names):
    raise ValueError(f"method names must be unique, got {names}")
  total = sum(len(b.cases) for b in benchmarks) * len(methods)
  results = []
  with tqdm.tqdm(total=total, desc="evaluate", unit="case", disable=not progress,
                 mininterval=2, file=sys.stderr) as bar:
    for bench in benchmarks:
      method_results = []
      for method in methods:
        bar.set_postfix_str(f"{bench.name} / {method.name}")
        outputs = _run_method(method, bench.cases, batch_size, bar)
        ranks = [o.gold_rank(c.gold_ids, equivalence) if o is not None else None
                 for o, c in zip(outputs, bench.cases)]
        method_results.append(report_lib.MethodResult(method.name, dict(method.config), outputs,
                                                      ranks))
      results.append(report_lib.BenchmarkResult(
          bench, method_results, [findings_count(c, recognizer) for c in bench.cases],
          gold_among(bench.cases, seen_disease_ids, equivalence),
          gold_among(bench.cases, annotated_disease_ids, equivalence)))
  return results


def _run_method(method: methods_lib.Method, cases: Sequence[Case], batch_size: int,
                bar: tqdm.tqdm) -> list[methods_lib.MethodOutput | None]:
  outputs: list[methods_lib.MethodOutput | None] = [None] * len(cases)
  todo = [i for i, c in enumerate(cases) if method.applies(c)]
  bar.update(len(cases) - len(todo))
  for start in range(0, len(todo), batch_size):
    batch = todo[start:start + batch_size]
    answers = method.rank([cases[i] for i in batch])
    if len(answers) != len(batch):
      raise RuntimeError(f"method {method.name} returned {len(answers)} outputs for "
                         f"{len(batch)} cases")
    for i, answer in zip(batch, answers):
      outputs[i] = answer
    bar.update(len(batch))
  return outputs


# ---- the command line ----------------------------------------------------------------------


def _csv(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m rarejax.evaluate.run", description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Benchmarks: " + benchmarks_lib.__doc__.split("\n\n", 1)[1])
  parser.add_argument("--benchmark", action="append", required=True,
                      help="KIND:ARGS, repeatable (see below)")
  parser.add_argument("--methods", default=",".join(methods_lib.DEFAULT_CLASSICAL),
                      help=f"comma-separated subset of {','.join(METHOD_NAMES)} ('{MODEL}' is "
                      "added when --checkpoint is given)")
  parser.add_argument("--modes", default=",".join(methods_lib.MODES),
                      help=f"comma-separated subset of {','.join(methods_lib.MODES)} (classical "
                      "methods; the model always reads the note)")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--train_cases", action="append", default=[],
                      help="extra training cases for the case rankers and fusions: "
                      "phenopackets:PATH or jsonl:PATH")
  parser.add_argument("--validation_fraction", type=float, default=0.2,
                      help="publication fraction of a phenopackets:PATH:validation (or :inner) split")
  parser.add_argument("--tuning_fraction", type=float, default=0.2,
                      help="publication fraction of the training cases fusions are tuned on")
  parser.add_argument("--exclude_pmids", action="append", default=[], metavar="FILE",
                      help="file of PubMed ids (one per line, 'PMID:123' or '123', '#' comments) "
                      "also excluded from the evaluation knowledge; repeatable")
  parser.add_argument("--seed", type=int, default=0, help="split, simulation and tie-break seed")
  parser.add_argument("--limit", type=int, default=0,
                      help="evaluate at most this many cases per benchmark (random, by seed)")
  parser.add_argument("--top_k", type=int, default=10, help="candidates kept per case")
  parser.add_argument("--n_bootstrap", type=int, default=1000)
  parser.add_argument("--recognizer", choices=concepts.RECOGNIZERS, default="rarejax",
                      help="HPO concept recognizer of text mode: rarejax's own, or FastHPOCR "
                      "(the 'fasthpocr' extra; its index is built once, then cached); both "
                      "negate with rarejax's cues")
  parser.add_argument("--related_synonyms", action="store_true",
                      help="text mode also matches RELATED HPO synonyms (rarejax recognizer)")
  parser.add_argument("--ordo", default=None, help="ORDO JSON (names, definitions, xrefs)")
  parser.add_argument("--mondo_sssom", action="append", default=[],
                      help="MONDO exact-match SSSOM file (repeatable), for id equivalences")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  parser.add_argument("--verbose", action="store_true",
                      help="show the libraries' start-up messages (TensorFlow, XLA, absl, CUDA), "
                      "hidden by default (rarejax.startup)")
  model = parser.add_argument_group("the model (with --checkpoint)")
  model_method.add_model_flags(model, checkpoint_required=False)
  model.add_argument("--allow_dishonest", action="store_true",
                     help="evaluate an export whose training knowledge read evaluated "
                     "publications or cannot be checked (refused otherwise; the report marks it)")
  return parser


@dataclasses.dataclass
class _Inputs:
  """Everything loaded for a run, before any method runs."""
  kb_full: knowledge.KnowledgeBase
  kb_eval: knowledge.KnowledgeBase
  benchmarks: list[benchmarks_lib.Benchmark]
  train: list[Case]
  tuning: methods_lib.FusionTuning | None
  evaluated_pmids: list[str]
  notes: dict


def _load_knowledge(args, exclude: Sequence[str] = ()) -> knowledge.KnowledgeBase:
  return knowledge.load_knowledge(exclude_pmids=exclude, ordo_path=args.ordo,
                                  mondo_sssom_paths=args.mondo_sssom)


def _train_cases(spec: str, kb: knowledge.KnowledgeBase) -> list[Case]:
  parsed = benchmarks_lib.parse_spec(spec)
  if parsed.kind not in TRAIN_KINDS:
    raise ValueError(f"--train_cases {spec!r}: kind must be one of {TRAIN_KINDS}")
  if parsed.kind == "jsonl":
    cases, _ = read_jsonl(benchmarks_lib.require_path(parsed.path, "JSONL file"))
    return cases
  return list(benchmarks_lib.load_phenopackets(parsed.path, kb).cases)


def _limited(bench: benchmarks_lib.Benchmark, limit: int, seed: int) -> benchmarks_lib.Benchmark:
  if not limit or len(bench.cases) <= limit:
    return bench
  chosen = np.sort(np.random.default_rng(seed).choice(len(bench.cases), limit, replace=False))
  return dataclasses.replace(bench, cases=tuple(bench.cases[i] for i in chosen),
                             source=f"{bench.source}; {limit} drawn at random (seed {seed})")


def _unique_names(benches: list[benchmarks_lib.Benchmark]) -> list[benchmarks_lib.Benchmark]:
  seen: dict[str, int] = {}
  out = []
  for bench in benches:
    seen[bench.name] = seen.get(bench.name, 0) + 1
    out.append(bench if seen[bench.name] == 1 else
               dataclasses.replace(bench, name=f"{bench.name}_{seen[bench.name]}"))
  return out


def model_exclusions(metadata: dict | None) -> tuple[str, ...]:
  """The publications the evaluated export's training knowledge excluded, which the classical
  rankers then exclude too (like for like); () without a model. An older export that records
  them by count and hash only cannot be matched: a warning says so."""
  if metadata is None:
    return ()
  listed = export_lib.trained_exclusions(metadata)
  if listed is None:
    print("warning: the export records its knowledge exclusions by count and hash only (an older "
          "export): the classical rankers cannot be given the same knowledge", file=sys.stderr)
  return listed or ()


def _load_inputs(args, specs: Sequence[benchmarks_lib.BenchmarkSpec], need_tuning: bool,
                 metadata: dict | None = None) -> _Inputs:
  """Benchmarks, knowledge and training cases; the evaluation knowledge excludes the evaluated
  publications, those of the --exclude_pmids files and those the evaluated export excluded."""
  kb_full = _load_knowledge(args)
  real = [benchmarks_lib.load_spec(s, kb_full, args.validation_fraction, args.seed)
          for s in specs if not s.needs_evaluation_knowledge]
  extra = [c for spec in args.train_cases for c in _train_cases(spec, kb_full)]
  real = [_limited(b, args.limit, args.seed) for b in real]
  evaluated = benchmarks_lib.knowledge_exclusions(real)
  from_files = [p for path in args.exclude_pmids for p in knowledge.read_pmid_file(path)]
  from_model = model_exclusions(metadata)
  exclude = list(knowledge.normalize_pmids([*evaluated, *from_files, *from_model]))
  kb_eval = _load_knowledge(args, exclude)
  simulated = [_limited(benchmarks_lib.load_spec(s, kb_eval, seed=args.seed), args.limit,
                        args.seed) for s in specs if s.needs_evaluation_knowledge]
  evaluated_set, train, ids = set(evaluated), [], set()
  candidates = [c for b in real for c in b.train_cases] + extra
  for case in candidates:  # a case of an evaluated publication never trains a ranker
    if case.pmid not in evaluated_set and case.id not in ids:
      ids.add(case.id)
      train.append(case)
  notes = {"n_train_cases": len(train), "n_train_dropped": len(candidates) - len(train),
           "n_excluded_pmids": len(exclude), "n_evaluated_publications": len(evaluated),
           "n_excluded_from_files": len(set(from_files)),
           "n_excluded_from_model": len(from_model)}
  tuning = None
  if need_tuning and train:
    # one split below the training cases: below the inner split when an 'inner' benchmark's
    # training cases are the ones split (the same coins would leave no tuning case)
    depth = 2 if any(s.split == "inner" for s in specs) else 1
    inner = split_by_publication(train, args.tuning_fraction,
                                 args.seed + depth * INNER_SEED_OFFSET)
    inner_train = [c for c in inner if c.split == "train"]
    inner_val = [c for c in inner if c.split == "validation"]
    tuning = methods_lib.FusionTuning(_load_knowledge(args, exclude + pmids(inner_val)),
                                      inner_train, inner_val)
    notes.update(n_tuning_train=len(inner_train), n_tuning_cases=len(inner_val),
                 n_tuning_publications=len(pmids(inner_val)))
  return _Inputs(kb_full, kb_eval, _unique_names(real + simulated), train, tuning, evaluated,
                 notes)


def _validate(args, parser: argparse.ArgumentParser):
  """Checks the flags before anything is loaded; returns (specs, method names, modes)."""
  names, modes = _csv(args.methods), _csv(args.modes)
  if args.checkpoint and MODEL not in names:
    names.insert(0, MODEL)
  bad = ([f"method {n!r}" for n in names if n not in METHOD_NAMES] +
         [f"mode {m!r}" for m in modes if m not in methods_lib.MODES])
  if bad:
    parser.error(f"unknown {bad[0]}: methods are {','.join(METHOD_NAMES)}; modes are "
                 f"{','.join(methods_lib.MODES)}")
  if not names or not modes or len(set(names)) < len(names) or len(set(modes)) < len(modes):
    parser.error("--methods and --modes need at least one distinct entry each")
  _validate_model(args, parser, names)
  if args.recognizer == "fasthpocr":
    if args.related_synonyms:
      parser.error("--related_synonyms is an option of the rarejax recognizer (FastHPOCR always "
                   "indexes RELATED synonyms)")
    try:
      fasthpocr.require()
    except fasthpocr.MissingExtraError as err:
      parser.error(str(err))
  if not 0 < args.validation_fraction < 1 or not 0 < args.tuning_fraction < 1:
    parser.error("--validation_fraction and --tuning_fraction must be in (0, 1)")
  if args.top_k < 1 or args.limit < 0 or args.n_bootstrap < 1:
    parser.error("need --top_k >= 1, --limit >= 0 and --n_bootstrap >= 1")
  try:
    specs = [benchmarks_lib.parse_spec(s) for s in args.benchmark]
  except ValueError as err:
    parser.error(str(err))
  has_train = args.train_cases or any(s.split in ("validation", "inner") for s in specs)
  needing = [n for n in names if n in methods_lib.NEEDS_TRAINING_CASES]
  if needing and not has_train:
    parser.error(f"{','.join(needing)} need training cases: use phenopackets:PATH:validation "
                 "(or :inner) or --train_cases")
  return specs, names, modes


def _validate_model(args, parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
  """Checks the model flags and the export's files (cheap: nothing is loaded yet)."""
  if MODEL not in names:
    return
  if not args.checkpoint and not release.DEFAULT_RELEASE.is_dir():
    parser.error(f"method '{MODEL}' needs --checkpoint (a training stage's export folder); the "
                 f"default, the released model {release.DEFAULT_RELEASE}, is not there")
  args.checkpoint = args.checkpoint or str(release.DEFAULT_RELEASE)
  if not 0 <= args.think_tokens < args.max_new_tokens or args.model_batch_size < 1:
    parser.error("need 0 <= --think_tokens < --max_new_tokens and --model_batch_size >= 1")
  try:
    metadata = export_lib.read_metadata(args.checkpoint)
    export_lib.vocabulary_path(args.checkpoint, metadata, args.vocabulary)
    model_method.check_prior(args.checkpoint, metadata, args.prior_weight)
  except (FileNotFoundError, ValueError) as err:
    parser.error(str(err))


def honest_check(args, metadata: dict, inputs: _Inputs) -> dict[str, str]:
  """The export's training-knowledge check against the evaluated publications.

  Raises:
    ValueError: the export is not honest for these cases and --allow_dishonest is not given.
  """
  check = export_lib.knowledge_check(metadata, inputs.evaluated_pmids,
                                       inputs.kb_eval.version.excluded_pmids)
  if check["status"] == "honest":
    return check
  if not args.allow_dishonest:
    raise ValueError(
        f"refusing to evaluate {args.checkpoint}: its training knowledge is {check['status']} "
        f"for these cases ({check['detail']}). Train it with the evaluated publications "
        "excluded (experiment_knowledge.heldout_phenopackets or exclude_pmids_files), or pass "
        "--allow_dishonest to evaluate it anyway (the report marks it)")
  print(f"warning: model training knowledge is {check['status']}: {check['detail']}",
        file=sys.stderr)
  return check


def build_model_methods(args, inputs: _Inputs, check: dict[str, str]
                        ) -> list[model_method.ModelMethod]:
  """The model as a method, grounding with the full knowledge; `check` from honest_check. One
  method per --prior_weight when several are given ('model.text.w0.5', ...). An export trained
  with ranker hints gets them over the evaluation's knowledge, the one the rankers get."""
  model = export_lib.load_model(args.checkpoint, args.vocabulary)
  config = generation.GenerationConfig(max_new_tokens=args.max_new_tokens, seed=args.seed,
                                       think_tokens=args.think_tokens)
  index = grounding.GroundingIndex.from_knowledge(inputs.kb_full)
  weights = args.prior_weight or [None]
  return [model_method.ModelMethod(
      model, index, config, top_k=args.top_k, batch_size=args.model_batch_size,
      max_cache_length=args.max_cache_length, prior_weight=weight,
      name="model.text" if len(weights) == 1 else f"model.text.w{weight:g}",
      notes={"knowledge_check": check}, hint_knowledge=inputs.kb_eval) for weight in weights]


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  startup.configure(args.verbose)
  specs, names, modes = _validate(args, parser)
  try:
    metadata = export_lib.read_metadata(args.checkpoint) if MODEL in names else None
    inputs = _load_inputs(args, specs, need_tuning=bool(set(names) & set(methods_lib.FUSIONS)),
                          metadata=metadata)
    check = honest_check(args, metadata, inputs) if metadata is not None else None
    recognizer = recognizers.make_recognizer(args.recognizer, inputs.kb_eval, args.related_synonyms)
    classical = [n for n in names if n != MODEL]
    methods = build_model_methods(args, inputs, check) if MODEL in names else []
    if classical:
      methods += methods_lib.classical_methods(inputs.kb_eval, classical, modes, inputs.train,
                                               inputs.tuning, recognizer, args.seed, args.top_k)
  except (FileNotFoundError, ValueError) as err:
    parser.error(str(err))
  equivalence = grounding.IdEquivalence({d.id: d.xrefs for d in inputs.kb_full.diseases.values()})
  seen = {g for c in inputs.train for g in c.gold_ids} if inputs.train else None
  results = evaluate(inputs.benchmarks, methods, equivalence, recognizer, seen,
                     progress=not args.quiet, annotated_disease_ids=inputs.kb_eval.disease_ids())
  stamps = {"evaluation": inputs.kb_eval.version.as_dict(),
            "full": inputs.kb_full.version.as_dict()}
  if inputs.tuning is not None:
    stamps["fusion_tuning"] = inputs.tuning.kb.version.as_dict()
  config = {**vars(args), **inputs.notes, "argv": list(sys.argv if argv is None else argv),
            "recognizer": {"name": recognizer.name, **dataclasses.asdict(recognizer.config)}}
  paths = report_lib.write_report(args.out, results, report_lib.provenance(stamps, config),
                                  n_bootstrap=args.n_bootstrap, seed=args.seed)
  doc = json.loads(paths["metrics"].read_text())
  for name, entry in doc["benchmarks"].items():
    print(f"\n{name}: {entry['source']}\n" + "\n".join(report_lib.main_table(entry["methods"])))
  print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
