"""The run report: `<output-dir>/report/index.html`, a static page with pictures, no server.

    python -m runs.report --output-dir DIR [--run RUN_ID] [--screenshot PNG]

Written by `local_runner.py` after every run (and by this command for any recorded run), in three
steps: the facts are gathered from ML Metadata (`report_facts.py`), the pictures drawn from them
(`report_pictures.py`), and the page rendered from a Jinja2 template (`templates/report.html`,
autoescaped, so no file name can break the page). It shows images per class and split, sample
images per class (the seed notebook's grid), the training augmentation applied to them, the
data-validation result (TFDV anomalies, near-duplicates, label conflicts, leaks, the contact
sheet), the training curves, the confusion matrix and per-class metrics, the blessing decision
against each threshold, and what was pushed where. `--screenshot` also renders the page in
headless Chromium (Debian's `chromium`) to a PNG, to see it as a browser shows it.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from cli import command_line

command_line.prepare_environment()

from cli import exclusive_run, reader_flags  # pylint: disable=g-import-not-at-top
from models import features  # pylint: disable=g-import-not-at-top
from orchestration import metadata_connection  # pylint: disable=g-import-not-at-top
from pipeline import code_version  # pylint: disable=g-import-not-at-top
from presentation import pages, wording  # pylint: disable=g-import-not-at-top
from runs.report_facts import ReportFacts, add_picture_sources, gather_report_facts  # pylint: disable=g-import-not-at-top
from runs.report_pictures import draw_report_pictures  # pylint: disable=g-import-not-at-top

INDEX_FILE = 'index.html'
PICTURES_STAMP_FILE = 'pictures.json'  # which artifacts the pictures beside it were drawn for
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')
TEMPLATE_FILE = 'report.html'
EXIT_USAGE = command_line.EXIT_USAGE


def _with_interval(metrics: dict, name: str) -> str:
  """'0.713 [0.630, 0.790]': a metric and its 95 % bootstrap interval where there is one."""
  value = pages.number(metrics.get(name))
  if metrics.get(name + '_lower') is None:
    return value
  return (f'{value} [{pages.number(metrics.get(name + "_lower"))}, '
          f'{pages.number(metrics.get(name + "_upper"))}]')


def render_report(facts: ReportFacts, pictures: dict) -> str:
  """The page's HTML for the facts, with `pictures` ({name: file}) beside it."""
  environment = pages.environment(TEMPLATE_DIR)
  environment.filters['with_interval'] = _with_interval
  pushed = facts.run.pushed_destination
  return environment.get_template(TEMPLATE_FILE).render(
      facts=facts, pictures=pictures, class_names=features.LABEL_NAMES,
      operating_point_line=(wording.format_operating_point(facts.run.operating_point)
                            if facts.run.operating_point else None),
      review_band_line=(wording.format_review_band(facts.run.operating_point)
                        if facts.run.operating_point else 'no operating point'),
      serving_check_line=(wording.format_serving_check(facts.run.serving_check or {},
                                                       facts.run.serving_check_passed)
                          if facts.run.serving_check_passed is not None else None),
      tflite_line=(wording.format_tflite(facts.run.serving_check, facts.run.tflite_bytes,
                                         facts.run.tflite_pushed, facts.run.tflite_error)
                   if facts.run.serving_check_passed is not None else None),
      pushed_version=os.path.basename(pushed) if pushed else None,
      pushed_base_path=os.path.dirname(pushed) if pushed else None)


def pictures_key(facts: ReportFacts) -> str:
  """What the pictures depend on: the run's output artifacts and the code that draws them."""
  return hashlib.sha256(json.dumps([
      facts.output_artifacts, code_version.code_version('runs.report_pictures')]).encode()
                        ).hexdigest()


def pictures_drawn_before(report_dir: str, key: str) -> Optional[Dict[str, str]]:
  """{name: file} of the pictures in `report_dir` when they were drawn for `key`, else None."""
  try:
    with open(os.path.join(report_dir, PICTURES_STAMP_FILE), encoding='utf-8') as handle:
      stamp = json.load(handle)
  except (OSError, ValueError):
    return None
  pictures = stamp.get('pictures', {})
  if stamp.get('key') != key or not all(
      os.path.isfile(os.path.join(report_dir, file_name)) for file_name in pictures.values()):
    return None
  return pictures


def write_report(metadata_path, report_dir: str, run_id: Optional[str] = None,
                 pipeline_name: Optional[str] = None, output_dir: Optional[str] = None) -> str:
  """Writes index.html and its pictures for the run (default: the latest); returns its path.

  Pictures already drawn for the same artifacts (a cached rerun's) are kept, not redrawn: the
  sample images and the explained eval images are only read when the pictures are drawn.
  """
  facts = gather_report_facts(metadata_path, run_id, with_picture_sources=False,
                              pipeline_name=pipeline_name, output_dir=output_dir)
  os.makedirs(report_dir, exist_ok=True)
  key = pictures_key(facts)
  pictures = pictures_drawn_before(report_dir, key)
  if pictures is None:
    add_picture_sources(facts)
    pictures = draw_report_pictures(facts, report_dir)
    with open(os.path.join(report_dir, PICTURES_STAMP_FILE), 'w', encoding='utf-8') as handle:
      json.dump({'key': key, 'pictures': pictures}, handle)
  page = render_report(facts, pictures)  # before opening: a failed render leaves the old page
  index = os.path.join(report_dir, INDEX_FILE)
  with open(index, 'w', encoding='utf-8') as handle:
    handle.write(page)
  return index


def screenshot(index_path: str, png_path: str, width: int = 1200, height: int = 5000) -> None:
  """Renders the page in headless Chromium to a PNG."""
  browser = shutil.which('chromium') or shutil.which('chromium-browser')
  if browser is None:
    raise FileNotFoundError('chromium is not installed (Debian: apt install chromium)')
  # No background networking: on a closed network Chromium's own connections only fail.
  with tempfile.TemporaryDirectory() as profile:
    subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    '--disable-quic', '--no-first-run', '--disable-background-networking',
                    '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
                    f'--window-size={width},{height}',
                    f'--screenshot={os.path.abspath(png_path)}',
                    'file://' + os.path.abspath(index_path)],
                   check=True, capture_output=True, timeout=120)


def main(argv: Optional[List[str]] = None) -> int:
  parser = command_line.OneLineArgumentParser(prog='python -m runs.report',
                                   description='Write the HTML report of a pipeline run.')
  parser.add_argument('--run', help='run id (default: the latest run); see '
                      '`python -m runs.inspect runs`')
  parser.add_argument('--screenshot', metavar='PNG',
                      help='also render the page in headless Chromium to this PNG')
  reader_flags.add_reader_flags(parser)
  args = parser.parse_args(argv)
  config = reader_flags.reader_config(args)
  problem = metadata_connection.reader_problem(config)
  if problem:
    print(f'runs.report: error: {problem}', file=sys.stderr)
    return exclusive_run.exit_code_of_problem(config)
  try:
    index = write_report(metadata_connection.reader_location(config), config.report_dir,
                         args.run, config.pipeline_name, config.output_dir)
  except ValueError as error:
    print(f'runs.report: error: {error}', file=sys.stderr)
    return EXIT_USAGE
  print(f'report: {index}')
  if args.screenshot:
    try:
      screenshot(index, args.screenshot)
    except (FileNotFoundError, subprocess.SubprocessError) as error:
      print(f'runs.report: error: no screenshot: {error}', file=sys.stderr)
      return 1
    print(f'screenshot: {args.screenshot}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
