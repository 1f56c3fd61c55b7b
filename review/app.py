"""The review station's web application (WSGI): the page, and the JSON it reads and writes.

    GET  /                                  the page (review/static/index.html)
    GET  /static/review.js, /static/review.css
    GET  /api/runs                          the batch inference runs, newest first
    GET  /api/runs/<run>/answers            every answer of the run with its review, if any
    GET  /api/runs/<run>/image?file=<path>  an answered image (a DICOM file's picture as PNG)
    GET  /api/runs/<run>/explanation?file=<path>
                                            its Grad-CAM overlay, from the version that answered
    POST /api/classify                      an image's bytes (PNG, JPEG, BMP, DICOM) → the newest
                                            version's answer, the picture and its overlay
    POST /api/runs/<run>/reviews            {"file", "label", "reviewer"} → the review recorded
    GET  /model-cards/<version>             the model card the Pusher published with a version

Safe by default: no path from a request reaches the file system (a run is found among the
recorded runs, an image among the run's answers, a static file in a fixed list); request bodies
are limited (`MAX_REQUEST_BYTES` for a review, the input policy's file limit for an upload) and
images decoded within the pipeline's pixel limit; every
answer carries a Content-Security-Policy that allows no inline script and nothing from
elsewhere, and the page writes every name and label as text, never as HTML. Errors are JSON
`{"error": ...}` with a 4xx status, never a traceback.
"""

import base64
import json
import os
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from components import contracts
from inputs import image_files, layout
from review import export, reviews

STATIC_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
# What the page may load, by request path: nothing else is read from disk.
STATIC_FILES = {'/': ('index.html', 'text/html; charset=utf-8'),
                '/static/review.js': ('review.js', 'text/javascript; charset=utf-8'),
                '/static/review.css': ('review.css', 'text/css; charset=utf-8')}
MAX_REQUEST_BYTES = 64 * 1024  # a review is a few hundred bytes
MAX_UPLOAD_BYTES = layout.MAX_IMAGE_FILE_BYTES  # the server's own limit: the largest image file
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [('Content-Security-Policy', CONTENT_SECURITY_POLICY),
                    ('X-Content-Type-Options', 'nosniff'), ('Referrer-Policy', 'no-referrer'),
                    ('Cache-Control', 'no-store')]
# The model card is a page of its own with its stylesheet inline, and no script.
MODEL_CARD_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_REASONS = {200: 'OK', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed',
            413: 'Payload Too Large', 500: 'Internal Server Error'}


class HttpError(Exception):

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _read_body(environ: Dict[str, Any], limit: int, what: str) -> bytes:
  """The request's body; 413 over `limit` bytes (by its Content-Length, before it is read)."""
  try:
    length = int(environ.get('CONTENT_LENGTH') or 0)
  except ValueError:
    raise HttpError(400, 'a Content-Length that is not a number') from None
  if length > limit:
    raise HttpError(413, f'{what} of {length} bytes (at most {limit})')
  return environ['wsgi.input'].read(length)


