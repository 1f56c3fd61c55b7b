"""Runs the breast-ultrasound TFX pipeline on this machine with LocalDagRunner.

    python local_runner.py [--data-root DIR] [--output-dir DIR] [--epochs N] [--image-size N]
                           [--min-accuracy F] [--min-malignant-recall F] [--model-name NAME]
                           [--model NETWORK]
                           [--max-unreadable-fraction F] [--label-conflicts {exclude,keep,fail}]
                           [--max-hash-distance BITS]

Without --data-root it runs on the synthetic data set under data/, generating it the first time.
ML Metadata goes to <output-dir>/metadata.sqlite, artifacts under <output-dir>/pipeline/, and a
blessed model to <output-dir>/serving/<model-name>/<version>/. Caching is on: an unchanged rerun
reuses every component. Progress is printed while it runs, a summary at the end, and the run
report (pictures, metrics, the blessing decision) goes to <output-dir>/report/index.html.
"""

import argparse
import logging
import os
import re
import sys
import time
import warnings
from typing import List, Optional

# Keras 2 (tf_keras) throughout, as TFT and TFMA 1.16 expect; quiet TensorFlow's C++ banner.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# google-api-core warns on every import that Python 3.10 support is ending; TFX 1.16 needs 3.10.
warnings.filterwarnings('ignore', category=FutureWarning, module='google')
# TFMA divides by zero for a class absent from a slice and reports NaN, which the summary shows.
warnings.filterwarnings('ignore', category=RuntimeWarning, module='tensorflow_model_analysis')

from components import contracts  # pylint: disable=g-import-not-at-top
from models import features  # pylint: disable=g-import-not-at-top
from pipeline import command_line, configs  # pylint: disable=g-import-not-at-top

