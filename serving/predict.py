"""Classify images with a pushed model: one JSON line per image on stdout.

    python -m serving.predict --model-dir OUTPUT/serving/breast_ultrasound [--version N] PATH...
    python -m serving.predict --server http://127.0.0.1:8501 --model-name breast_ultrasound PATH...
    python -m serving.predict --server grpc://127.0.0.1:8500 --model-name breast_ultrasound PATH...

PATH is an image file or a folder, searched recursively; in a folder, the files skipped (lesion
masks, files that are not images, links out of the folder; operating-system clutter) are those
batch inference skips, named with the same reasons on stderr. Locally it loads the
version the server would serve, the newest that loads (a newer one that does not is named on
stderr), or `--version N`, and calls its `serving_default` signature; with `--server http://...`
it posts the same images as `{"b64": ...}` instances to a TensorFlow Serving REST endpoint
(`POST /v1/models/<name>[/versions/<N>]:predict`) instead, and
with `--server grpc://host:port` it calls TF Serving's gRPC `PredictionService/Predict`.

Each line is `{"path", "most_probable_class", "most_probable_probability", "decision",
"malignant_probability", "malignant_threshold", "review", "review_reason", "scores": {class:
probability}}` (models/answer.py says the answers apart: the most probable class with its
calibrated probability, the decision at the model's operating point, malignant when the
malignant probability reaches the threshold, printed once on stderr too, and whether the image
should go to a person first, and why), or `{"path", "error"}` for an image that could not be
classified; the others go on.
The exit code is 0 when every image was classified, 1 when any failed, 2 for a usage error.
"""

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# google-api-core, imported by TensorFlow, warns on every import that Python 3.10 support ends.
warnings.filterwarnings('ignore', category=FutureWarning, module='google')

from inputs import dicom_files  # pylint: disable=g-import-not-at-top
from models.answer import answer_of  # pylint: disable=g-import-not-at-top
from serving import command_line, messages, model_directory, overlay  # pylint: disable=g-import-not-at-top

EXIT_FAILED_IMAGES = 1
EXIT_USAGE = command_line.EXIT_USAGE
BATCH_SIZE = 16
GRPC_SCHEME = 'grpc://'


class PredictionError(Exception):
  """A batch (or one image) the model or server refused; the message says why."""


class UsageError(Exception):
  """A problem with what the user asked for (model directory, server); one line."""


def find_images(paths: Sequence[str]
                ) -> Tuple[List[str], List[Tuple[str, str]], List[Dict[str, str]]]:
  """(image files in order, [(path, error)] for paths that do not exist, the files of folders
  that are not classified, each with its kind, skipped or ignored, and reason).

  Files named on the command line are always tried. In folders, the files classified and those
  skipped, with their reasons, are batch inference's (`--infer-dir`): one policy,
  `image_files.list_unlabelled_folder`.
  """
  images, missing, skipped = [], [], []
  for path in paths:
    if os.path.isfile(path):
      images.append(path)
    elif os.path.isdir(path):
      # Imported only for folders: it brings TensorFlow, which a server's client may not need.
      from inputs import image_files  # pylint: disable=g-import-not-at-top
      for entry in image_files.list_unlabelled_folder(path):
        if entry['kind'] == 'image':
          images.append(entry['path'])
        else:
          skipped.append({'kind': entry['kind'], 'file': os.path.join(path, entry['file']),
                          'reason': entry['reason']})
    else:
      missing.append((path, 'no such file or folder'))
  return images, missing, skipped


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else value


def prediction(probabilities: Sequence[float], classes: Sequence, decision=None,
               threshold: Optional[float] = None, review=None, review_reason=None) -> Dict:
  """One image's answer (models/answer.py) from a model's outputs: the calibrated probabilities
  by class, its decision (a model exported before the two answers were told apart calls it
  `label`; None: the most probable class), its malignant threshold (None, or above 1, for
  none) and its review flag and reason (None: a model exported before the flag)."""
  scores = {_text(name): float(probability) for name, probability in zip(classes, probabilities)}
  return answer_of(scores, _text(decision) if decision is not None else None,
                   None if threshold is None else float(threshold),
                   None if review is None else bool(review),
                   None if review_reason is None else _text(review_reason))