class ReviewApplication:
  """The page and its API over the output directory's batch inference runs; `inference_runs`
  returns them as runs/inference.py describes them (read again on every request, so a run that
  finishes while the page is open appears)."""

  def __init__(self, output_dir: str, inference_runs: Callable[[], List[Dict[str, Any]]],
               model_card_dir: Optional[str] = None,
               model_of_version: Optional[Callable[[Optional[int]], Any]] = None):
    """`model_of_version(version)` gives serving/predict.py's LocalModel of a pushed version
    (None: the newest), for overlays and uploads; without it the page shows neither."""
    self.output_dir = output_dir
    self.inference_runs = inference_runs
    self.model_card_dir = model_card_dir
    self.model_of_version = model_of_version

  def __call__(self, environ: Dict[str, Any], start_response) -> Iterable[bytes]:
    try:
      status, content_type, payload = self._route(environ)
    except HttpError as error:
      status, content_type, payload = error.status, 'application/json', json.dumps(
          {'error': str(error)}).encode()
    except Exception as error:  # pylint: disable=broad-except
      status, content_type, payload = 500, 'application/json', json.dumps(
          {'error': f'{error.__class__.__name__}: {error}'}).encode()
    headers = [('Content-Type', content_type), ('Content-Length', str(len(payload)))]
    if environ.get('PATH_INFO', '').startswith('/model-cards/') and status == 200:
      headers += [(name, MODEL_CARD_POLICY if name == 'Content-Security-Policy' else value)
                  for name, value in SECURITY_HEADERS]
    else:
      headers += SECURITY_HEADERS
    start_response(f'{status} {_REASONS.get(status, "")}'.strip(), headers)
    return [payload]

  def _route(self, environ: Dict[str, Any]) -> Tuple[int, str, bytes]:
    method, path = environ['REQUEST_METHOD'], environ.get('PATH_INFO', '')
    if path in STATIC_FILES:
      if method != 'GET':
        raise HttpError(405, f'{method} {path}: only GET')
      name, content_type = STATIC_FILES[path]
      with open(os.path.join(STATIC_FOLDER, name), 'rb') as handle:
        return 200, content_type, handle.read()
    parts = path.split('/')
    if len(parts) == 3 and parts[1] == 'model-cards' and method == 'GET':
      return 200, 'text/html; charset=utf-8', self._model_card(parts[2])
    if path == '/api/classify' and method == 'POST':
      return self._json(self._classify(self._upload(environ)))
    if path == '/api/runs' and method == 'GET':
      return self._json([self._run_summary(run) for run in reversed(self.inference_runs())])
    if len(parts) == 5 and parts[:3] == ['', 'api', 'runs']:
      run = self._run(urllib.parse.unquote(parts[3]))
      query = urllib.parse.parse_qs(environ.get('QUERY_STRING', ''))
      if parts[4] == 'answers' and method == 'GET':
        return self._json(self._answers(run))
      if parts[4] == 'image' and method == 'GET':
        return 200, 'image/png', self._picture(run, (query.get('file') or [''])[0])
      if parts[4] == 'explanation' and method == 'GET':
        file = (query.get('file') or [''])[0]
        version = run.get('model_version')
        _, overlay = self._explained(self._picture(run, file),
                                     int(version) if version else None)
        return 200, 'image/png', overlay
      if parts[4] == 'reviews' and method == 'POST':
        return self._json(self._record(run, self._body(environ)))
    raise HttpError(404, f'no such page: {method} {path}')

  @staticmethod
  def _json(value: Any) -> Tuple[int, str, bytes]:
    return 200, 'application/json', json.dumps(value).encode()

  def _run(self, name: str) -> Dict[str, Any]:
    for run in self.inference_runs():
      if run['run'] == name and run.get('predictions'):
        return run
    raise HttpError(404, f'no batch inference run {name!r} with predictions')

  def _run_summary(self, run: Dict[str, Any]) -> Dict[str, Any]:
    return {'run': run['run'], 'input': run.get('input'), 'images': run.get('images'),
            'model_version': run.get('model_version'), 'state': run.get('state'),
            'review_count': run.get('review_count'),
            'reviewed': len(reviews.read_reviews(self.output_dir, run['run']))}

  def _answers(self, run: Dict[str, Any]) -> List[Dict[str, Any]]:
    reviewed = {review.file: review for review in reviews.read_reviews(self.output_dir,
                                                                       run['run'])}
    rows = []
    for file, answer in export.answers_of(run).items():
      review = reviewed.get(file)
      rows.append({**answer, 'file': file, 'model_version': run.get('model_version'),
                   'reviewed_label': review.label if review else None,
                   'reviewer': review.reviewer if review else None,
                   'reviewed_at': review.reviewed_at if review else None})
    return rows

  def _picture(self, run: Dict[str, Any], file: str) -> bytes:
    if file not in export.answers_of(run):
      raise HttpError(404, f'{file!r} is not an image run {run["run"]} answered')
    try:
      _, image = image_files.read_image(os.path.join(run['input'], file))
    except (image_files.UnusableFile, OSError) as error:
      raise HttpError(404, f'{file!r} cannot be shown: {error}') from None
    return image_files.png_bytes(image_files.rgb_pixels(image))

  def _model_card(self, version: str) -> bytes:
    published = (sorted(os.listdir(self.model_card_dir))
                 if self.model_card_dir and os.path.isdir(self.model_card_dir) else [])
    if version not in published:  # found among the published versions, never joined as given
      raise HttpError(404, f'no model card published for version {version!r}')
    with open(os.path.join(self.model_card_dir, published[published.index(version)],
                           contracts.MODEL_CARD_HTML_FILE), 'rb') as handle:
      return handle.read()

  def _model(self, version: Optional[int]):
    if self.model_of_version is None:
      raise HttpError(404, 'this review station serves no model: no overlays, no uploads')
    try:
      return self.model_of_version(version)
    except Exception as error:  # pylint: disable=broad-except  # a missing or broken version
      raise HttpError(404, f'no model version {version} to explain with: {error}') from None

  def _explained(self, picture: bytes, version: Optional[int]):
    """(the model's answer, a PNG of its Grad-CAM overlay) of a picture's PNG."""
    from serving import overlay, predict  # pylint: disable=g-import-not-at-top  # TensorFlow
    model = self._model(version)
    try:
      [answer] = model.classify([picture])
      [(heat, pixels)] = model.explain([picture])
    except (predict.PredictionError, predict.UsageError) as error:
      raise HttpError(400, str(error)) from None
    return answer, image_files.png_bytes(overlay.heat_overlay(heat, pixels))

  def _upload(self, environ: Dict[str, Any]) -> bytes:
    content = _read_body(environ, MAX_UPLOAD_BYTES, 'an image')
    try:
      return image_files.png_bytes(image_files.rgb_pixels(image_files.check_image(content)))
    except image_files.UnusableFile as error:
      raise HttpError(400, str(error)) from None

  def _classify(self, picture: bytes) -> Dict[str, Any]:
    answer, overlay_png = self._explained(picture, None)
    return {**answer, 'picture': base64.b64encode(picture).decode(),
            'overlay': base64.b64encode(overlay_png).decode()}

  @staticmethod
  def _body(environ: Dict[str, Any]) -> Dict[str, Any]:
    try:
      body = json.loads(_read_body(environ, MAX_REQUEST_BYTES, 'a request body') or b'null')
    except ValueError:
      raise HttpError(400, 'the body is not JSON') from None
    if not isinstance(body, dict):
      raise HttpError(400, 'the body must be a JSON object: {"file", "label", "reviewer"}')
    return body

  def _record(self, run: Dict[str, Any], body: Dict[str, Any]) -> Dict[str, Any]:
    fields = [body.get(name) for name in ('file', 'label', 'reviewer')]
    if not all(isinstance(value, str) for value in fields):
      raise HttpError(400, 'file, label and reviewer must each be a string')
    try:
      review = reviews.record_review(self.output_dir, run['run'], *fields,
                                     export.answers_of(run))
    except reviews.ReviewError as error:
      raise HttpError(400, str(error)) from None
    return {'file': review.file, 'reviewed_label': review.label, 'reviewer': review.reviewer,
            'reviewed_at': review.reviewed_at}


def find_run(runs: List[Dict[str, Any]], name: Optional[str]) -> Optional[Dict[str, Any]]:
  """The run named `name`, or the newest when None."""
  chosen = [run for run in runs if name in (None, run['run'])]
  return chosen[-1] if chosen else None
