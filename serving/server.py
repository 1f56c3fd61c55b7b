"""A local server for TensorFlow Serving's REST and gRPC APIs, for machines without Docker.

    python -m serving.server --model-base-path OUTPUT/serving/breast_ultrasound
        [--model-name NAME] [--port 8501] [--grpc-port 8500] [--host 127.0.0.1]
        [--poll-seconds 2] [--max-request-bytes 33554432] [--read-timeout-seconds 10]
        [--max-workers 16] [--enable-cors]
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
remaining (serving/model_versions.py). A bad request gets status 400 and `{"error": ...}`, any
path under /v1/ that is no route 400 `Malformed request: ...`. Each connection has a worker
thread, at most `--max-workers` at once (more get 503), and each read waits at most
`--read-timeout-seconds`. It listens on 127.0.0.1 unless `--host` says otherwise.
"""

import argparse
import http.server
import json
import os
import re
import socket
import sys
import threading
import urllib.parse
import warnings
import zlib
from typing import Any, Dict, List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# google-api-core, imported by TensorFlow, warns on every import that Python 3.10 support ends.
warnings.filterwarnings('ignore', category=FutureWarning, module='google')

from google.protobuf import json_format, text_format  # pylint: disable=g-import-not-at-top
from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top

from serving import command_line, grpc_api, rest_api  # pylint: disable=g-import-not-at-top
from serving.model_versions import (INVALID_ARGUMENT, ModelVersions, ServingError,  # pylint: disable=g-import-not-at-top
                                    find_signature, model_status, run_signature,
                                    signature_def_map, signature_inputs)

EXIT_USAGE = command_line.EXIT_USAGE
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_WORKERS = 16
# How TF Serving's HTTP server answers each canonical code (http_server.cc's ToHTTPStatusCode).
_HTTP_STATUS = {'INVALID_ARGUMENT': 400, 'NOT_FOUND': 404, 'FAILED_PRECONDITION': 400,
                'UNIMPLEMENTED': 501}
# TF Serving's path patterns (http_rest_api_util.cc), matched against the whole path.
_VERSION_OR_LABEL = r'(?:(?:/versions/(?P<version>\d+))|(?:/labels/(?P<label>[^/:]+)))?'
_POST_PATH = re.compile(r'(?i)/v1/models/(?P<name>[^/:]+)' + _VERSION_OR_LABEL
                        + r':(?P<verb>classify|regress|predict)')
_GET_PATH = re.compile(r'(?i)/v1/models(?:/(?P<name>[^/:]+))?' + _VERSION_OR_LABEL
                       + r'(?:/(?P<subresource>metadata))?')
# Sent on every answer with --enable-cors (TF Serving's --rest_api_enable_cors_support).
_CORS_HEADERS = (('Access-Control-Allow-Origin', '*'), ('Access-Control-Allow-Methods', 'POST, GET'),
                 ('Access-Control-Allow-Headers', 'Content-Type'))


def _proto_json(message) -> Dict[str, Any]:
  """A proto as TF Serving's REST API prints it: proto field names, defaults included."""
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   including_default_value_fields=True)


