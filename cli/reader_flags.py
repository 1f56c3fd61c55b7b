"""The flags of the commands that read a pipeline's runs (the inspector, the report, the skew
check, the review station) and of where ML Metadata is, which the runners share.

Free of TensorFlow, Beam and the networks, so that a command that only reads ML Metadata
(`python -m runs.inspect`) answers in about a second rather than loading TensorFlow first.
"""

import argparse
import os
import re

from orchestration import metadata_connection
from pipeline import configs

_PIPELINE_NAME = re.compile(r'^[a-z0-9][a-z0-9-]{0,62}$')  # what Vertex allows


def existing_file(text: str) -> str:
  if not os.path.isfile(text):
    raise argparse.ArgumentTypeError(f'{text} does not exist or is not a file')
  return text


def pipeline_name(text: str) -> str:
  if not _PIPELINE_NAME.match(text):
    raise argparse.ArgumentTypeError(
        f'{text!r} is not a pipeline name (lowercase letters, digits and -, at most 63)')
  return text


def _metadata_connection(text: str) -> str:
  try:
    metadata_connection.parse_url(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error)) from None
  return text


def add_pipeline_name_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--pipeline-name', type=pipeline_name, default=configs.PIPELINE_NAME,
                      help='the pipeline\'s name in ML Metadata; pipelines sharing one '
                      'store (--metadata-connection) each need their own (default: %(default)s)')


def add_metadata_flags(parser: argparse.ArgumentParser) -> None:
  """Where ML Metadata is: the runners that write it and the commands that read it."""
  parser.add_argument('--metadata-connection', type=_metadata_connection, metavar='URL',
                      help='ML Metadata on a MySQL or MariaDB server, '
                      'mysql://USER@HOST[:PORT]/DB, the password from '
                      f'--metadata-password-file or ${metadata_connection.PASSWORD_VARIABLE} '
                      '(default: SQLite, <output-dir>/metadata.sqlite)')
  parser.add_argument('--metadata-password-file', type=existing_file, metavar='FILE',
                      help="a file whose first line is the database server's password")


def add_reader_flags(parser: argparse.ArgumentParser) -> None:
  """The flags of a command that reads a pipeline's runs: its output dir, its name and its
  store; `reader_config` turns them into a configuration."""
  parser.add_argument('--output-dir', default=configs.DEFAULT_OUTPUT_DIR,
                      help="the pipeline's --output-dir (default: %(default)s)")
  add_pipeline_name_flag(parser)
  add_metadata_flags(parser)


def store_settings(args: argparse.Namespace) -> dict:
  """The PipelineConfig fields of add_metadata_flags' flags (none where a parser lacks them)."""
  password_file = getattr(args, 'metadata_password_file', None)
  return dict(metadata_connection=getattr(args, 'metadata_connection', None),
              metadata_password_file=password_file and os.path.abspath(password_file))


def reader_config(args: argparse.Namespace) -> configs.PipelineConfig:
  """The configuration a command that reads ML Metadata needs: where the store is, and which
  pipeline in it."""
  # No Beam arguments: a reader runs no Beam pipeline, and their default imports Beam (1 s).
  return configs.PipelineConfig(output_dir=os.path.abspath(args.output_dir),
                                pipeline_name=args.pipeline_name, beam_pipeline_args=[],
                                **store_settings(args))