def _column(outputs, name: str, count: int):
  """An output per image as a list, or None per image for a model without it."""
  if name not in outputs:
    return [None] * count
  found = outputs[name]
  return list(found.numpy() if hasattr(found, 'numpy') else found)


def _decisions(outputs, count: int):
  """The decision output, by its name or by its name before the answers were told apart."""
  for name in ('decision', 'label'):
    if name in outputs:
      found = outputs[name]
      return found.numpy() if hasattr(found, 'numpy') else found
  return [None] * count


class LocalModel:
  """A version of the model directory loaded in this process."""

  def __init__(self, model_dir: str, version: Optional[int]):
    # Slow to import; only when needed.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from serving import model_versions  # pylint: disable=g-import-not-at-top
    self._tf = tf
    # The version the server would serve: the newest that loads.
    self._signatures = model_versions.load_chosen_version(
        model_dir, version, log=lambda line: print(line, file=sys.stderr)).signatures
    self._signature = self._signatures['serving_default']

  def classify(self, encoded_images: List[bytes]) -> List[Dict[str, float]]:
    try:
      outputs = self._signature(image_bytes=self._tf.constant(encoded_images))
    except self._tf.errors.InvalidArgumentError as error:
      raise PredictionError(messages.tensorflow_error_line(error.message)) from None
    count = len(encoded_images)
    return [prediction(*row) for row in zip(
        outputs['probabilities'].numpy(), outputs['classes'].numpy(), _decisions(outputs, count),
        _column(outputs, 'malignant_threshold', count), _column(outputs, 'review', count),
        _column(outputs, 'review_reason', count))]


  def explain(self, encoded_images: List[bytes]) -> List[Tuple[Any, Any]]:
    """(heat map, pixels the model saw) per image, from the model's `explain` signature."""
    if 'explain' not in self._signatures:
      raise UsageError('this model has no explain signature (exported before Grad-CAM)')
    try:
      outputs = self._signatures['explain'](image_bytes=self._tf.constant(encoded_images))
    except self._tf.errors.InvalidArgumentError as error:
      raise PredictionError(messages.tensorflow_error_line(error.message)) from None
    return list(zip(outputs['heat_map'].numpy(), outputs['image_pixels'].numpy()))


