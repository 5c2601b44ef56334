"""Released models: an export as one small folder (bf16 safetensors, tokenizer, metadata, card).

A release is what a user diagnoses with when they train nothing: `rarejax diagnose` and
`rarejax evaluate` use DEFAULT_RELEASE when no --checkpoint is given. Layout:

  releases/<name>/
    params.safetensors   every parameter in bfloat16, keys '/'-joined tree paths (or the same
                         tensors split into params-00000-of-0000N.safetensors files, each small
                         enough to come back from an accelerator machine: write_params)
    tokenizer.model      the SentencePiece model the export was trained with
    metadata.json        the export's metadata (model config, knowledge stamp with the excluded
                         publications, prompt style, answer ranking), 'vocabulary' relative
    answer_prior.json    the training answers' prior, when the export has one
                         (rarejax.sample.answer_prior)
    MODEL_CARD.md        what it is, how it was trained, what it scores and where it fails

  write_release(export_dir, out_dir, card_text)      # from a training stage's export
  params = load_release_params(out_dir, model_config)  # float32 tree, shapes checked

Loading goes through rarejax.export.load_model, which recognizes a release by its
params.safetensors; the weights are cast back to the config's parameter dtype (float32).
"""
from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy

from rarejax import atomic_io
from rarejax.model import transformer
from rarejax.model.config import ModelConfig

PARAMS_FILE = "params.safetensors"
SHARD_GLOB = "params-*-of-*.safetensors"
TOKENIZER_FILE = "tokenizer.model"
# The training answers' prior (rarejax.sample.answer_prior), next to metadata.json in an export
# and in its release. Named here, where the layout is, so that loading a release imports no more
# than it needs (rarejax.carry runs where the knowledge libraries are not installed).
ANSWER_PRIOR_FILE = "answer_prior.json"
CARD_FILE = "MODEL_CARD.md"
MAX_BYTES = 40 * 2**20  # a release is committed to git: keep it small
DEFAULT_NAME = "rarejax-full-cpu"
DEFAULT_RELEASE = pathlib.Path(__file__).resolve().parents[1] / "releases" / DEFAULT_NAME


def is_release(path: str | pathlib.Path) -> bool:
  """Whether `path` is a release folder (holds params.safetensors or its shards)."""
  path = pathlib.Path(path)
  return (path / PARAMS_FILE).is_file() or any(path.glob(SHARD_GLOB))


def tensor_name(path) -> str:
  """The name a params tree path has in the safetensors files: its keys '/'-joined."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten(params: Any) -> dict[str, np.ndarray]:
  """{'/'-joined tree path: bfloat16 array} of a params tree."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {tensor_name(path):
              np.asarray(jax.device_get(leaf), np.float32).astype(ml_dtypes.bfloat16)
          for path, leaf in leaves}


def shard_groups(sizes: Mapping[str, int], max_bytes: int) -> list[list[str]]:
  """Tensor names (keys of {name: bytes}) grouped, first fit in order, into files of at most
  `max_bytes` of tensor data each; a tensor larger than that is a ValueError."""
  groups: list[list[str]] = []
  used: list[int] = []
  for name, size in sizes.items():
    if size > max_bytes:
      raise ValueError(f"tensor {name} has {size} bytes, more than the {max_bytes} a file may hold")
    slot = next((i for i, u in enumerate(used) if u + size <= max_bytes), None)
    if slot is None:
      groups.append([])
      used.append(0)
      slot = len(groups) - 1
    groups[slot].append(name)
    used[slot] += size
  return groups


def write_params(params: Any, directory: str | pathlib.Path,
                 max_file_bytes: int | None = None) -> list[pathlib.Path]:
  """Writes every parameter in bfloat16 to `directory`: params.safetensors, or with
  `max_file_bytes` params-K-of-N.safetensors files of at most that many tensor bytes each."""
  directory = pathlib.Path(directory)
  tensors = flatten(params)
  if max_file_bytes is None:
    groups, names = [list(tensors)], lambda k, n: PARAMS_FILE
  else:
    groups = shard_groups({k: v.nbytes for k, v in tensors.items()}, max_file_bytes)
    names = lambda k, n: f"params-{k:05d}-of-{n:05d}.safetensors"
  paths = [directory / names(k, len(groups)) for k in range(len(groups))]
  for path, group in zip(paths, groups):
    safetensors.numpy.save_file({k: tensors[k] for k in group}, str(path))
  return paths


def _stored_params(release_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """{name: array} of params.safetensors, or of all its shards (every one of N present)."""
  if (release_dir / PARAMS_FILE).is_file():
    return safetensors.numpy.load_file(str(release_dir / PARAMS_FILE))
  shards = sorted(release_dir.glob(SHARD_GLOB))
  counts = {int(p.stem.rsplit("-of-", 1)[1]) for p in shards}
  if len(counts) != 1 or len(shards) != counts.pop():
    raise ValueError(f"{release_dir}: params shards {[p.name for p in shards]} are not one "
                     "complete set params-K-of-N")
  stored: dict[str, np.ndarray] = {}
  for shard in shards:
    stored.update(safetensors.numpy.load_file(str(shard)))
  return stored


def load_release_params(release_dir: str | pathlib.Path, config: ModelConfig) -> Any:
  """The release's params as the tree transformer.init_params makes, in the config's parameter
  dtype; a missing, extra or misshapen tensor is a ValueError naming it."""
  path = pathlib.Path(release_dir)
  stored = _stored_params(path)
  abstract = transformer.abstract_params(config)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  wanted = {tensor_name(p): leaf for p, leaf in leaves}
  missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
  if missing or extra:
    raise ValueError(f"{path} does not match the model config in metadata.json: missing "
                     f"{missing[:3]}, unexpected {extra[:3]}")
  out = []
  for key, leaf in wanted.items():
    if stored[key].shape != tuple(leaf.shape):
      raise ValueError(f"{path}: {key} has shape {stored[key].shape}, the config wants "
                       f"{tuple(leaf.shape)}")
    out.append(jnp.asarray(stored[key].astype(np.float32), leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def write_release(export_dir: str | pathlib.Path, out_dir: str | pathlib.Path, card: str,
                  params: Any, metadata: Mapping[str, Any],
                  extra_metadata: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes the release of an export (its loaded `params` and `metadata`) to `out_dir`,
  replacing what is there only once the new folder is complete. Raises ValueError when the
  release would exceed MAX_BYTES."""
  export_dir, out_dir = pathlib.Path(export_dir), pathlib.Path(out_dir)
  vocabulary = pathlib.Path(metadata["vocabulary"])
  with atomic_io.replaced_folder(out_dir, MAX_BYTES, f"the release of {export_dir}") as staging:
    write_params(params, staging)
    shutil.copyfile(vocabulary, staging / TOKENIZER_FILE)
    if (export_dir / ANSWER_PRIOR_FILE).is_file():
      shutil.copyfile(export_dir / ANSWER_PRIOR_FILE, staging / ANSWER_PRIOR_FILE)
    meta = {**metadata, **(extra_metadata or {}), "vocabulary": TOKENIZER_FILE,
            "release": {"source_export": str(export_dir), "params_dtype": "bfloat16"}}
    (staging / "metadata.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    (staging / CARD_FILE).write_text(card, "utf-8")
    for path in staging.iterdir():
      path.chmod(0o644)
  return out_dir
