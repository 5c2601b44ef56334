"""One process of a multi-host training run on localhost CPUs (launched by tests/test_multihost.py).

  python tests/multihost_worker.py --workdir W --phases 3,6 [--num_processes 2 --process_id 0
      --coordinator 127.0.0.1:PORT] [--devices_per_process 1] [--mesh 1,-1,1]
      [--sigterm PROCESS:STEP] [--compilation_cache DIR]

Every process calls `train` once per phase (num_steps = the phase's end), so each later phase
restores the checkpoint all processes wrote together. Process p feeds rows
[p*B/n, (p+1)*B/n) of each global batch of B rows (per-host input sharding); with one process it
feeds the whole batch, which makes it the single-process reference. `--sigterm p:s` makes
process p send itself SIGTERM while fetching the batch of step s (a preemption notice on one
host; its later steps are slowed down so that the notice reaches every host before the phase
ends). The last stdout line is `RESULT {json}`.
"""
import argparse
import faulthandler
import json
import os
import signal
import sys
import time

GLOBAL_BATCH, LENGTH = 8, 16


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--phases", required=True, help="comma-separated num_steps per phase")
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--coordinator", default=None, help="host:port of process 0")
  parser.add_argument("--devices_per_process", type=int, default=1)
  parser.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor (one may be -1)")
  parser.add_argument("--sigterm", default=None, help="PROCESS:STEP")
  parser.add_argument("--compilation_cache", default=None)
  return parser.parse_args(argv)


def _batches_from(vocab_size, process_id, num_processes, sigterm):
  """Deterministic counting sequences; the batch of step k depends only on k."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = slice(process_id * GLOBAL_BATCH // num_processes,
               (process_id + 1) * GLOBAL_BATCH // num_processes)

  def batches(start):
    step = start
    while True:
      if sigterm == (process_id, step):
        os.kill(os.getpid(), signal.SIGTERM)
      if sigterm and sigterm[0] == process_id and step >= sigterm[1]:
        time.sleep(0.3)  # slow steps: the notice reaches every host before the phase ends
      base = np.random.default_rng((0, step)).integers(1, 50, size=(GLOBAL_BATCH, 1))
      tokens = ((base + np.arange(LENGTH + 1)) % vocab_size)[rows]
      yield {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32)}
      step += 1
  return batches


def main(argv=None) -> None:
  faulthandler.enable()  # an abort (e.g. by the coordination service) prints every thread's stack
  args = _parse(argv)
  os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                             f"--xla_force_host_platform_device_count={args.devices_per_process}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS)
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  from rarejax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  distributed = mesh_lib.initialize_distributed(args.coordinator, args.num_processes,
                                                args.process_id)
  # Fail here, not with a confusing loss mismatch later, if the process did not join the run.
  assert jax.process_count() == args.num_processes, (
      f"joined {jax.process_count()} processes, expected {args.num_processes}")
  assert jax.process_index() == args.process_id, (
      f"process index {jax.process_index()}, expected {args.process_id}")
  from rarejax.model.config import preset  # pylint: disable=g-import-not-at-top
  from rarejax.train import loop, optimizer  # pylint: disable=g-import-not-at-top

  config = preset("tiny_llama")
  sigterm = tuple(map(int, args.sigterm.split(":"))) if args.sigterm else None
  batches = _batches_from(config.vocab_size, jax.process_index(), jax.process_count(), sigterm)
  opt = optimizer.OptimizerConfig(learning_rate=3e-3, warmup_steps=2, total_steps=100)
  phases = []
  for num_steps in map(int, args.phases.split(",")):
    loop_config = loop.LoopConfig(num_steps=num_steps, log_every=1, checkpoint_every=2,
                                  keep_checkpoints=2, async_checkpoints=True,
                                  mesh_shape=tuple(map(int, args.mesh.split(","))))
    result = loop.train(model_config=config, optimizer_config=opt, loop_config=loop_config,
                        batches_from=batches, workdir=args.workdir, progress=False)
    phases.append({"step": result.step, "stopped": result.stopped,
                   "loss": result.last_metrics.get("loss")})
  print("RESULT " + json.dumps({
      "distributed": distributed, "process_index": jax.process_index(),
      "process_count": jax.process_count(), "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(), "phases": phases}), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
