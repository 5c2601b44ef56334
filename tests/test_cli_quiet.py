"""Tests for the quiet command line (rarejax.startup): `rarejax diagnose` on the committed release,
in a subprocess, writes no TensorFlow/XLA/absl/CUDA start-up line to stderr; `configure` sets the
libraries' verbosity and drops the warnings nobody can act on unless verbose."""
import json
import logging
import os
import subprocess
import sys

from absl import logging as absl_logging

from rarejax import startup
from tests.paths import ROOT

START_UP = ("All log messages before absl::InitializeLog", "oneDNN custom operations",
            "Could not find cuda drivers", "failed call to cuInit", "cudart_stub",
            "Using custom data configuration", "I0000 ")


def test_diagnose_prints_no_start_up_lines():
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  note = "A 3-year-old boy with seizures, microcephaly and hypotonia; no hearing loss."
  proc = subprocess.run([sys.executable, "-m", "rarejax", "diagnose", "--note", note, "--json",
                         "--top_k", "3"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr
  assert len(json.loads(proc.stdout)["results"][0]["differential"]) == 3
  noise = [line for line in proc.stderr.splitlines() if any(s in line for s in START_UP)]
  assert not noise, proc.stderr


def test_configure_sets_the_libraries_verbosity(monkeypatch):
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  startup.configure(verbose=False)
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
  assert all(logging.getLogger(name).level == logging.WARNING for name in startup.LIBRARY_LOGGERS)
  startup.configure(verbose=True)
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_quiet_drops_only_the_warnings_nobody_can_act_on(caplog):
  def warned() -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      absl_logging.warning("Using custom data configuration: %s", "RealConfig(diseases=(...))")
      absl_logging.warning("dropping examples longer than the sequence length")
    return [record.getMessage() for record in caplog.records]

  startup.configure(verbose=False)
  assert warned() == ["dropping examples longer than the sequence length"]
  startup.configure(verbose=True)
  assert len(warned()) == 2


def test_run_takes_verbose_and_is_quiet_without_it(tmp_path):
  from rarejax import main as main_lib  # pylint: disable=g-import-not-at-top
  assert main_lib.main(["--workdir", str(tmp_path), "--gin_file", "absent.gin"]) == 2
  assert startup._not_noise in logging.getLogger("absl").filters  # pylint: disable=protected-access
  assert main_lib.main(["--workdir", str(tmp_path), "--gin_file", "absent.gin", "--verbose"]) == 2
  assert startup._not_noise not in logging.getLogger("absl").filters  # pylint: disable=protected-access
