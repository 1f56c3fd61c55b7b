"""A local server for TensorFlow Serving's REST and gRPC APIs, for machines without Docker.

    python -m serving.server --model-base-path OUTPUT/serving/breast_ultrasound
        [--model-name NAME] [--port 8501] [--grpc-port 8500] [--host 127.0.0.1]
        [--poll-seconds 2] [--max-request-bytes 33554432] [--read-timeout-seconds 10]
        [--max-workers CPUS] [--max-queued-requests 2×CPUS] [--max-connections 512]
        [--enable-cors] [--request-log-dir DIR [--request-log-rate 0.1]]
    python -m serving.server --model-config-file models.config [...]

It serves the subset of TF Serving's APIs that the pipeline's models need, with TF Serving's
paths, JSON, status codes and error texts (read from its REST handler; docs/serving.md has the
table), so a client written against one works with the other:

- `GET  /v1/models/<name>[/versions/<v>|/labels/<l>]`: version status;
- `GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata`: the SignatureDefs, proto field
  names kept and the Any unpacked;
- `POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict`: the row ("instances") and
  columnar ("inputs") forms, binary strings as {"b64": ...}, gzip bodies;
- `OPTIONS` (CORS preflight), and CORS headers on every answer with `--enable-cors`;
- gRPC on `--grpc-port`: PredictionService.Predict and GetModelMetadata, ModelService.
  GetModelStatus (serving/grpc_api.py), from the same loaded versions.

Version labels come from a TF Serving model config file (`--model-config-file`, one model).
Like TF Serving's default version policy it serves the newest version in the base path that
loads. It looks for new versions every `--poll-seconds`, loads one beside the version in service
and switches over only once it has loaded, so requests never wait for or fail on a push; a
broken version never stops an older one from serving, and a deleted one hands over to the newest
remaining (serving/model_versions.py).

The REST API (serving/rest_app.py) runs under waitress, a production WSGI server: its one
event loop reads each request whole before a worker thread sees it, so a slow, stalled or idle
keep-alive client holds a socket, never a worker; a connection silent for
`--read-timeout-seconds` is closed; at most `--max-connections` are open at once, more wait in
the listen backlog (1024). At most `--max-workers` predictions run at once and at most
`--max-queued-requests` wait for a worker; a request beyond that is answered 503 with
`Retry-After: 1` at once. A body over `--max-request-bytes` is
answered 413, naming the limit, as TF Serving's HTTP layer answers one over its limit, once the
body it declared has been read and thrown away (up to 1 GiB): a client that sends its whole body
before it reads, as most do, gets the answer rather than a reset connection. It listens on
127.0.0.1 unless `--host` says otherwise.

With `--request-log-dir`, a `--request-log-rate` share of the answered predict requests (REST
and gRPC) is logged there as TF Serving's request logging writes them (serving/request_log.py);
`python -m runs.skew` compares their images with the serving model's training data.
"""

import argparse
import logging
import os
import sys
import threading
import warnings
from typing import List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# google-api-core, imported by TensorFlow, warns on every import that Python 3.10 support ends.
warnings.filterwarnings('ignore', category=FutureWarning, module='google')

import tensorflow as tf  # pylint: disable=g-import-not-at-top
import waitress  # pylint: disable=g-import-not-at-top
import waitress.channel  # pylint: disable=g-import-not-at-top
import waitress.parser  # pylint: disable=g-import-not-at-top
import waitress.server  # pylint: disable=g-import-not-at-top
from waitress.utilities import RequestEntityTooLarge  # pylint: disable=g-import-not-at-top
from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top

from serving import command_line, grpc_api  # pylint: disable=g-import-not-at-top
from serving.model_versions import ModelVersions  # pylint: disable=g-import-not-at-top
from serving.request_log import RequestLogger  # pylint: disable=g-import-not-at-top
from serving.rest_app import RestApplication  # pylint: disable=g-import-not-at-top

EXIT_USAGE = command_line.EXIT_USAGE
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_READ_TIMEOUT_SECONDS = 10
# Each prediction already uses every core (TensorFlow's intra-op threads): more at once than
# cores adds memory and latency, not throughput (docs/performance.md measures it).
DEFAULT_MAX_WORKERS = len(os.sched_getaffinity(0))
DEFAULT_MAX_CONNECTIONS = 512
LISTEN_BACKLOG = 1024
# Threads beyond the running and queued predictions, so a busy server still answers status,
# metadata and its 503s at once rather than queueing them behind predictions.
SPARE_THREADS = 4
# A body declared larger than this is refused without reading it (the client may see a reset).
MAX_DRAINED_BYTES = 1024 ** 3


