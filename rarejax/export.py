"""The one export loader: a stage's export or a release → validated metadata, config, params.

Every consumer loads through it: diagnose, evaluate, the eval stage (with the tokenizer:
`load_model`), RERS's teacher and RL (`load_weights`), a training stage's initial params.

  model = load_model("runs/full/sft/export")     # params + tokenizer named by metadata.json
  weights = load_weights("runs/full/sft/export") # metadata + config + params (RERS, RL: they use
                                                 # the pipeline's seqio vocabulary)

An export is `<stage>/export` (rarejax.train.checkpoint.export_params: params/ + metadata.json);
a release is `releases/NAME` (rarejax.release: bf16 safetensors + tokenizer + metadata.json).
Validated before anything heavy loads: metadata.json readable with a model_config and a known
prompt style; the vocabulary it names exists and fits the embedding; params match the config's
shapes. The knowledge stamp (which publications the training knowledge excluded) is read by
`knowledge_check`, which `rarejax evaluate` uses to refuse an export that read what it evaluates.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Mapping, Sequence

from rarejax import knowledge
from rarejax import release
from rarejax import tokenizer as tokenizer_lib
from rarejax.data import format as format_lib
from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.parallel import mesh as mesh_lib
from rarejax.parallel import rules as rules_lib
from rarejax.train import checkpoint

PROMPT_INSTRUCTION = "prompt_instruction"  # metadata.json key: the prompt style trained with
# metadata.json key: how many diseases the training prompts asked for (DataSpec.n_ranked: 'List the
# N most likely ...'); inference asks for the same (ModelMethod), its top_k when not recorded
PROMPT_CANDIDATES = "prompt_candidates"
# metadata.json key: how the model's differential is read ('generate': decode the answer list;
# 'first_entry': the top k of the first answer entry's distribution over disease-id pieces,
# for models that answer first with id pieces; rarejax.sample.first_entry)
ANSWER_RANKING = "answer_ranking"
RANKINGS = ("generate", "first_entry")
EXPORT_HINT = ("--checkpoint takes the export folder of a training stage, e.g. WORKDIR/sft/export, "
               "holding metadata.json and params/, or a release folder (releases/NAME)")




@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """An exported checkpoint ready to sample from."""
  export_dir: pathlib.Path
  config: ModelConfig
  params: Any
  vocabulary: tokenizer_lib.Tokenizer
  vocabulary_path: pathlib.Path
  metadata: Mapping[str, Any]

  @property
  def prompt_instruction(self) -> str:
    """The prompt style the model was trained with (`prompt_instruction`)."""
    return prompt_instruction(self.metadata, self.export_dir / "metadata.json")

  @property
  def answer_ranking(self) -> str:
    """How the model's differential is read (ANSWER_RANKING; 'generate' when not recorded)."""
    ranking = self.metadata.get(ANSWER_RANKING, "generate")
    if ranking not in RANKINGS:
      raise ValueError(f"{self.export_dir / 'metadata.json'}: {ANSWER_RANKING!r} must be one of "
                       f"{RANKINGS}, got {ranking!r}")
    return ranking


def prompt_instruction(metadata: Mapping[str, Any], where: str | pathlib.Path = "metadata") -> str:
  """The prompt style an export's metadata records (format.INSTRUCTION_STYLES); 'full' when it
  records none (exports written before the style was recorded)."""
  return format_lib.check_instruction(metadata.get(PROMPT_INSTRUCTION, "full"),
                                      f"{where}: {PROMPT_INSTRUCTION!r}")


