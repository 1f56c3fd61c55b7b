"""Runs the breast-ultrasound TFX pipeline on this machine with LocalDagRunner.

    python local_runner.py [--data-root DIR] [--output-dir DIR] [pipeline flags...]

The flags are the pipeline's, shared with every runner (`cli/flags.py`); `--help` lists
them. Without --data-root it runs on the synthetic data set under data/, generating it the first
time. ML Metadata goes to <output-dir>/metadata.sqlite, artifacts under <output-dir>/pipeline/,
and a blessed model to <output-dir>/serving/<model-name>/<version>/. Caching is on: an unchanged
rerun reuses every component. Progress is printed while it runs, a summary at the end, and the
run report (pictures, metrics, the blessing decision) goes to <output-dir>/report/index.html.
"""

import errno
import logging
import os
import re
import sys
import time
import warnings
from typing import List, Optional

from cli import command_line

command_line.prepare_environment()
# TFMA divides by zero for a class absent from a slice and reports NaN, which the summary shows.
warnings.filterwarnings('ignore', category=RuntimeWarning, module='tensorflow_model_analysis')

from cli import exclusive_run, flags, reader_flags  # pylint: disable=g-import-not-at-top
from orchestration import metadata_connection  # pylint: disable=g-import-not-at-top
from pipeline import configs  # pylint: disable=g-import-not-at-top
from runs import after_run  # pylint: disable=g-import-not-at-top

PROG = 'local_runner.py'

EXIT_USAGE = command_line.EXIT_USAGE
EXIT_PIPELINE_FAILED = command_line.EXIT_PIPELINE_FAILED
EXIT_INTERRUPTED = command_line.EXIT_INTERRUPTED
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


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


def main(argv: Optional[List[str]] = None) -> int:
  parser = command_line.OneLineArgumentParser(
      prog=PROG, description='Run the breast-ultrasound TFX pipeline locally.')
  flags.add_pipeline_flags(parser)
  reader_flags.add_metadata_flags(parser)
  parser.add_argument('--infer-dir', metavar='DIR',
                      help='instead of training: classify the images in DIR (any layout; lesion '
                      'masks and non-images are skipped and named) with the model a server would '
                      'serve (the newest pushed version that loads), '
                      "through TFX's BulkInferrer, and write predictions.csv and .jsonl")
  parser.add_argument('--wait-for-output-dir', action='store_true',
                      help='when another run is using the output dir (or, in a shared ML '
                      'Metadata store, the pipeline), wait for it to finish instead of stopping '
                      'at once')
  args = flags.parse_flags(parser, argv)
  if args.infer_dir is not None:
    return infer(args)
  if args.data_root is None:
    command_line.ensure_default_data(configs.DEFAULT_DATA_ROOT)
  else:
    args.data_root = os.path.abspath(args.data_root)
  config = flags.config_from_flags(args, output_dir=os.path.abspath(args.output_dir))
  problem = flags.check_inputs(config)
  if problem:
    print(f'local_runner.py: error: {problem}', file=sys.stderr)
    return EXIT_USAGE
  problem = metadata_connection.store_problem(config)
  if problem:
    print(f'local_runner.py: error: {problem}', file=sys.stderr)
    return command_line.EXIT_METADATA_UNAVAILABLE

  try:
    os.makedirs(config.output_dir, exist_ok=True)
    return exclusive_run.run_exclusively(config, args.wait_for_output_dir, PROG,
                                               lambda: run_locked(config))
  except OSError as error:  # creating the output dir or its lock file
    trouble = output_trouble(error, config.output_dir)
    if trouble:
      print(f'local_runner.py: error: {trouble}', file=sys.stderr)
      return EXIT_PIPELINE_FAILED
    print(f'local_runner.py: error: cannot create output dir {config.output_dir}: '
          f'{error.strerror}', file=sys.stderr)
    return EXIT_USAGE


def infer(args) -> int:
  """`--infer-dir`: the inference pipeline over a folder, with the model a server would serve."""
  config = flags.config_from_flags(args, output_dir=os.path.abspath(args.output_dir))
  infer_dir = os.path.abspath(args.infer_dir)
  if not os.path.isdir(infer_dir):
    print(f'local_runner.py: error: --infer-dir {args.infer_dir} does not exist or is not a '
          'folder', file=sys.stderr)
    return EXIT_USAGE
  from inputs import image_files  # pylint: disable=g-import-not-at-top
  entries = image_files.list_unlabelled_folder(infer_dir)
  if not any(entry['kind'] == 'image' for entry in entries):
    print(f'local_runner.py: error: --infer-dir {args.infer_dir} has no PNG, JPEG, BMP or DICOM '
          f'image to classify ({len(entries)} other files)', file=sys.stderr)
    return EXIT_USAGE
  problem = metadata_connection.reader_problem(config)
  if problem:
    print(f'local_runner.py: error: {problem}', file=sys.stderr)
    return exclusive_run.exit_code_of_problem(config)
  from runs import metadata_store  # pylint: disable=g-import-not-at-top
  store = metadata_store.open_pipeline_store(config)
  if not metadata_store.pushes(store):
    print(f'local_runner.py: error: no model has been pushed in {config.output_dir} yet',
          file=sys.stderr)
    return EXIT_USAGE
  pushed, why_not = model_to_infer_with(
      store, config.serving_model_dir,
      log=lambda line: print(f'local_runner.py: model directory: {line}', file=sys.stderr))
  if pushed is None:
    print(f'local_runner.py: error: {why_not}', file=sys.stderr)
    return EXIT_USAGE
  return exclusive_run.run_exclusively(
      config, args.wait_for_output_dir, PROG,
      lambda: run_inference_locked(config, infer_dir, pushed))