class _DrainingRequestParser(waitress.parser.HTTPRequestParser):
  """Waitress's parser, except that a body declared over the limit is read and thrown away
  before the 413 is sent: waitress answers at once and closes, and a client still sending its
  body then sees its connection reset instead of the answer (and one that sent `Expect:
  100-continue` is told to go on before it is refused)."""

  _left_to_drain = 0

  def received(self, data: bytes) -> int:
    if self._left_to_drain:
      consumed = min(len(data), self._left_to_drain)
      self._left_to_drain -= consumed
      self.completed = not self._left_to_drain
      return consumed
    consumed = super().received(data)
    if (isinstance(self.error, RequestEntityTooLarge) and self.headers_finished
        and not self.chunked and self.content_length <= MAX_DRAINED_BYTES):
      self._left_to_drain = self.content_length
      self.completed = False
    return consumed


class _DrainingChannel(waitress.channel.HTTPChannel):
  parser_class = _DrainingRequestParser


def create_rest_server(application: RestApplication, host: str, port: int, threads: int,
                       read_timeout_seconds: int, max_connections: int,
                       max_request_bytes: int):
  """A waitress server for `application`, listening (OSError when it cannot); `.run()` serves."""
  server = waitress.create_server(
      application, host=host, port=port, threads=threads,
      backlog=LISTEN_BACKLOG, connection_limit=max_connections,
      channel_timeout=read_timeout_seconds, cleanup_interval=1,
      max_request_body_size=max_request_bytes,
      # poll() has no 1024-descriptor ceiling, which select() has.
      asyncore_use_poll=True, clear_untrusted_proxy_headers=True)
  # A host that resolves to several addresses gets one listening server per address.
  for listener in [server, *getattr(server, 'map', {}).values()]:
    if isinstance(listener, waitress.server.BaseWSGIServer):
      listener.channel_class = _DrainingChannel
  return server


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  parser = command_line.OneLineArgumentParser(
      prog='python -m serving.server',
      description='Serve a pushed model over the TensorFlow Serving REST API.')
  parser.add_argument('--model-base-path',
                      help='folder of numbered versions, as Pusher writes: '
                      '<output-dir>/serving/<model-name>')
  parser.add_argument('--model-config-file',
                      help="TF Serving's model config file (a text ModelServerConfig) with one "
                      'model: its name, base_path and version_labels (served at '
                      '/v1/models/<name>/labels/<label>); instead of --model-base-path')
  parser.add_argument('--enable-cors', action='store_true',
                      help="add CORS headers to every answer (TF Serving's "
                      '--rest_api_enable_cors_support)')
  parser.add_argument('--model-name', help='name in the URLs (default: the last folder of '
                      '--model-base-path)')
  parser.add_argument('--port', type=int, default=8501, help='default: %(default)s; 0 picks a '
                      'free port')
  parser.add_argument('--grpc-port', type=int, default=8500,
                      help="TF Serving's gRPC API (PredictionService, ModelService) on this port "
                      '(default: %(default)s, as TF Serving; 0 picks a free port)')
  parser.add_argument('--host', default='127.0.0.1', help='address to listen on '
                      '(default: %(default)s, this machine only)')
  parser.add_argument('--poll-seconds', type=float, default=2.0,
                      help='how often to look for new versions (default: %(default)s)')
  parser.add_argument('--max-request-bytes', type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                      help='larger request bodies are refused (default: %(default)s)')
  parser.add_argument('--read-timeout-seconds', type=int, default=DEFAULT_READ_TIMEOUT_SECONDS,
                      help='a connection silent for this many seconds (a request half sent, an '
                      'idle keep-alive) is closed (default: %(default)s)')
  parser.add_argument('--max-workers', type=int, default=DEFAULT_MAX_WORKERS,
                      help='predictions run at once; one more is answered 503 with Retry-After '
                      '(default: the CPUs this process may use, here %(default)s)')
  parser.add_argument('--max-queued-requests', type=int,
                      help='predictions that wait for a worker; one more is answered 503 with '
                      'Retry-After (default: twice --max-workers)')
  parser.add_argument('--request-log-dir',
                      help='log a sample of the answered predict requests here, as TF '
                      "Serving's request logging does (PredictionLog TFRecords)")
  parser.add_argument('--request-log-rate', type=float, default=0.1,
                      help='the share of requests logged, from 0 to 1 (default: %(default)s)')
  parser.add_argument('--max-connections', type=int, default=DEFAULT_MAX_CONNECTIONS,
                      help='connections open at once; more wait in the listen backlog '
                      '(default: %(default)s)')
  args = parser.parse_args(argv)
  if args.poll_seconds <= 0:
    parser.error('--poll-seconds must be more than 0')
  if args.max_request_bytes < 1:
    parser.error('--max-request-bytes must be at least 1')
  if args.read_timeout_seconds < 1:
    parser.error('--read-timeout-seconds must be at least 1')
  if args.max_workers < 1:
    parser.error('--max-workers must be at least 1')
  if args.max_connections < 1:
    parser.error('--max-connections must be at least 1')
  if not 0 <= args.request_log_rate <= 1:
    parser.error('--request-log-rate must be between 0 and 1')
  if args.max_queued_requests is None:
    args.max_queued_requests = 2 * args.max_workers
  if args.max_queued_requests < 0:
    parser.error('--max-queued-requests must be at least 0')
  if (args.model_base_path is None) == (args.model_config_file is None):
    parser.error('give --model-base-path or --model-config-file')
  args.version_labels = {}
  if args.model_config_file is not None:
    try:
      config = read_model_config(args.model_config_file)
    except ValueError as error:
      parser.error(f'--model-config-file {args.model_config_file}: {error}')
    args.model_base_path = config.base_path
    args.model_name = args.model_name or config.name
    args.version_labels = dict(config.version_labels)
  if args.model_name is None:
    args.model_name = os.path.basename(os.path.normpath(args.model_base_path))
  return args


