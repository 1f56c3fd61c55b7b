"""What every command of the project shares: the same environment for the libraries, and a bad
flag is one line on stderr and exit code 2."""

import argparse
import os
import warnings

EXIT_USAGE = 2


def prepare_environment() -> None:
  """Call before TensorFlow is imported: Keras 2 (tf_keras), as TFT and TFMA 1.16 expect, and
  none of the libraries' import-time noise."""
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow's C++ banner
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