class HttpError(Exception):

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class RestHandler(http.server.BaseHTTPRequestHandler):
  """One connection's requests; the server object carries `model_name`, `versions`,
  `max_request_bytes`, `read_timeout_seconds` and `enable_cors`."""

  protocol_version = 'HTTP/1.1'

  def setup(self):
    # Every read on the connection waits at most this long: a client that sends half a
    # request, or keeps an idle connection open, gives its worker back.
    self.timeout = self.server.read_timeout_seconds
    super().setup()

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    pass  # One line per request would drown the version messages.

  # TF Serving routes GET and POST; any other method on /v1/ is a malformed request.
  def do_GET(self):  # pylint: disable=invalid-name
    self._answer('GET')

  def do_POST(self):  # pylint: disable=invalid-name
    self._answer('POST')

  def do_PUT(self):  # pylint: disable=invalid-name
    self._answer('PUT')

  def do_DELETE(self):  # pylint: disable=invalid-name
    self._answer('DELETE')

  def do_PATCH(self):  # pylint: disable=invalid-name
    self._answer('PATCH')

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._answer('HEAD')

  def do_OPTIONS(self):  # pylint: disable=invalid-name
    """A CORS preflight: 200 when the Origin header names an http(s) origin, else 400; no body
    either way, as TF Serving answers."""
    if self.headers.get('Content-Length'):
      self._read_body()
    status = 200 if re.search(r'https?://', self.headers.get('Origin', '')) else 400
    self.send_response(status)
    self._send_cors_headers()
    self.send_header('Content-Length', '0')
    self.end_headers()

  def _send_cors_headers(self) -> None:
    if self.server.enable_cors:
      for name, value in _CORS_HEADERS:
        self.send_header(name, value)

  def _answer(self, http_method: str) -> None:
    try:
      if not self.path.lower().startswith('/v1/'):
        raise HttpError(404, f'Not Found: {self.path}')
      status, body = 200, self._route(http_method)
    except HttpError as error:
      status, body = error.status, {'error': str(error)}
    except rest_api.BadRequest as error:
      status, body = 400, {'error': str(error)}
    except ServingError as error:
      status, body = _HTTP_STATUS.get(error.code, 500), {'error': str(error)}
    except Exception as error:  # pylint: disable=broad-except
      status, body = 500, {'error': f'{error.__class__.__name__}: {error}'}
    payload = json.dumps(body).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self._send_cors_headers()
    self.send_header('Content-Length', str(len(payload)))
    self.end_headers()
    if http_method != 'HEAD':
      self.wfile.write(payload)

  def _route(self, http_method: str) -> Dict[str, Any]:
    """TF Serving's routing (http_rest_api_handler.cc): the path, query string included, must
    match its GET or POST pattern, else the request is malformed (400)."""
    body = self._read_body() if self.headers.get('Content-Length') else b''
    malformed = ServingError(INVALID_ARGUMENT, f'Malformed request: {http_method} {self.path}')
    pattern = {'GET': _GET_PATH, 'POST': _POST_PATH}.get(http_method)
    match = pattern.fullmatch(self.path) if pattern else None
    if match is None:
      raise malformed
    name = match.group('name') and urllib.parse.unquote(match.group('name'))
    version = match.group('version') and int(match.group('version'))
    label = match.group('label') and urllib.parse.unquote(match.group('label'))
    versions = self.server.versions
    if http_method == 'GET':
      if not name:
        raise ServingError(INVALID_ARGUMENT, 'Missing model name in request.')
      if match.group('subresource') != 'metadata':
        # A label is accepted here but not used: every version's status, as TF Serving.
        return _proto_json(model_status(versions, self.server.model_name, name, version))
      loaded = versions.resolve(self.server.model_name, name, version, label)
      return {'model_spec': {'name': self.server.model_name, 'version': str(loaded.version),
                             'signature_name': ''},
              'metadata': {'signature_def': _proto_json(signature_def_map(loaded))}}
    verb = match.group('verb')
    if verb not in ('predict', 'classify', 'regress'):
      raise malformed  # the pattern ignores case, the verb does not
    loaded = versions.resolve(self.server.model_name, name, version, label)
    if verb != 'predict':
      raise ServingError(INVALID_ARGUMENT, f'{verb} needs a {verb} signature; this model has '
                                           'predict signatures: use :predict')
    return self._predict(loaded, self._uncompressed(body))

  def _uncompressed(self, body: bytes) -> bytes:
    """The body, gunzipped when Content-Encoding says gzip; as TF Serving, a body that does not
    decompress reads as empty."""
    if 'gzip' not in self.headers.get('Content-Encoding', ''):
      return body
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
      uncompressed = decompressor.decompress(body, self.server.max_request_bytes + 1)
    except zlib.error:
      return b''
    if len(uncompressed) > self.server.max_request_bytes:
      raise rest_api.BadRequest(f'request body is over the limit of '
                                f'{self.server.max_request_bytes} bytes once decompressed')
    return uncompressed

  def _read_body(self) -> bytes:
    if 'chunked' in self.headers.get('Transfer-Encoding', ''):
      self.close_connection = True
      raise rest_api.BadRequest('chunked request bodies are not supported; send Content-Length')
    try:
      length = int(self.headers.get('Content-Length', '0'))
    except ValueError:
      length = -1
    if length < 0:
      # A negative length would make the read below wait for the client to hang up.
      self.close_connection = True
      raise rest_api.BadRequest('Content-Length is not a number of bytes')
    try:
      return self._read_bounded_body(length)
    except (socket.timeout, ConnectionError):
      self.close_connection = True
      raise HttpError(408, f'request body not received within '
                           f'{self.server.read_timeout_seconds:g} s') from None

  def _read_bounded_body(self, length: int) -> bytes:
    if length > self.server.max_request_bytes:
      # Read and drop it, so the client gets the answer rather than a reset connection.
      remaining = length
      while remaining > 0:
        chunk = self.rfile.read(min(remaining, 1 << 20))
        if not chunk:
          break
        remaining -= len(chunk)
      raise rest_api.BadRequest(f'request body of {length} bytes is over the limit of '
                                f'{self.server.max_request_bytes} bytes')
    return self.rfile.read(length)

  def _predict(self, loaded, body: bytes) -> Dict[str, Any]:
    signature_name, form, payload = rest_api.parse_request(body)
    function = find_signature(loaded, signature_name)
    inputs = rest_api.request_inputs(form, payload, signature_inputs(function))
    return rest_api.response_body(form, run_signature(function, inputs))


