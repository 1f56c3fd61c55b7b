"""TensorFlow Serving's REST API as a WSGI application: routing, status codes and error texts.

The HTTP itself (the listen backlog, keep-alive, reading whole requests before a worker sees
them, timeouts, body limits) is the WSGI server's job (serving/server.py runs this under
waitress). This module answers one request at a time, as TF Serving's REST handler would
(http_rest_api_handler.cc): the paths, the JSON of status, metadata and predict, 400 with
`{"error": ...}` for a bad request. At most `max_workers` predictions run the model at once and
at most `max_queued` more wait for one (as TF Serving's batching queue is bounded); one beyond
that is answered 503 with `Retry-After` at once, so an overload queues in clients, not in the
server's memory or latency.
"""

import json
import re
import threading
import urllib.parse
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

from google.protobuf import json_format

from serving import rest_api
from serving.model_versions import (INVALID_ARGUMENT, ModelVersions, ServingError,
                                    find_signature, model_status, run_signature,
                                    signature_def_map, signature_inputs)
from serving.request_log import RequestLogger

# How TF Serving's HTTP server answers each canonical code (http_server.cc's ToHTTPStatusCode).
_HTTP_STATUS = {'INVALID_ARGUMENT': 400, 'NOT_FOUND': 404, 'FAILED_PRECONDITION': 400,
                'UNIMPLEMENTED': 501}
_REASONS = {200: 'OK', 400: 'Bad Request', 404: 'Not Found', 500: 'Internal Server Error',
            501: 'Not Implemented', 503: 'Service Unavailable'}
# TF Serving's path patterns (http_rest_api_util.cc), matched against the whole request target.
_VERSION_OR_LABEL = r'(?:(?:/versions/(?P<version>\d+))|(?:/labels/(?P<label>[^/:]+)))?'
_POST_PATH = re.compile(r'(?i)/v1/models/(?P<name>[^/:]+)' + _VERSION_OR_LABEL
                        + r':(?P<verb>classify|regress|predict)')
_GET_PATH = re.compile(r'(?i)/v1/models(?:/(?P<name>[^/:]+))?' + _VERSION_OR_LABEL
                       + r'(?:/(?P<subresource>metadata))?')
# Sent on every answer with --enable-cors (TF Serving's --rest_api_enable_cors_support).
_CORS_HEADERS = [('Access-Control-Allow-Origin', '*'), ('Access-Control-Allow-Methods', 'POST, GET'),
                 ('Access-Control-Allow-Headers', 'Content-Type')]
# How long a client refused as busy is asked to wait: about one prediction's time.
RETRY_AFTER_SECONDS = 1


def _proto_json(message) -> Dict[str, Any]:
  """A proto as TF Serving's REST API prints it: proto field names, defaults included."""
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   including_default_value_fields=True)


class HttpError(Exception):

  def __init__(self, status: int, message: str, headers: Optional[List[Tuple[str, str]]] = None):
    super().__init__(message)
    self.status = status
    self.headers = headers or []


