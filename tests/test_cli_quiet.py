"""Tests for the quiet command line (rarejax.startup): `rarejax diagnose` on the committed release,
in a subprocess, writes no TensorFlow/XLA/absl/CUDA start-up line to stderr; the native-stderr
filter drops only those lines, and --verbose leaves stderr alone."""
import json
import os
import pathlib
import subprocess
import sys

from rarejax import startup

ROOT = pathlib.Path(__file__).resolve().parents[1]
START_UP = ("All log messages before absl::InitializeLog", "oneDNN custom operations",
            "Could not find cuda drivers", "failed call to cuInit", "cudart_stub",
            "Using custom data configuration", "I0000 ")
NATIVE = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
          b"STDERR\n"
          b"I0000 00:00:1796647872.590805    3896 port.cc:153] oneDNN custom operations are on.\n"
          b"E0000 00:00:1796648058.271697    3896 cuda_platform.cc:52] failed call to cuInit: "
          b"INTERNAL: CUDA error\n"
          b"2026-01-30 22:44:42.456316: W tensorflow/core/x.cc:1] a start-up warning\n"
          b"E0000 00:00:1796648058.3 3896 y.cc:9] something you must act on\n")


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


def test_filter_drops_start_up_lines_only_when_quiet(capfd, monkeypatch):
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  startup.configure(verbose=False)
  assert startup.quiet()
  with startup.native_stderr_filtered():
    os.write(2, NATIVE)
  assert capfd.readouterr().err == "E0000 00:00:1796648058.3 3896 y.cc:9] something you must act on\n"
  startup.configure(verbose=True)
  assert not startup.quiet() and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
  with startup.native_stderr_filtered():
    os.write(2, NATIVE)
  assert capfd.readouterr().err == NATIVE.decode()
