"""One run at a time per output directory.

Two runs writing one ML Metadata store, one pipeline root and one serving directory would
interleave their pushes and their summaries. A run holds an exclusive lock on
`<output-dir>/.run.lock` (fcntl.flock) for its whole length and writes who it is into the file;
the operating system releases the lock when the process ends, however it ends (`kill -9`
included), so a lock is never left behind. A second run refuses at once naming the first, or
waits for it when asked to.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator, Optional

LOCK_FILE = '.run.lock'


class OutputDirectoryBusy(RuntimeError):
  """Another run holds the output directory; the message names it."""


def describe_holder(holder: Optional[dict]) -> str:
  if not holder:
    return 'another run'
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))
  return (f'run pid {holder.get("pid")} on {holder.get("host")}, started {started}: '
          f'{holder.get("command", "")}')


def _read_holder(path: str) -> Optional[dict]:
  try:
    with open(path, encoding='utf-8') as handle:
      return json.loads(handle.read() or 'null')
  except (OSError, ValueError):
    return None


def running_holder(output_dir: str) -> Optional[dict]:
  """Who holds the output directory now, or None when no run does. Reads only."""
  path = os.path.join(output_dir, LOCK_FILE)
  try:
    descriptor = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _read_holder(path) or {}
  finally:
    os.close(descriptor)  # also drops a shared lock taken above
  return None


@contextlib.contextmanager
def exclusive_output_dir(output_dir: str, wait: bool = False) -> Iterator[None]:
  """Holds the output directory for the `with` block.

  Raises OutputDirectoryBusy when another run holds it (unless `wait`), and OSError when the
  lock file cannot be written (a read-only or full filesystem).
  """
  path = os.path.join(output_dir, LOCK_FILE)
  descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
      raise OutputDirectoryBusy(
          f'output dir {output_dir} is in use by {describe_holder(_read_holder(path))}; wait '
          'for it to finish, or pass --wait-for-output-dir') from None
    holder = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time(),
              'command': ' '.join(sys.argv)}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)
    yield
  finally:
    os.close(descriptor)  # releases the lock