class RestApplication:
  """The WSGI application of one served model."""

  def __init__(self, model_name: str, versions: ModelVersions, max_request_bytes: int,
               max_workers: int, max_queued: int, enable_cors: bool = False,
               request_logger: Optional[RequestLogger] = None):
    self.model_name = model_name
    self.request_logger = request_logger
    self.versions = versions
    self.max_request_bytes = max_request_bytes
    self.enable_cors = enable_cors
    self._workers = threading.BoundedSemaphore(max_workers)
    # Predictions running or waiting for a worker.
    self._admitted = threading.BoundedSemaphore(max_workers + max_queued)

  def __call__(self, environ: Dict[str, Any], start_response) -> Iterable[bytes]:
    method = environ['REQUEST_METHOD']
    cors = _CORS_HEADERS if self.enable_cors else []
    if method == 'OPTIONS':
      # A CORS preflight: 200 when Origin names an http(s) origin, else 400; no body either way.
      status = 200 if re.search(r'https?://', environ.get('HTTP_ORIGIN', '')) else 400
      start_response(f'{status} {_REASONS[status]}', cors + [('Content-Length', '0')])
      return [b'']
    # TF Serving matches the request target as sent: percent-escapes and query string included.
    target = environ.get('REQUEST_URI') or environ.get('PATH_INFO', '')
    headers: List[Tuple[str, str]] = []
    try:
      if not target.lower().startswith('/v1/'):
        raise HttpError(404, f'Not Found: {target}')
      status, body = 200, self._route(method, target, environ)
    except HttpError as error:
      status, body, headers = error.status, {'error': str(error)}, error.headers
    except rest_api.BadRequest as error:
      status, body = 400, {'error': str(error)}
    except ServingError as error:
      status, body = _HTTP_STATUS.get(error.code, 500), {'error': str(error)}
    except Exception as error:  # pylint: disable=broad-except
      status, body = 500, {'error': f'{error.__class__.__name__}: {error}'}
    payload = json.dumps(body).encode()
    start_response(f'{status} {_REASONS.get(status, "")}'.strip(),
                   [('Content-Type', 'application/json'), ('Content-Length', str(len(payload)))]
                   + cors + headers)
    return [b''] if method == 'HEAD' else [payload]

  def _route(self, method: str, target: str, environ: Dict[str, Any]) -> Dict[str, Any]:
    """TF Serving's routing: the target must match its GET or POST pattern, else the request is
    malformed (400)."""
    body = environ['wsgi.input'].read()  # the WSGI server has read it whole, within its limit
    malformed = ServingError(INVALID_ARGUMENT, f'Malformed request: {method} {target}')
    pattern = {'GET': _GET_PATH, 'POST': _POST_PATH}.get(method)
    match = pattern.fullmatch(target) if pattern else None
    if match is None:
      raise malformed
    name = match.group('name') and urllib.parse.unquote(match.group('name'))
    version = match.group('version') and int(match.group('version'))
    label = match.group('label') and urllib.parse.unquote(match.group('label'))
    if method == 'GET':
      if not name:
        raise ServingError(INVALID_ARGUMENT, 'Missing model name in request.')
      if match.group('subresource') != 'metadata':
        # A label is accepted here but not used: every version's status, as TF Serving.
        return _proto_json(model_status(self.versions, self.model_name, name, version))
      loaded = self.versions.resolve(self.model_name, name, version, label)
      return {'model_spec': {'name': self.model_name, 'version': str(loaded.version),
                             'signature_name': ''},
              'metadata': {'signature_def': _proto_json(signature_def_map(loaded))}}
    verb = match.group('verb')
    if verb not in ('predict', 'classify', 'regress'):
      raise malformed  # the pattern ignores case, the verb does not
    loaded = self.versions.resolve(self.model_name, name, version, label)
    if verb != 'predict':
      raise ServingError(INVALID_ARGUMENT, f'{verb} needs a {verb} signature; this model has '
                                           'predict signatures: use :predict')
    body = self._uncompressed(body, environ.get('HTTP_CONTENT_ENCODING', ''))
    # A bad request is answered 400 whatever the load; only running the model waits for a worker.
    signature_name, form, payload = rest_api.parse_request(body)
    function = find_signature(loaded, signature_name)
    inputs = rest_api.request_inputs(form, payload, signature_inputs(function))
    if not self._admitted.acquire(blocking=False):
      raise HttpError(503, 'server busy: every worker is answering and the queue is full; '
                      'try again', [('Retry-After', str(RETRY_AFTER_SECONDS))])
    try:
      with self._workers:
        outputs = run_signature(function, inputs)
    finally:
      self._admitted.release()
    if self.request_logger is not None:
      self.request_logger.log(loaded.version, signature_name or 'serving_default', inputs)
    return rest_api.response_body(form, outputs)

  def _uncompressed(self, body: bytes, content_encoding: str) -> bytes:
    """The body, gunzipped when Content-Encoding says gzip; as TF Serving, a body that does not
    decompress reads as empty."""
    if 'gzip' not in content_encoding:
      return body
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
      uncompressed = decompressor.decompress(body, self.max_request_bytes + 1)
    except zlib.error:
      return b''
    if len(uncompressed) > self.max_request_bytes:
      raise rest_api.BadRequest(f'request body is over the limit of {self.max_request_bytes} '
                                'bytes once decompressed')
    return uncompressed