def model_to_infer_with(store, serving_dir: str, log=print):
  """The model `--infer-dir` classifies with: the version a model server would serve from
  `serving_dir` (the newest that loads, by serving/model_directory.py's rule; each newer one that
  does not is named through `log`) and the Model ML Metadata records as pushed as that version.
  Returns (runs.inference.PushedModel, None), or (None, why there is none)."""
  from runs import inference  # pylint: disable=g-import-not-at-top
  from serving import model_directory, model_versions  # pylint: disable=g-import-not-at-top
  try:
    served = model_versions.load_chosen_version(serving_dir, log=log)
  except model_directory.ModelDirectoryError as error:
    return None, str(error)
  pushed = inference.pushed_as(store, served.version)
  if pushed is None:
    return None, (f'version {served.version} in {serving_dir}, which a model server would serve, '
                  'was not pushed by this pipeline (ML Metadata records no push of it): remove '
                  'it, or push a model')
  return pushed, None


def run_inference_locked(config: configs.PipelineConfig, infer_dir: str, pushed) -> int:
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  from pipeline.inference_pipeline import create_inference_pipeline  # pylint: disable=g-import-not-at-top
  from runs import inference, metadata_store  # pylint: disable=g-import-not-at-top

  show_progress_and_warnings()
  print(f'Running pipeline {config.inference_pipeline_name} on {infer_dir}\n'
        f'  model: version {pushed.version} (artifact {pushed.model_id})', flush=True)
  try:
    LocalDagRunner().run(create_inference_pipeline(
        config, infer_dir, pushed.model_uri, pushed.model_blessing_uri,
        metadata_connection.connection_config(config)))
  except KeyboardInterrupt:
    print('local_runner.py: interrupted', file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as error:  # pylint: disable=broad-except
    cause = command_line.root_cause(error)
    print(f'local_runner.py: inference failed: {cause.__class__.__name__}: {cause}',
          file=sys.stderr)
    return EXIT_PIPELINE_FAILED
  runs = inference.inference_runs(metadata_store.open_pipeline_store(config))
  print()
  print(inference.format_inference_run(runs[-1]))
  return 0


def output_trouble(error: BaseException, output_dir: str) -> Optional[str]:
  """One line for a failed write to the output (a full or read-only filesystem), or None."""
  code = getattr(error, 'errno', None)
  message = str(getattr(error, 'message', None) or error)
  where = getattr(error, 'filename', None) or output_dir
  if code in _NO_SPACE or 'No space left on device' in message:
    return (f'no space left on the device writing {where}; nothing this run wrote was pushed, '
            'and versions pushed before are untouched')
  if code in _NOT_WRITABLE or 'Read-only file system' in message:
    return f'cannot write to {where}: {os.strerror(code) if code else message}'
  return None


def run_locked(config: configs.PipelineConfig) -> int:
  """Runs the pipeline while this process holds the output directory; prints the summary."""
  # Imported late: TFX takes seconds to import, and bad flags should fail fast.
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top

  show_progress_and_warnings()
  print(f'Running pipeline {config.pipeline_name} on {config.data_root}\n'
        f'  output: {config.output_dir} (ML Metadata: {metadata_connection.describe(config)})',
        flush=True)
  try:
    LocalDagRunner().run(create_pipeline(config, metadata_connection.connection_config(config)))
  except KeyboardInterrupt:
    print('local_runner.py: interrupted', file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as error:  # pylint: disable=broad-except
    cause = command_line.root_cause(error)
    # The report shows what the failed run got to, e.g. the data validation.
    after_run.write_run_report(config, PROG)
    # Last, so that the reason is the last line a user sees.
    trouble = output_trouble(cause, config.output_dir)
    if trouble:
      print(f'local_runner.py: error: {trouble}', file=sys.stderr)
    else:
      print(f'local_runner.py: pipeline failed: {cause.__class__.__name__}: {cause}',
            file=sys.stderr)
    return EXIT_PIPELINE_FAILED
  after_run.print_summary_and_report(config, PROG)
  return 0


if __name__ == '__main__':
  sys.exit(main())
