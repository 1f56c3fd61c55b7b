"""What every command of the project shares: the same environment for the libraries, the exit
codes, a bad flag as one line on stderr and exit code 2, and the synthetic default data."""

import argparse
import os
import warnings

EXIT_PIPELINE_FAILED = 1  # the pipeline stopped, or the output directory could not be written
EXIT_USAGE = 2
EXIT_OUTPUT_DIR_BUSY = 3  # or, with a shared ML Metadata store, the pipeline is being run
EXIT_METADATA_UNAVAILABLE = 4  # the ML Metadata server cannot be reached or used
EXIT_INTERRUPTED = 130


def prepare_environment() -> None:
  """Call before TensorFlow is imported: Keras 2 (tf_keras), as TFT and TFMA 1.16 expect, and
  none of the libraries' import-time noise."""
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow's C++ banner
  # ML Metadata's C++ log (a line per database connection, and its own account of a server that
  # cannot be reached, which the command says in one line instead); its errors still raise.
  os.environ.setdefault('GLOG_minloglevel', '3')
  # Beam's worker processes (--beam-workers) import the components and model code by dotted
  # path, wherever the command was started from.
  project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  paths = os.environ.get('PYTHONPATH', '').split(os.pathsep)
  if project_root not in paths:
    os.environ['PYTHONPATH'] = os.pathsep.join(path for path in [project_root, *paths] if path)
  # google-api-core warns on every import that Python 3.10 support is ending; TFX 1.16 needs 3.10.
  warnings.filterwarnings('ignore', category=FutureWarning, module='google')


class OneLineArgumentParser(argparse.ArgumentParser):
  """argparse, but a bad flag is one line on stderr and exit code 2."""

  def error(self, message):
    self.exit(EXIT_USAGE, f'{self.prog}: error: {message}\n')


def root_cause(error: BaseException) -> BaseException:
  """The innermost exception of a chain: what a one-line error message should name."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return error


def ensure_default_data(data_root: str) -> None:
  """Generates the synthetic default data set the first time it is needed."""
  if os.path.isdir(data_root) and os.listdir(data_root):
    return
  from data import synthetic  # pylint: disable=g-import-not-at-top
  print(f'Generating the synthetic default data set under {data_root} ...', flush=True)
  count = synthetic.generate_dataset(data_root, with_near_duplicates=True)
  print(f'  {count} images written (lesion masks beside them, a few near-duplicates planted).',
        flush=True)
