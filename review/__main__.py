"""python -m review: a reviewer's labels for a batch inference run, and their export as a span.

    python -m review label --reviewer NAME FILE LABEL [--run RUN]   # benign, malignant, normal,
                                                                   # 'not usable', 'second look'
    python -m review export --to DATA_ROOT [--run RUN]
    python -m review serve [--host 127.0.0.1] [--port 8600]      # the page (review/app.py)

`--run` is a batch inference run (`python -m runs.inspect` lists them; default: the newest).
The output directory and store are the pipeline's (`--output-dir`, `--metadata-connection`).
A review is recorded as review/reviews.py says, the export as review/export.py says. Errors a user
can cause are one line and exit code 2.
"""

import argparse
import sys
import threading
from typing import List, Optional

from cli import command_line

command_line.prepare_environment()

# pylint: disable=g-import-not-at-top
from cli import exclusive_run, reader_flags
from orchestration import metadata_connection

PROG = 'python -m review'


def _parser() -> argparse.ArgumentParser:
  parser = command_line.OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest='command', required=True)
  label = commands.add_parser('label', help="record a reviewer's label for an image")
  label.add_argument('file', help="the image's path as the run's predictions name it")
  label.add_argument('label', help="benign, malignant, normal, 'not usable' or 'second look' "
                     '(someone else should decide)')
  label.add_argument('--reviewer', required=True, help='who reviews (a name; no accounts)')
  export = commands.add_parser('export', help="write the run's reviewed images as the data "
                               "root's next span, and record it in ML Metadata")
  export.add_argument('--to', required=True, metavar='DATA_ROOT',
                      help='the data root of span folders the pipeline trains on')
  serve = commands.add_parser('serve', help='serve the review page')
  serve.add_argument('--host', default='127.0.0.1',
                     help='the address to listen on (default: %(default)s, this machine only)')
  serve.add_argument('--port', type=int, default=8600, help='default: %(default)s')
  for command in (label, export):
    command.add_argument('--run', help='the batch inference run (default: the newest)')
  for command in (label, export, serve):
    reader_flags.add_reader_flags(command)
  return parser


def serve(config, host: str, port: int) -> int:
  """Serves the page until interrupted."""
  from review import app  # pylint: disable=g-import-not-at-top
  from runs import inference, metadata_store  # pylint: disable=g-import-not-at-top
  from serving import server  # pylint: disable=g-import-not-at-top
  from serving import predict  # pylint: disable=g-import-not-at-top
  loaded, loading = {}, threading.Lock()

  def model_of_version(version):
    with loading:  # loaded once, on the first overlay or upload, whichever thread asks
      if version not in loaded:
        loaded[version] = predict.LocalModel(config.serving_model_dir, version)
      return loaded[version]

  application = app.ReviewApplication(
      config.output_dir,
      lambda: inference.inference_runs(metadata_store.open_pipeline_store(config)),
      model_card_dir=config.model_card_dir, model_of_version=model_of_version)
  try:
    listening = server.create_rest_server(
        application, host, port, threads=4, read_timeout_seconds=30, max_connections=64,
        max_request_bytes=app.MAX_UPLOAD_BYTES)
  except OSError as error:
    print(f'{PROG}: error: cannot listen on {host}:{port}: {error.strerror}', file=sys.stderr)
    return command_line.EXIT_USAGE
  print(f'review station on http://{host}:{listening.effective_port}/', flush=True)
  try:
    listening.run()
  except KeyboardInterrupt:
    pass
  return 0


def main(argv: Optional[List[str]] = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  config = reader_flags.reader_config(args)
  problem = metadata_connection.reader_problem(config)
  if problem:
    parser.exit(exclusive_run.exit_code_of_problem(config), f'{PROG}: error: {problem}\n')
  # Imported late: TensorFlow and ML Metadata take seconds, and bad flags should fail fast.
  import ml_metadata as mlmd  # pylint: disable=g-import-not-at-top
  from review import app, export, reviews  # pylint: disable=g-import-not-at-top
  from runs import inference, metadata_store  # pylint: disable=g-import-not-at-top

  if args.command == 'serve':
    return serve(config, args.host, args.port)
  runs = inference.inference_runs(metadata_store.open_pipeline_store(config))
  run = app.find_run(runs, args.run)
  if run is None:
    parser.exit(command_line.EXIT_USAGE, f'{PROG}: error: ' + (
        f'no batch inference run {args.run} (runs: {", ".join(run["run"] for run in runs)})'
        if args.run and runs else 'no batch inference run yet (local_runner.py --infer-dir)')
        + '\n')
  try:
    if args.command == 'label':
      review = reviews.record_review(config.output_dir, run['run'], args.file, args.label,
                                     args.reviewer, export.answers_of(run))
      print(f'{review.file}: {review.label} ({review.reviewer}, {review.reviewed_at}; the model '
            f'decided {review.answer.get("decision")})')
      return 0
    exported = export.export_span(config.output_dir, run, args.to)
  except reviews.ReviewError as error:
    parser.exit(command_line.EXIT_USAGE, f'{PROG}: error: {error}\n')
  artifact_id = export.record_export(
      mlmd.MetadataStore(metadata_connection.connection_config(config)), run, exported)
  print(f'span {exported.span} written to {exported.folder}: '
        + ', '.join(f'{name} {count}' for name, count in exported.counts.items())
        + f'; left out: {len(exported.left_out[reviews.NOT_USABLE])} not usable, '
        f'{len(exported.left_out[reviews.SECOND_LOOK])} flagged for a second look; '
        f'{exported.agreed} review(s) '
        f'agreed with the model\'s decision; recorded in ML Metadata as artifact {artifact_id}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