EXIT_USAGE = command_line.EXIT_USAGE
EXIT_PIPELINE_FAILED = 1
MAX_HASH_DISTANCE = 34
_MODEL_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def _whole_number(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None


def _positive_int(text: str) -> int:
  value = _whole_number(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _image_size(text: str) -> int:
  value = _positive_int(text)
  if not 16 <= value <= 1024:
    raise argparse.ArgumentTypeError(f'must be between 16 and 1024 pixels, got {value}')
  return value


def _fraction(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
  if not value >= 0:  # Also rejects NaN.
    raise argparse.ArgumentTypeError(f'must be 0 or more, got {text}')
  return value


def _hash_distance(text: str) -> int:
  value = _whole_number(text)
  # Beyond this, different BUSI lesions (36+ bits apart) would merge, and the banded search
  # probes thousands of neighbours per band.
  if not 0 <= value <= MAX_HASH_DISTANCE:
    raise argparse.ArgumentTypeError(
        f'must be between 0 and {MAX_HASH_DISTANCE} bits, got {value}')
  return value


def _model_name(text: str) -> str:
  if not _MODEL_NAME.match(text):
    raise argparse.ArgumentTypeError(
        f'{text!r} is not a folder-safe name (letters, digits, _ . -)')
  return text


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  defaults = configs.PipelineConfig()
  parser = command_line.OneLineArgumentParser(
      prog='local_runner.py',
      description='Run the breast-ultrasound TFX pipeline locally.')
  parser.add_argument('--data-root', help='folder with benign/, malignant/, normal/ image '
                      'folders (default: the synthetic set under data/, generated if missing)')
  parser.add_argument('--output-dir', default=defaults.output_dir,
                      help='where ML Metadata, artifacts and the serving directory go '
                      '(default: %(default)s)')
  parser.add_argument('--epochs', type=_positive_int, default=defaults.epochs,
                      help="training epochs (default: the network's recipe: 40 for "
                      "sepconv_residual, 15 for seed)")
  parser.add_argument('--image-size', type=_image_size, default=defaults.image_size,
                      help='side of the square model input in pixels (default: %(default)s)')
  parser.add_argument('--min-accuracy', type=_fraction, default=defaults.min_accuracy,
                      help='blessing gate on overall eval accuracy (default: %(default)s)')
  parser.add_argument('--model-name', type=_model_name, default=defaults.model_name,
                      help='TF Serving model name, the serving folder (default: %(default)s)')
  parser.add_argument('--max-unreadable-fraction', type=_fraction,
                      default=defaults.max_unreadable_fraction,
                      help='share of input files that may be unusable (corrupt, not images) '
                      'before the run fails (default: %(default)s)')
  parser.add_argument('--label-conflicts', choices=('exclude', 'keep', 'fail'),
                      default=defaults.label_conflict_policy,
                      help='near-duplicate images filed under different labels: leave them out '
                      'of training and evaluation (exclude), use them (keep) or stop the run '
                      '(fail); always reported (default: %(default)s)')
  parser.add_argument('--max-hash-distance', type=_hash_distance,
                      default=defaults.max_hash_distance,
                      help='images whose 128-bit perceptual hashes differ in at most this many '
                      'bits are near-duplicates, kept on one side of the split '
                      '(default: %(default)s)')
  parser.add_argument('--min-malignant-recall', type=_fraction,
                      default=defaults.min_malignant_recall,
                      help='blessing gate on the share of malignant eval images classified '
                      'malignant (default: %(default)s)')
  parser.add_argument('--model', default=defaults.network,
                      help='network to train: sepconv_residual or seed, the seed notebook\'s '
                      'CNN (default: %(default)s)')
  args = parser.parse_args(argv)
  from models import networks  # pylint: disable=g-import-not-at-top  # Imports TensorFlow.
  if args.model not in networks.RECIPES:
    parser.error(f'argument --model: unknown network {args.model!r} '
                 f'(choose from {", ".join(sorted(networks.RECIPES))})')
  return args


def check_data_root(data_root: str) -> Optional[str]:
  """A one-line problem with the data root, or None when it looks usable."""
  if not os.path.isdir(data_root):
    return f'data root {data_root} does not exist or is not a folder'
  folders = sorted(entry for entry in os.listdir(data_root)
                   if os.path.isdir(os.path.join(data_root, entry))
                   and not entry.startswith('.'))
  unknown = [folder for folder in folders if folder not in features.LABEL_NAMES]
  if unknown:
    return (f'data root {data_root} has folders that are not classes: {", ".join(unknown)} '
            f'(expected only {", ".join(features.LABEL_NAMES)})')
  images = 0
  for folder in folders:
    images += sum(1 for name in os.listdir(os.path.join(data_root, folder))
                  if name.lower().endswith(contracts.IMAGE_EXTENSIONS))
  if images == 0:
    return (f'data root {data_root} has no images in class folders '
            f'({", ".join(features.LABEL_NAMES)})')
  return None


def ensure_default_data(data_root: str) -> None:
  """Generates the synthetic default data set the first time it is needed."""
  if os.path.isdir(data_root) and os.listdir(data_root):
    return
  from data import synthetic  # pylint: disable=g-import-not-at-top
  print(f'Generating the synthetic default data set under {data_root} ...', flush=True)
  count = synthetic.generate_dataset(data_root, with_near_duplicates=True)
  print(f'  {count} images written (lesion masks beside them, a few near-duplicates planted).',
        flush=True)


# TFX warnings that say nothing about this run.
_KNOWN_NOISE = (
    'ArtifactQuery.property_predicate is not supported',
    # Transform's own output lacks the property; TFX falls back to the right format.
    'Examples artifact does not have payload_format custom property',
)


class ProgressPrinter(logging.Handler):
  """Turns LocalDagRunner's log lines into one visible line per component start and end."""

  _RUNNING = re.compile(r'^Component (\S+) is running\.$')
  _FINISHED = re.compile(r'^Component (\S+) is finished\.$')
  _CACHED = re.compile(r'^A cached execution \d+ is used\.$')

  def __init__(self):
    super().__init__(level=logging.INFO)
    self._started = {}
    self._cached = set()
    self._current = None

  def emit(self, record: logging.LogRecord) -> None:
    message = record.getMessage()
    running = self._RUNNING.match(message)
    finished = self._FINISHED.match(message)
    if running:
      self._current = running.group(1)
      self._started[self._current] = time.time()
      print(f'[{time.strftime("%H:%M:%S")}] {self._current} ...', flush=True)
    elif self._CACHED.match(message) and self._current:
      self._cached.add(self._current)
    elif finished:
      node = finished.group(1)
      seconds = time.time() - self._started.get(node, time.time())
      how = 'cached' if node in self._cached else 'done'
      print(f'[{time.strftime("%H:%M:%S")}] {node} {how} in {seconds:.1f} s', flush=True)


def show_progress_and_warnings() -> None:
  """Component progress lines and warnings; TFX's INFO chatter stays out of the terminal."""
  absl_logger = logging.getLogger('absl')
  absl_logger.setLevel(logging.INFO)
  # Some TFX libraries toggle absl's verbosity mid-run (to WARNING and back), which would hide
  # the runner's INFO progress lines; the handlers below decide what is shown instead.
  absl_logger.setLevel = lambda level: None
  absl_logger.propagate = False
  absl_logger.addHandler(ProgressPrinter())
  warnings_handler = logging.StreamHandler(sys.stderr)
  warnings_handler.setLevel(logging.WARNING)
  warnings_handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
  warnings_handler.addFilter(
      lambda record: not any(noise in record.getMessage() for noise in _KNOWN_NOISE))
  absl_logger.addHandler(warnings_handler)
  logging.getLogger('tensorflow').setLevel(logging.ERROR)


def root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return error


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  if args.data_root is None:
    data_root = configs.DEFAULT_DATA_ROOT
    ensure_default_data(data_root)
  else:
    data_root = os.path.abspath(args.data_root)
  problem = check_data_root(data_root)
  if problem:
    print(f'local_runner.py: error: {problem}', file=sys.stderr)
    return EXIT_USAGE

  config = configs.PipelineConfig(
      data_root=data_root,
      output_dir=os.path.abspath(args.output_dir),
      epochs=args.epochs,
      image_size=args.image_size,
      min_accuracy=args.min_accuracy,
      min_malignant_recall=args.min_malignant_recall,
      model_name=args.model_name,
      max_unreadable_fraction=args.max_unreadable_fraction,
      label_conflict_policy=args.label_conflicts,
      max_hash_distance=args.max_hash_distance,
      network=args.model)

  # Imported late: TFX takes seconds to import, and bad flags should fail fast.
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from runs import summary  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top

  try:
    os.makedirs(config.output_dir, exist_ok=True)
  except OSError as error:
    print(f'local_runner.py: error: cannot create output dir {config.output_dir}: '
          f'{error.strerror}', file=sys.stderr)
    return EXIT_USAGE
  show_progress_and_warnings()
  print(f'Running pipeline {config.pipeline_name} on {data_root}\n'
        f'  output: {config.output_dir} (ML Metadata: {config.metadata_path})', flush=True)
  try:
    tfx.orchestration.LocalDagRunner().run(create_pipeline(
        config, tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path)))
  except KeyboardInterrupt:
    print('local_runner.py: interrupted', file=sys.stderr)
    return 130
  except Exception as error:  # pylint: disable=broad-except
    cause = root_cause(error)
    write_run_report(config)  # What the failed run got to, e.g. the data validation.
    # Last, so that the reason is the last line a user sees.
    print(f'local_runner.py: pipeline failed: {cause.__class__.__name__}: {cause}',
          file=sys.stderr)
    return EXIT_PIPELINE_FAILED
  print()
  print(summary.format_summary(summary.summarize_run(config.metadata_path),
                               min_accuracy=config.min_accuracy,
                               min_malignant_recall=config.min_malignant_recall))
  write_run_report(config)
  return 0


def write_run_report(config) -> None:
  """Writes <output-dir>/report/index.html for the latest run and names it."""
  from runs import report  # pylint: disable=g-import-not-at-top
  try:
    print(f'  report: {report.write_report(config.metadata_path, config.report_dir)}')
  except Exception as error:  # pylint: disable=broad-except
    # The run itself is over; a report that cannot be drawn must not hide its outcome.
    cause = root_cause(error)
    print(f'local_runner.py: warning: no run report: {cause.__class__.__name__}: {cause}',
          file=sys.stderr)


if __name__ == '__main__':
  sys.exit(main())