def read_model_config(path: str):
  """The one ModelConfig of a TF Serving model config file; ValueError saying what is wrong."""
  try:
    with open(path, encoding='utf-8') as handle:
      config = text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig())
  except OSError as error:
    raise ValueError(error.strerror) from None
  except text_format.ParseError as error:
    raise ValueError(f'not a ModelServerConfig text proto: {error}') from None
  models = list(config.model_config_list.config)
  if len(models) != 1:
    raise ValueError(f'it lists {len(models)} models; this server serves exactly one')
  if not models[0].base_path:
    raise ValueError(f'model {models[0].name!r} has no base_path')
  return models[0]


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  if not os.path.isdir(args.model_base_path):
    print(f'serving.server: error: model base path {args.model_base_path} does not exist or '
          'is not a folder', file=sys.stderr)
    return EXIT_USAGE

  def log(message: str) -> None:
    print(f'serving.server: {message}', flush=True)

  versions = ModelVersions(args.model_base_path, log=log, labels=args.version_labels)
  versions.refresh()
  if versions.serving is None:
    log(f'no loadable version in {args.model_base_path} yet; waiting for one to be pushed')
  request_logger = None
  if args.request_log_dir:
    try:
      request_logger = RequestLogger(args.request_log_dir, args.request_log_rate, args.model_name)
    except (OSError, tf.errors.OpError) as error:
      print(f'serving.server: error: cannot write request logs to {args.request_log_dir}: '
            f'{getattr(error, "message", None) or error}', file=sys.stderr)
      return EXIT_USAGE
    log(f'logging {args.request_log_rate:g} of the predict requests to {request_logger.path}')
  application = RestApplication(args.model_name, versions, args.max_request_bytes,
                                args.max_workers, args.max_queued_requests, args.enable_cors,
                                request_logger)
  # waitress says "Task queue depth is N" whenever requests wait for a thread: under load, on
  # every request. The 503s and Retry-After already tell clients; its errors still show.
  logging.getLogger('waitress.queue').setLevel(logging.ERROR)
  try:
    threads = args.max_workers + args.max_queued_requests + SPARE_THREADS
    server = create_rest_server(application, args.host, args.port, threads,
                                args.read_timeout_seconds, args.max_connections,
                                args.max_request_bytes)
  except OSError as error:
    print(f'serving.server: error: cannot listen on {args.host}:{args.port}: '
          f'{error.strerror}', file=sys.stderr)
    return EXIT_USAGE
  try:
    grpc_server, grpc_port = grpc_api.start_grpc_server(
        f'{args.host}:{args.grpc_port}', args.model_name, versions, args.max_workers,
        args.max_request_bytes, request_logger)
  except RuntimeError:
    server.close()
    print(f'serving.server: error: cannot listen on {args.host}:{args.grpc_port} (gRPC)',
          file=sys.stderr)
    return EXIT_USAGE
  host, port = server.effective_host, server.effective_port
  log(f'gRPC listening on {host}:{grpc_port}')
  log(f'listening on http://{host}:{port}/v1/models/{args.model_name}')
  stop = threading.Event()
  threading.Thread(target=versions.poll_forever, args=(args.poll_seconds, stop),
                   daemon=True).start()
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    stop.set()
    grpc_server.stop(grace=1)
    server.close()
    if request_logger is not None:
      request_logger.close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
