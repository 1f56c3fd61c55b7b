"""How ImageExampleGen's time and peak memory grow with the number of images.

    python -m benchmarks.example_gen_scaling [--counts 300 1200 3000] [--image-size 256]

For each count it generates a synthetic set (a third per class, masks included), runs the
executor in a fresh process with Beam's DirectRunner, and prints images per second and the
process's peak resident memory. The executor never gathers image bytes (only names, labels and
hashes), so peak memory should stay flat as the count grows.
"""

import argparse
import os
import subprocess
import sys
import tempfile

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import os, sys, time, resource
from cli import command_line
command_line.prepare_environment()
from components.image_example_gen import component
started = time.time()
examples = component.run_executor_directly(sys.argv[1], sys.argv[2])
seconds = time.time() - started
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(examples.get_int_custom_property('example_count'), seconds, peak_kb)
"""


def measure(count: int, image_size: int, workdir: str):
  from data import synthetic  # pylint: disable=g-import-not-at-top
  data_root = os.path.join(workdir, f'images_{count}')
  synthetic.generate_dataset(data_root, images_per_class=count // 3, image_size=image_size)
  data_bytes = sum(os.path.getsize(os.path.join(folder, name))
                   for folder, _, names in os.walk(data_root) for name in names)
  completed = subprocess.run(
      [sys.executable, '-c', _CHILD, data_root, os.path.join(workdir, f'examples_{count}')],
      cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
  examples, seconds, peak_kb = completed.stdout.split()[-3:]
  return int(examples), float(seconds), int(peak_kb) / 1024, data_bytes / 2**20


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--counts', type=int, nargs='+', default=[300, 1200, 3000])
  parser.add_argument('--image-size', type=int, default=256)
  args = parser.parse_args(argv)
  print(f'{"images":>8} {"data MB":>9} {"seconds":>9} {"images/s":>9} {"peak RSS MB":>12}')
  with tempfile.TemporaryDirectory() as workdir:
    for count in args.counts:
      examples, seconds, peak_mb, data_mb = measure(count, args.image_size, workdir)
      print(f'{examples:>8} {data_mb:>9.1f} {seconds:>9.1f} {examples / seconds:>9.1f} '
            f'{peak_mb:>12.0f}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
