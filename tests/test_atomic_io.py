"""Tests for rarejax.atomic_io.replaced_folder: a folder is replaced whole or not at all."""
import pytest

from rarejax import atomic_io


def _listing(folder):
  return sorted(p.name for p in folder.parent.iterdir())


def test_replaced_folder_swaps_in_a_complete_folder(tmp_path):
  out = tmp_path / "release"
  out.mkdir()
  (out / "old.txt").write_text("old")
  with atomic_io.replaced_folder(out, max_bytes=100, what="the release") as staging:
    (staging / "new.txt").write_text("new")
    assert (out / "old.txt").exists()  # untouched while the new one is written
  assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
  assert _listing(out) == ["release"]  # no staging folder left beside it
  assert atomic_io.folder_bytes(out) == 3


def test_too_large_or_failed_folders_replace_nothing(tmp_path):
  out = tmp_path / "carry"
  out.mkdir()
  (out / "old.txt").write_text("old")
  with pytest.raises(ValueError, match=r"the carry would be .* MiB allowed: use less"):
    with atomic_io.replaced_folder(out, max_bytes=10, what="the carry", fix="use less") as staging:
      (staging / "big.bin").write_bytes(b"x" * 11)
  with pytest.raises(RuntimeError):
    with atomic_io.replaced_folder(out, max_bytes=10, what="the carry") as staging:
      (staging / "half.txt").write_text("h")
      raise RuntimeError("interrupted")
  assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
  assert _listing(out) == ["carry"]