def read_metadata(export_dir: str | pathlib.Path) -> dict[str, Any]:
  """The export's metadata.json (cheap: checks the folder before anything heavy is loaded).

  Raises:
    FileNotFoundError: no such folder, or it is not a params export.
    ValueError: metadata.json is unreadable, has no model_config or an unknown prompt style.
  """
  path = pathlib.Path(export_dir)
  if not path.is_dir():
    raise FileNotFoundError(f"checkpoint not found: {path} ({EXPORT_HINT})")
  meta_path = path / "metadata.json"
  if not meta_path.is_file() or not ((path / "params").is_dir() or release.is_release(path)):
    raise FileNotFoundError(f"{path} is not a params export or release: metadata.json, or "
                            f"params/ (params.safetensors), is missing ({EXPORT_HINT})")
  try:
    metadata = json.loads(meta_path.read_text("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ValueError(f"{meta_path} is not valid JSON ({err}); re-export the checkpoint") from None
  if not isinstance(metadata, dict) or not isinstance(metadata.get("model_config"), dict):
    raise ValueError(f"{meta_path} has no 'model_config' object; re-export the checkpoint")
  prompt_instruction(metadata, meta_path)
  return metadata


def vocabulary_path(export_dir: str | pathlib.Path, metadata: Mapping[str, Any],
                    override: str | pathlib.Path | None = None) -> pathlib.Path:
  """The vocabulary the model was trained with: `override`, else the one metadata names."""
  raw = override or metadata.get("vocabulary")
  if not raw:
    raise ValueError(f"{export_dir}/metadata.json names no vocabulary: pass --vocabulary (the "
                     "SentencePiece .model or tokenizer.json the model was trained with)")
  path = pathlib.Path(raw)
  if not override and not path.is_absolute():  # a release names its own tokenizer.model
    path = pathlib.Path(export_dir) / path
  if not path.exists():
    named = "given" if override else f"named by {export_dir}/metadata.json"
    raise FileNotFoundError(f"vocabulary not found: {path} ({named}); pass --vocabulary PATH")
  return path


def load_model(export_dir: str | pathlib.Path,
               vocabulary: str | pathlib.Path | None = None) -> LoadedModel:
  """Params, config and vocabulary of an export (rarejax.train.checkpoint.export_params) or of a
  release (rarejax.release); the vocabulary as a rarejax.tokenizer Tokenizer (no TensorFlow)."""
  export_dir = pathlib.Path(export_dir)
  metadata = read_metadata(export_dir)
  vocab_path = vocabulary_path(export_dir, metadata, vocabulary)
  vocab = tokenizer_lib.load_tokenizer(vocab_path)
  config = ModelConfig(**metadata["model_config"])
  if vocab.vocab_size > config.vocab_size:
    raise ValueError(f"vocabulary {vocab_path} has {vocab.vocab_size} pieces but the model in "
                     f"{export_dir} embeds only {config.vocab_size}: wrong --vocabulary?")
  return LoadedModel(export_dir, config, load_params(export_dir, config), vocab, vocab_path,
                     metadata)


@dataclasses.dataclass(frozen=True)
class Weights:
  """A trained model without its tokenizer: what RERS's teacher and RL start from (they read
  prompts with the pipeline's own vocabulary)."""
  export_dir: pathlib.Path
  metadata: Mapping[str, Any]
  config: ModelConfig
  params: Any


def load_weights(export_dir: str | pathlib.Path) -> Weights:
  """Validated metadata, config and params of an export or a release."""
  export_dir = pathlib.Path(export_dir)
  metadata = read_metadata(export_dir)
  config = ModelConfig(**metadata["model_config"])
  return Weights(export_dir, metadata, config, load_params(export_dir, config))


def load_params(export_dir: str | pathlib.Path, config: ModelConfig) -> Any:
  """The params of an export (placed on a one-axis-per-device data mesh) or of a release, checked
  against `config`'s shapes."""
  export_dir = pathlib.Path(export_dir)
  if release.is_release(export_dir):
    return release.load_release_params(export_dir, config)
  mesh = mesh_lib.make_mesh(-1, 1, 1)
  abstract = transformer.abstract_params(config)
  shardings = rules_lib.logical_to_shardings(transformer.param_logical_axes(config), abstract,
                                             mesh, rules_lib.TRAIN_RULES)
  params, _ = checkpoint.load_params(export_dir, checkpoint.abstract_with_shardings(abstract,
                                                                                    shardings))
  return params


def trained_exclusions(metadata: Mapping[str, Any]) -> tuple[str, ...] | None:
  """The PubMed ids the export's training knowledge excluded ('knowledge'.'excluded_pmids', which
  exports record since experiment.export_metadata writes the list); None when the export records
  only their count and hash (older exports) or no knowledge stamp."""
  stamp = metadata.get("knowledge") or {}
  if "excluded_pmids" in stamp:
    return knowledge.normalize_pmids(stamp["excluded_pmids"])
  return () if stamp.get("n_excluded_pmids") == 0 else None


def knowledge_check(metadata: Mapping[str, Any], evaluated_pmids: Sequence[str],
                    evaluation_exclusions: Sequence[str] = ()) -> dict[str, str]:
  """Whether the checkpoint was trained with every evaluated publication excluded.

  With the exclusion list recorded: 'honest' when it holds every evaluated publication, else
  'not_honest'. Older exports record count and hash only: nothing evaluated from publications,
  the hash of the evaluated publications, or the hash of `evaluation_exclusions` (the evaluation
  knowledge's list, which holds every evaluated publication: e.g. the evaluated ones plus an
  --exclude_pmids file the model was trained without) → 'honest'; fewer publications excluded
  than evaluated → 'not_honest'; else 'unverified' (e.g. a --limit run evaluates part of what
  training excluded).
  """
  evaluated = knowledge.normalize_pmids(evaluated_pmids)
  if not evaluated:
    return {"status": "honest", "detail": "no evaluated publication to exclude"}
  listed = trained_exclusions(metadata)
  if listed is not None:
    missing = sorted(set(evaluated) - set(listed))
    if not missing:
      return {"status": "honest", "detail": f"trained with all {len(evaluated)} evaluated "
                                            f"publications excluded ({len(listed)} in all)"}
    return {"status": "not_honest", "detail": f"its training knowledge read {len(missing)} of the "
                                              f"{len(evaluated)} evaluated publications "
                                              f"(e.g. {', '.join(missing[:3])})"}
  trained = metadata.get("knowledge") or {}
  if "excluded_pmids_sha256" not in trained:
    return {"status": "unverified", "detail": "the export records no knowledge stamp"}
  n_trained = trained["n_excluded_pmids"]
  if trained["excluded_pmids_sha256"] == knowledge.pmids_digest(evaluated):
    return {"status": "honest", "detail": f"trained with the same {len(evaluated)} publications "
                                          "excluded"}
  exclusions = knowledge.normalize_pmids(evaluation_exclusions)
  if (set(evaluated) <= set(exclusions)
      and trained["excluded_pmids_sha256"] == knowledge.pmids_digest(exclusions)):
    return {"status": "honest", "detail": f"trained with the {len(exclusions)} publications the "
                                          f"evaluation knowledge excludes, all {len(evaluated)} "
                                          "evaluated ones among them"}
  if n_trained < len(evaluated):
    return {"status": "not_honest", "detail": f"trained with {n_trained} publications excluded "
                                              f"from its knowledge, {len(evaluated)} are evaluated"}
  return {"status": "unverified", "detail": f"trained with a different exclusion list "
                                            f"({n_trained} publications; {len(evaluated)} "
                                            "evaluated) that the export records by hash only"}