class RestServer(http.server.HTTPServer):
  """Each connection on a worker thread, at most `max_workers` at once; a connection beyond that
  is answered 503 at once and closed, so load cannot grow the threads or the memory."""

  def __init__(self, address, model_name: str, versions: ModelVersions, max_request_bytes: int,
               read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS,
               max_workers: int = DEFAULT_MAX_WORKERS, enable_cors: bool = False):
    super().__init__(address, RestHandler)
    self.enable_cors = enable_cors
    self.model_name = model_name
    self.versions = versions
    self.max_request_bytes = max_request_bytes
    self.read_timeout_seconds = read_timeout_seconds
    self._workers = threading.BoundedSemaphore(max_workers)

  def process_request(self, request, client_address):
    if not self._workers.acquire(blocking=False):
      self._refuse(request)
      return
    threading.Thread(target=self._serve_connection, args=(request, client_address),
                     daemon=True).start()

  def _serve_connection(self, request, client_address):
    try:
      self.finish_request(request, client_address)
    except Exception:  # pylint: disable=broad-except
      self.handle_error(request, client_address)
    finally:
      self.shutdown_request(request)
      self._workers.release()

  def _refuse(self, request):
    payload = json.dumps({'error': 'server busy: every worker is answering; try again'}).encode()
    try:
      request.settimeout(1.0)
      request.sendall(b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n'
                      b'Retry-After: 1\r\nConnection: close\r\n'
                      + f'Content-Length: {len(payload)}\r\n\r\n'.encode() + payload)
    except OSError:
      pass  # the client is gone or not reading: nothing to tell it
    finally:
      self.shutdown_request(request)

  def handle_error(self, request, client_address):
    # A client that hangs up or times out mid-request is not the server's error; say nothing.
    error = sys.exc_info()[1]
    if not isinstance(error, (ConnectionError, socket.timeout)):
      super().handle_error(request, client_address)



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
  parser.add_argument('--read-timeout-seconds', type=float, default=DEFAULT_READ_TIMEOUT_SECONDS,
                      help='a connection that sends nothing for this long is closed '
                      '(default: %(default)s)')
  parser.add_argument('--max-workers', type=int, default=DEFAULT_MAX_WORKERS,
                      help='connections served at once; more get 503 (default: %(default)s)')
  args = parser.parse_args(argv)
  if args.poll_seconds <= 0:
    parser.error('--poll-seconds must be more than 0')
  if args.max_request_bytes < 1:
    parser.error('--max-request-bytes must be at least 1')
  if not args.read_timeout_seconds > 0:
    parser.error('--read-timeout-seconds must be more than 0')
  if args.max_workers < 1:
    parser.error('--max-workers must be at least 1')
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
  try:
    server = RestServer((args.host, args.port), args.model_name, versions,
                        args.max_request_bytes, args.read_timeout_seconds, args.max_workers,
                        args.enable_cors)
  except OSError as error:
    print(f'serving.server: error: cannot listen on {args.host}:{args.port}: '
          f'{error.strerror}', file=sys.stderr)
    return EXIT_USAGE
  try:
    grpc_server, grpc_port = grpc_api.start_grpc_server(
        f'{args.host}:{args.grpc_port}', args.model_name, versions, args.max_workers,
        args.max_request_bytes)
  except RuntimeError:
    server.server_close()
    print(f'serving.server: error: cannot listen on {args.host}:{args.grpc_port} (gRPC)',
          file=sys.stderr)
    return EXIT_USAGE
  host, port = server.server_address[:2]
  log(f'gRPC listening on {host}:{grpc_port}')
  log(f'listening on http://{host}:{port}/v1/models/{args.model_name}')
  stop = threading.Event()
  threading.Thread(target=versions.poll_forever, args=(args.poll_seconds, stop),
                   daemon=True).start()
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    stop.set()
    grpc_server.stop(grace=1)
    server.server_close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