class ServerModel:
  """A model behind a TensorFlow Serving REST endpoint."""

  def __init__(self, server: str, model_name: str, version: Optional[int], timeout: float = 60):
    version_part = f'/versions/{version}' if version is not None else ''
    self._url = f'{server.rstrip("/")}/v1/models/{model_name}{version_part}:predict'
    self._timeout = timeout

  def classify(self, encoded_images: List[bytes]) -> List[Dict[str, float]]:
    answer = self._post(encoded_images)
    return [prediction(row['probabilities'], row['classes'], row.get('decision', row.get('label')),
                       row.get('malignant_threshold'), row.get('review'), row.get('review_reason'))
            for row in answer['predictions']]

  def explain(self, encoded_images: List[bytes]) -> List[Tuple[Any, Any]]:
    """(heat map, pixels the model saw) per image, from the server's `explain` signature."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    answer = self._post(encoded_images, signature_name='explain')
    return [(np.array(row['heat_map']), np.array(row['image_pixels']))
            for row in answer['predictions']]

  def _post(self, encoded_images: List[bytes], signature_name: Optional[str] = None) -> Dict:
    request_body = {'instances': [{'b64': base64.b64encode(image).decode('ascii')}
                                  for image in encoded_images]}
    if signature_name:
      request_body['signature_name'] = signature_name
    body = json.dumps(request_body).encode()
    request = urllib.request.Request(self._url, data=body,
                                     headers={'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(request, timeout=self._timeout) as response:
        answer = json.load(response)
    except urllib.error.HTTPError as error:
      message = error.read().decode(errors='replace')
      try:
        message = json.loads(message)['error']
      except (ValueError, KeyError, TypeError):
        pass
      if error.code == 400:
        raise PredictionError(messages.tensorflow_error_line(message)) from None
      raise UsageError(f'server answered {error.code} for {self._url}: {message}') from None
    except (urllib.error.URLError, OSError) as error:
      reason = getattr(error, 'reason', error)
      raise UsageError(f'cannot reach the server at {self._url}: {reason}') from None
    return answer


class GrpcServerModel:
  """A model behind TensorFlow Serving's gRPC API (PredictionService/Predict)."""

  def __init__(self, address: str, model_name: str, version: Optional[int], timeout: float = 60):
    import grpc  # pylint: disable=g-import-not-at-top  # Only for gRPC servers.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
    self._grpc, self._tf = grpc, tf
    self._address, self._model_name, self._version = address, model_name, version
    self._timeout = timeout
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(address, options=[('grpc.max_receive_message_length', 1 << 28)]))

  def classify(self, encoded_images: List[bytes]) -> List[Dict[str, float]]:
    outputs = self._predict(encoded_images, 'serving_default')
    count = len(encoded_images)
    return [prediction(*row) for row in zip(
        outputs['probabilities'], outputs['classes'], _decisions(outputs, count),
        _column(outputs, 'malignant_threshold', count), _column(outputs, 'review', count),
        _column(outputs, 'review_reason', count))]

  def explain(self, encoded_images: List[bytes]) -> List[Tuple[Any, Any]]:
    outputs = self._predict(encoded_images, 'explain')
    return list(zip(outputs['heat_map'], outputs['image_pixels']))

  def _predict(self, encoded_images: List[bytes], signature_name: str) -> Dict[str, Any]:
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self._model_name
    request.model_spec.signature_name = signature_name
    if self._version is not None:
      request.model_spec.version.value = self._version
    request.inputs['image_bytes'].CopyFrom(self._tf.make_tensor_proto(encoded_images))
    try:
      response = self._stub.Predict(request, timeout=self._timeout)
    except self._grpc.RpcError as error:
      code = error.code()
      if code == self._grpc.StatusCode.INVALID_ARGUMENT:
        raise PredictionError(messages.tensorflow_error_line(error.details())) from None
      if code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED):
        raise UsageError(f'cannot reach the gRPC server at {self._address}: '
                         f'{error.details()}') from None
      raise UsageError(f'gRPC server at {self._address} answered {code.name}: '
                       f'{error.details()}') from None
    return {name: self._tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def explanation_path(explain_dir: str, file: str, taken: set) -> str:
  """`<dir>/<file stem>.explained.png`, numbered when two files share a stem."""
  stem = os.path.splitext(os.path.basename(file))[0]
  path, number = os.path.join(explain_dir, f'{stem}.explained.png'), 1
  while path in taken:
    number += 1
    path = os.path.join(explain_dir, f'{stem} ({number}).explained.png')
  taken.add(path)
  return path


def explain_into(model, encoded: List[Tuple[str, bytes]], results: Dict, explain_dir: str,
                 taken: set) -> None:
  """Writes a Grad-CAM overlay per classified image and names it in its result line."""
  for file, image in encoded:
    line = results[file][0]
    if 'error' in line:
      continue
    heat, pixels = model.explain([image])[0]
    line['explanation'] = explanation_path(explain_dir, file, taken)
    overlay.save_overlay(line['explanation'], heat, pixels)


def sent_bytes(content: bytes) -> bytes:
  """The bytes the model is sent for a file: a DICOM file's ultrasound picture as PNG, as
  ExampleGen stores it (a served model reads encoded images, as TF Serving's), else the file."""
  if not dicom_files.is_dicom(content):
    return content
  # Imported only for DICOM: it brings TensorFlow, which a server's client may not need.
  from inputs import image_files  # pylint: disable=g-import-not-at-top
  return image_files.served_bytes(content)


def classify_files(model, files: List[str], explain_dir: Optional[str] = None
                   ) -> Iterable[Tuple[Dict, Optional[float]]]:
  """(result line, the model's malignant threshold or None) per file, in order; a batch the model
  refuses is retried image by image so that only the bad images get error lines. With
  `explain_dir`, each classified image's Grad-CAM overlay is written there."""
  taken = set()
  for start in range(0, len(files), BATCH_SIZE):
    batch, encoded, results = files[start:start + BATCH_SIZE], [], {}
    for file in batch:
      try:
        with open(file, 'rb') as handle:
          encoded.append((file, sent_bytes(handle.read())))
      except OSError as error:
        results[file] = ({'path': file, 'error': f'cannot read: {error.strerror}'}, None)
      except ValueError as error:  # a DICOM file without a picture (image_files.UnusableFile)
        results[file] = ({'path': file, 'error': f'not classified: {error}'}, None)
    try:
      answers = model.classify([image for _, image in encoded]) if encoded else []
      results.update({file: (result_line(file, answer), answer['malignant_threshold'])
                      for (file, _), answer in zip(encoded, answers)})
    except PredictionError:
      for file, image in encoded:
        try:
          answer = model.classify([image])[0]
          results[file] = (result_line(file, answer), answer['malignant_threshold'])
        except PredictionError as error:
          results[file] = ({'path': file, 'error': f'not classified: {error}'}, None)
    if explain_dir:
      explain_into(model, encoded, results, explain_dir, taken)
    for file in batch:
      yield results[file]


def result_line(path: str, found: Dict) -> Dict:
  """The JSON line of one image: its path, then the answer (models/answer.py)."""
  return {'path': path, **found}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  parser = command_line.OneLineArgumentParser(
      prog='python -m serving.predict',
      description='Classify breast-ultrasound images with a pushed model; one JSON line each.')
  parser.add_argument('paths', nargs='+', metavar='PATH', help='image files or folders')
  parser.add_argument('--model-dir', help='the model base path Pusher writes: '
                      '<output-dir>/serving/<model-name>')
  parser.add_argument('--version', type=int, help='model version (default: the newest)')
  parser.add_argument('--server', help='a TensorFlow Serving address to send the images to '
                      'instead of loading the model: REST, e.g. http://127.0.0.1:8501, or gRPC, '
                      'e.g. grpc://127.0.0.1:8500')
  parser.add_argument('--model-name', help='model name on the server (default: the last '
                      'folder of --model-dir)')
  parser.add_argument('--explain', metavar='DIR',
                      help='also write, for each image, where the model looked: its Grad-CAM '
                      'heat map over the pixels it saw, as DIR/<name>.explained.png')
  args = parser.parse_args(argv)
  if args.server is None and args.model_dir is None:
    parser.error('give --model-dir, or --server with --model-name')
  if args.server is not None and not args.server.startswith(('http://', 'https://', GRPC_SCHEME)):
    parser.error(f'--server {args.server}: give http://host:port (REST) or grpc://host:port')
  if args.server is not None and args.model_name is None:
    if args.model_dir is None:
      parser.error('--server needs --model-name (or --model-dir to take the name from)')
    args.model_name = os.path.basename(os.path.normpath(args.model_dir))
  return args


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  files, missing, skipped = find_images(args.paths)
  ignored = [row['file'] for row in skipped if row['kind'] == 'ignored']
  skipped = [row for row in skipped if row['kind'] != 'ignored']
  if skipped:
    print(f'skipped {len(skipped)} files: '
          + '; '.join(f'{row["file"]}: {row["reason"]}' for row in skipped), file=sys.stderr)
  if ignored:
    print(f'ignored {len(ignored)} files left by an operating system or archiver: '
          + ', '.join(ignored), file=sys.stderr)
  try:
    if args.server is not None and args.server.startswith(GRPC_SCHEME):
      model = GrpcServerModel(args.server[len(GRPC_SCHEME):], args.model_name, args.version)
    elif args.server is not None:
      model = ServerModel(args.server, args.model_name, args.version)
    else:
      model = LocalModel(args.model_dir, args.version)
    failed = 0
    for path, error in missing:
      print(json.dumps({'path': path, 'error': error}), flush=True)
      failed += 1
    threshold_said = False
    if args.explain:
      try:
        os.makedirs(args.explain, exist_ok=True)
      except OSError as error:
        raise UsageError(f'cannot create {args.explain}: {error.strerror}') from None
    for line, threshold in classify_files(model, files, args.explain):
      if threshold is not None and not threshold_said:
        print(f'operating point: the decision is malignant when the malignant probability '
              f'reaches {threshold:.4f}, else the more probable other class; '
              f'most_probable_class is the answer without the threshold',
              file=sys.stderr, flush=True)
        threshold_said = True
      print(json.dumps(line), flush=True)
      failed += 'error' in line
  except (UsageError, model_directory.ModelDirectoryError) as error:
    print(f'serving.predict: error: {error}', file=sys.stderr)
    return EXIT_USAGE
  if not files and not missing:
    print('serving.predict: error: no images found in ' + ', '.join(args.paths),
          file=sys.stderr)
    return EXIT_FAILED_IMAGES
  return EXIT_FAILED_IMAGES if failed else 0


if __name__ == '__main__':
  sys.exit(main())
