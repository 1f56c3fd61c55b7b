"""How long the review page takes to show a batch inference run of many answers.

    python -m benchmarks.review_page [--answers 1000] [--repeats 3]

Makes a run of `--answers` answers (predictions.jsonl as InferenceExport writes it, a small PNG
per image), serves the review station's application (review/app.py) under the same waitress
server `python -m review serve` uses, and times: the answers' JSON (`GET /api/runs/<run>/answers`,
server side, the reviews read too); and headless Chromium loading the page until its script has
listed every answer and shown the first (`--dump-dom` with a virtual time budget; its own
start-up measured on the stylesheet alone and subtracted). Prints the median and the range of
`--repeats` runs.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT_ROOT)

from cli import command_line  # pylint: disable=g-import-not-at-top

command_line.prepare_environment()

from PIL import Image  # pylint: disable=g-import-not-at-top

from review import app, reviews  # pylint: disable=g-import-not-at-top
from serving import server  # pylint: disable=g-import-not-at-top


def make_run(folder: str, count: int):
  """A run of `count` answers, a tenth of them flagged and a fifth reviewed."""
  rng = random.Random(0)
  images = os.path.join(folder, 'images')
  os.makedirs(images)
  Image.new('L', (64, 64), 90).save(os.path.join(images, 'scan.png'))
  rows = []
  for index in range(count):
    name = f'scan {index:05d}.png'
    shutil.copy(os.path.join(images, 'scan.png'), os.path.join(images, name))
    malignant = rng.random()
    rows.append({'path': name, 'most_probable_class': 'benign', 'most_probable_probability': 0.5,
                 'decision': 'malignant' if malignant > 0.4 else 'benign',
                 'malignant_probability': malignant, 'malignant_threshold': 0.4,
                 'review': abs(malignant - 0.4) < 0.05, 'review_reason': 'near the threshold',
                 'scores': {'benign': 0.5, 'malignant': malignant, 'normal': 0.1}})
  predictions = os.path.join(folder, 'predictions')
  os.makedirs(predictions)
  with open(os.path.join(predictions, 'predictions.jsonl'), 'w', encoding='utf-8') as handle:
    handle.writelines(json.dumps(row) + '\n' for row in rows)
  run = {'run': 'benchmark', 'input': images, 'model_version': '1', 'images': count,
         'predictions': os.path.join(predictions, 'predictions.csv'), 'state': 'complete'}
  answers = {row['path']: row for row in rows}
  for row in rows[::5]:
    reviews.record_review(os.path.join(folder, 'output'), 'benchmark', row['path'], 'benign',
                          'Benchmark', answers)
  return run


def chromium_seconds(url: str):
  """(seconds, the DOM) of headless Chromium loading `url` and running its scripts."""
  started = time.perf_counter()
  completed = subprocess.run(
      ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=30000',
       '--dump-dom', url], capture_output=True, text=True, timeout=300, check=True)
  seconds = time.perf_counter() - started
  return seconds, completed.stdout


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--answers', type=int, default=1000)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  folder = tempfile.mkdtemp(prefix='review_page_')
  try:
    run = make_run(folder, args.answers)
    application = app.ReviewApplication(os.path.join(folder, 'output'), lambda: [run])
    listening = server.create_rest_server(application, '127.0.0.1', 0, threads=4,
                                          read_timeout_seconds=30, max_connections=16,
                                          max_request_bytes=app.MAX_REQUEST_BYTES)
    threading.Thread(target=listening.run, daemon=True).start()
    base = f'http://127.0.0.1:{listening.effective_port}'
    api, page, startup = [], [], []
    for _ in range(args.repeats):
      started = time.perf_counter()
      with urllib.request.urlopen(f'{base}/api/runs/benchmark/answers', timeout=60) as response:
        listed = json.loads(response.read())
      api.append(time.perf_counter() - started)
      assert len(listed) == args.answers
      seconds, dom = chromium_seconds(base + '/')
      assert dom.count('<li data-index=') == args.answers, 'the page did not list every answer'
      page.append(seconds)
      startup.append(chromium_seconds(base + '/static/review.css')[0])
    listening.close()
    print(f'{args.answers} answers (a fifth reviewed), {args.repeats} runs: median (min–max)')
    print(f'{"step":<46}{"seconds":>22}')
    for name, values in (('answers JSON (GET /api/runs/<run>/answers)', api),
                         ('page listed and first shown, Chromium', page),
                         ("Chromium's own start-up (a static file)", startup),
                         ('page, less the start-up', [p - s for p, s in zip(page, startup)])):
      print(f'{name:<46}{statistics.median(values):>8.2f} ({min(values):.2f}–{max(values):.2f})')
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
