"""Released models: an export as one small folder (bf16 safetensors, tokenizer, metadata, card).

A release is what a user diagnoses with when they train nothing: `rarejax diagnose` and
`rarejax evaluate` use DEFAULT_RELEASE when no --checkpoint is given. Layout:

  releases/<name>/
    params.safetensors   every parameter in bfloat16, keys '/'-joined tree paths
    tokenizer.model      the SentencePiece model the export was trained with
    metadata.json        the export's metadata (model config, knowledge stamp with the excluded
                         publications, prompt style, answer ranking), 'vocabulary' relative
    MODEL_CARD.md        what it is, how it was trained, what it scores and where it fails

  write_release(export_dir, out_dir, card_text)      # from a training stage's export
  params = load_release_params(out_dir, model_config)  # float32 tree, shapes checked

Loading goes through model_method.load_model, which recognizes a release by its
params.safetensors; the weights are cast back to the config's parameter dtype (float32).
"""
from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy

from rarejax.model import transformer
from rarejax.model.config import ModelConfig

PARAMS_FILE = "params.safetensors"
TOKENIZER_FILE = "tokenizer.model"
CARD_FILE = "MODEL_CARD.md"
MAX_BYTES = 40 * 2**20  # a release is committed to git: keep it small
DEFAULT_NAME = "rarejax-full-cpu"
DEFAULT_RELEASE = pathlib.Path(__file__).resolve().parents[1] / "releases" / DEFAULT_NAME


def is_release(path: str | pathlib.Path) -> bool:
  """Whether `path` is a release folder (holds params.safetensors)."""
  return (pathlib.Path(path) / PARAMS_FILE).is_file()


def _key(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten(params: Any) -> dict[str, np.ndarray]:
  """{'/'-joined tree path: bfloat16 array} of a params tree."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {_key(path): np.asarray(jax.device_get(leaf), np.float32).astype(ml_dtypes.bfloat16)
          for path, leaf in leaves}


def load_release_params(release_dir: str | pathlib.Path, config: ModelConfig) -> Any:
  """The release's params as the tree transformer.init_params makes, in the config's parameter
  dtype; a missing, extra or misshapen tensor is a ValueError naming it."""
  path = pathlib.Path(release_dir) / PARAMS_FILE
  stored = safetensors.numpy.load_file(str(path))
  abstract = transformer.abstract_params(config)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  wanted = {_key(p): leaf for p, leaf in leaves}
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
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
  staging.chmod(0o755)  # mkdtemp's 0o700 would make the release unreadable to other users
  try:
    safetensors.numpy.save_file(flatten(params), str(staging / PARAMS_FILE))
    shutil.copyfile(vocabulary, staging / TOKENIZER_FILE)
    meta = {**metadata, **(extra_metadata or {}), "vocabulary": TOKENIZER_FILE,
            "release": {"source_export": str(export_dir), "params_dtype": "bfloat16"}}
    (staging / "metadata.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    (staging / CARD_FILE).write_text(card, "utf-8")
    for path in staging.iterdir():
      path.chmod(0o644)
    size = sum(p.stat().st_size for p in staging.iterdir())
    if size > MAX_BYTES:
      raise ValueError(f"the release of {export_dir} would be {size / 2**20:.1f} MiB, more than "
                       f"{MAX_BYTES / 2**20:.0f} MiB")
    if out_dir.exists():
      shutil.rmtree(out_dir)
    staging.rename(out_dir)
  finally:
    if staging.exists():
      shutil.rmtree(staging)
  return out_dir
