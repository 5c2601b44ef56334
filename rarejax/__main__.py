"""The `rarejax` command: one entry point dispatching to the subcommands.

  python -m rarejax diagnose --checkpoint EXPORT --file note.txt   (rarejax.diagnose)
  python -m rarejax evaluate --benchmark ... --checkpoint EXPORT     (rarejax.evaluate.run)
  python -m rarejax run --workdir runs/x --gin_file quickstart.gin  (rarejax.main: the pipeline)
  python -m rarejax carry prepare|train ...                          (rarejax.carry: a stage on
                                                                      an accelerator, no TF there)

`rarejax COMMAND --help` shows each command's flags.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from rarejax import startup

COMMANDS = {"diagnose": "rarejax.diagnose", "evaluate": "rarejax.evaluate.run",
            "run": "rarejax.main", "carry": "rarejax.carry"}
QUIET_COMMANDS = ("diagnose", "evaluate", "run")  # libraries' start-up lines only with --verbose


def main(argv: Sequence[str] | None = None) -> int:
  from_command_line = argv is None
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in ("-h", "--help"):
    print(__doc__)
    return 0
  if not argv or argv[0] not in COMMANDS:
    problem = f"unknown command {argv[0]!r}" if argv else "no command given"
    print(f"{__doc__}\nrarejax: {problem}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2
  if from_command_line:
    sys.argv[0] = f"rarejax {argv[0]}"  # usage lines name the subcommand
  if argv[0] in QUIET_COMMANDS:  # before the command's imports (rarejax.startup)
    startup.configure("--verbose" in argv[1:])
  return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
  sys.exit(main())
