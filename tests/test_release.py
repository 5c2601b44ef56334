"""Tests for releases: an export written as bf16 safetensors + tokenizer + metadata + card loads
back through the one export loader, ranks like the export, refuses a bad folder, and is what
`rarejax diagnose` uses without --checkpoint; the committed release diagnoses a note."""
import json
import shutil

import jax
import numpy as np
import pytest

from rarejax import diagnose, release
from rarejax import export as export_lib
from rarejax.evaluate import model_method

from tests.sample import test_first_entry  # pylint: disable=g-bad-import-order  (the tiny id-piece export)

export = test_first_entry.export  # the module-scoped fixture


@pytest.fixture(scope="module")
def released(export, tmp_path_factory):
  model = export_lib.load_model(export)
  out = tmp_path_factory.mktemp("releases") / "tiny"
  return release.write_release(export, out, "# Tiny\nA test model.\n", model.params,
                               model.metadata, {"card_summary": "tiny"})


def test_release_round_trips_in_bf16_and_ranks_like_the_export(export, released):
  assert sorted(p.name for p in released.iterdir()) == [
      release.CARD_FILE, "metadata.json", release.PARAMS_FILE, release.TOKENIZER_FILE]
  meta = json.loads((released / "metadata.json").read_text())
  assert meta["vocabulary"] == release.TOKENIZER_FILE and meta["card_summary"] == "tiny"
  original, loaded = export_lib.load_model(export), export_lib.load_model(released)
  assert loaded.answer_ranking == "first_entry"
  for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(loaded.params)):
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # bf16 storage
  notes = ["A tall boy with long fingers.", "Seizures since infancy."]
  ranked = [model_method.ModelMethod(m, test_first_entry.INDEX, top_k=1).diagnose(notes)
            for m in (original, loaded)]
  assert ([d.candidates[0].disease_id for d in ranked[0]]
          == [d.candidates[0].disease_id for d in ranked[1]])


def test_a_release_with_wrong_shapes_or_too_big_is_refused(export, released, tmp_path):
  bad = tmp_path / "bad"
  shutil.copytree(released, bad)
  meta = json.loads((bad / "metadata.json").read_text())
  meta["model_config"]["d_model"] *= 2
  (bad / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="shape|does not match"):
    export_lib.load_model(bad)
  model = export_lib.load_model(export)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(release, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="MiB"):
      release.write_release(export, tmp_path / "big", "", model.params, model.metadata)
  assert not (tmp_path / "big").exists()


def test_diagnose_uses_the_default_release_without_checkpoint(released, monkeypatch, capsys):
  monkeypatch.setattr(release, "DEFAULT_RELEASE", released)
  assert diagnose.main(["--note", "A tall boy with long fingers.", "--json",
                        "--top_k", "2"]) == 0
  doc = json.loads(capsys.readouterr().out)
  assert doc["checkpoint"] == str(released)
  assert len(doc["results"][0]["differential"]) == 2
  # every id piece listed: OMIM:999999 is in no knowledge, so it is shown as an unnamed disease
  assert diagnose.main(["--note", "A tall boy with long fingers.", "--top_k", "4"]) == 0
  table = capsys.readouterr().out
  assert "OMIM:999999" in table and diagnose.UNNAMED in table


def test_the_committed_release_diagnoses_a_note(capsys):
  """What a new user runs on a fresh clone: no checkpoint flag, the committed release answers."""
  assert release.is_release(release.DEFAULT_RELEASE), (
      f"the release {release.DEFAULT_RELEASE} is missing: experiments/make_release.py writes it")
  meta = json.loads((release.DEFAULT_RELEASE / "metadata.json").read_text())
  assert len(meta["knowledge"]["excluded_pmids"]) == meta["knowledge"]["n_excluded_pmids"] > 0
  size = sum(p.stat().st_size for p in release.DEFAULT_RELEASE.iterdir())
  assert size <= release.MAX_BYTES
  note = ("A 6-year-old girl with global developmental delay, seizures since infancy, hypotonia, "
          "microcephaly and absent speech.")
  assert diagnose.main(["--note", note, "--json", "--top_k", "5"]) == 0
  doc = json.loads(capsys.readouterr().out)
  differential = doc["results"][0]["differential"]
  assert doc["checkpoint"] == str(release.DEFAULT_RELEASE) and len(differential) == 5
  assert all(entry["disease_id"].startswith("OMIM:") for entry in differential)


def test_a_release_carries_the_exports_answer_prior(export, tmp_path):
  from rarejax.sample import answer_prior  # pylint: disable=import-outside-toplevel
  copy = tmp_path / "export"
  shutil.copytree(export, copy)
  prior = {i: 0.25 for i in test_first_entry.IDS}
  answer_prior.write(copy, prior, {"provider": "test"})
  model = export_lib.load_model(copy)
  out = release.write_release(copy, tmp_path / "rel", "", model.params, model.metadata,
                              {answer_prior.PRIOR_WEIGHT: 0.5})
  assert answer_prior.read(out) == prior
  method = model_method.ModelMethod(export_lib.load_model(out), test_first_entry.INDEX)
  assert method.prior_weight == 0.5


def test_a_prior_weight_without_a_prior_is_a_one_line_error(released, capsys):
  """Refused before the knowledge or the model loads, with the command that writes the prior."""
  assert diagnose.main(["--checkpoint", str(released), "--note", "Tall.",
                        "--prior_weight", "0.5"]) == 2
  err = capsys.readouterr().err
  assert "python -m rarejax.sample.answer_prior" in err and "Traceback" not in err
  with pytest.raises(SystemExit):
    diagnose.main(["--checkpoint", str(released), "--note", "Tall.", "--prior_weight", "0.5,1"])
  assert "takes one --prior_weight" in capsys.readouterr().err
