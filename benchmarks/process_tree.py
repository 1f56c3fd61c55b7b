"""Runs a command and measures it as a whole: wall time, the peak resident memory of its process
tree (Beam's worker processes and the like included), and its output lines with the second each
arrived. Shared by the benchmarks."""

import os
import re
import subprocess
import threading
import time
from typing import Dict, List, Tuple

import psutil

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Measured:
  """A command's wall time, peak resident memory of its whole process tree (and every sample of
  it, to tell which phase peaked), and its output lines with the second each arrived."""

  def __init__(self, command: List[str], poll_seconds: float = 0.1):
    """Runs `command` from the project root; a failure stops the benchmark with its output."""
    self.lines = []
    self.memory_samples = []  # (second, bytes of the whole tree)
    started = time.time()
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    self.peak_bytes = 0
    done = threading.Event()

    def poll():
      root = psutil.Process(process.pid)
      while not done.is_set():
        try:
          tree = [root, *root.children(recursive=True)]
          resident = sum(_rss(member) for member in tree)
          self.memory_samples.append((time.time() - started, resident))
          self.peak_bytes = max(self.peak_bytes, resident)
        except psutil.Error:
          pass
        time.sleep(poll_seconds)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for line in process.stdout:
      self.lines.append((time.time() - started, line.rstrip('\n')))
    self.returncode = process.wait()
    done.set()
    poller.join()
    self.seconds = time.time() - started
    if self.returncode != 0:
      tail = '\n'.join(line for _, line in self.lines[-30:])
      raise SystemExit(f'{" ".join(command[:3])} ... failed ({self.returncode}):\n{tail}')

  def peak_bytes_between(self, start_second: float, end_second: float) -> int:
    """The largest sample from `start_second` to `end_second` (0 when none fell between)."""
    return max((resident for second, resident in self.memory_samples
                if start_second <= second <= end_second), default=0)

  def component_phases(self) -> Dict[str, Tuple[float, float]]:
    """{component: (first second, last second)} from the progress lines that
    `local_runner.show_progress_and_warnings` prints ('[12:00:01] Transform ...', then
    '[12:00:09] Transform done in 8.0 s')."""
    phases = {}
    for second, line in self.lines:
      found = re.match(r'^\[[0-9:]+\] (\S+) (\.\.\.|done in|cached in)', line)
      if found:
        first = phases.get(found.group(1), (second, second))[0]
        phases[found.group(1)] = (first, second)
    return phases


def mebibytes(value_bytes: int) -> str:
  """'1,259' MiB for a table; '—' for 0, a phase shorter than one memory poll."""
  return f'{value_bytes / (1024 * 1024):,.0f}' if value_bytes else '—'


def _rss(process: psutil.Process) -> int:
  try:
    return process.memory_info().rss
  except psutil.Error:
    return 0
