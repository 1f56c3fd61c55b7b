"""What every runner does around a run, in the command line's terms: hold the output directory and
the pipeline's lock, or say in one line who holds them and exit EXIT_OUTPUT_DIR_BUSY; and the exit
code of a store that cannot be read. The locks themselves are orchestration/'s."""

import sys
from typing import Callable

from cli import command_line
from orchestration import metadata_connection, output_lock


def run_exclusively(config, wait: bool, prog: str, run: Callable[[], int]) -> int:
  """`run()` holding the output directory and the pipeline's lock in the shared store (the one
  way every runner takes them); when another run holds either, one line naming it and
  EXIT_OUTPUT_DIR_BUSY. OSError when the output directory's lock file cannot be written."""
  try:
    with output_lock.exclusive_output_dir(config.output_dir, wait=wait), \
        metadata_connection.exclusive_pipeline(config, wait=wait):
      return run()
  except output_lock.OutputDirectoryBusy as error:
    print(f'{prog}: error: {error}', file=sys.stderr)
    return command_line.EXIT_OUTPUT_DIR_BUSY


def exit_code_of_problem(config) -> int:
  """For `metadata_connection.reader_problem`'s line: no SQLite store is a usage error (a wrong
  --output-dir); a server that cannot be used is the environment's."""
  return (command_line.EXIT_USAGE if metadata_connection.server_of(config) is None
          else command_line.EXIT_METADATA_UNAVAILABLE)
