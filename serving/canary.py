"""Canary requests to a SavedModel, the way a model server sends them, and the TFLite model's
agreement with it.

    python -m serving.canary --model-dir SAVED_MODEL --canaries FILE --image-feature NAME
        --classes benign,malignant,normal --latency-ceiling-ms 1000 --report REPORT.json
        [--tflite-model FILE --agreement-examples PATTERN]

The pipeline's serving check (components/serving_check/) runs this in a fresh process, as TFX's
InfraValidator starts a model server: the candidate is loaded from its files alone, then asked
what a client will ask. The canaries are serialized tf.Examples (a TFRecord file); each is sent
as its encoded image bytes to `serving_default` and whole to `from_examples`. A canary fails
when a signature is missing or raises, when probabilities are not [batch, classes], not finite,
outside [0, 1] or do not sum to 1, when `classes` is not the label vocabulary or `label` not one
of it, when the two signatures disagree on the same image, or when the median latency of
one-image `serving_default` requests (after one warm-up, as TF Serving's warm-up requests do) is
over the ceiling.

With `--tflite-model`, every example of `--agreement-examples` (gzipped TFRecords, e.g. the eval
split) goes through the SavedModel (`from_examples`) and, as pixels from `transform_features`,
through the TFLite interpreter: the report gives the share of identical most-probable labels
and the largest probability difference.

The report is JSON: `loaded`, `load_seconds`, `canaries`, `latency_ms` (`median`, `max`, each
request's), `failures` (one line each; empty when every canary passed) and `tflite`. Exit code
0 when the report was written, whatever it says; 2 for a usage error.
"""

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# google-api-core, imported by TensorFlow, warns on every import that Python 3.10 support ends.
warnings.filterwarnings('ignore', category=FutureWarning, module='google')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from serving import command_line, messages  # pylint: disable=g-import-not-at-top

SERVING_SIGNATURE = 'serving_default'
EXAMPLES_SIGNATURE = 'from_examples'
TRANSFORM_SIGNATURE = 'transform_features'
PIXELS_OUTPUT = 'image_pixels'
# How far apart two answers for the same image may be: float32 arithmetic in another order.
PROBABILITY_TOLERANCE = 1e-3
AGREEMENT_BATCH = 32


def score_failures(where: str, probabilities: np.ndarray, count: int,
                   class_count: int) -> List[str]:
  """What is wrong with a [count, class_count] array of probabilities, one line each."""
  if probabilities.shape != (count, class_count):
    return [f'{where}: probabilities have shape {list(probabilities.shape)}, expected '
            f'[{count}, {class_count}]']
  if not np.all(np.isfinite(probabilities)):
    return [f'{where}: {int(np.sum(~np.isfinite(probabilities)))} probabilities are not finite']
  failures = []
  if probabilities.min() < 0 or probabilities.max() > 1:
    failures.append(f'{where}: probabilities outside [0, 1] (from {probabilities.min():.4g} to '
                    f'{probabilities.max():.4g})')
  sums = probabilities.sum(axis=1)
  worst = int(np.argmax(np.abs(sums - 1)))
  if abs(sums[worst] - 1) > PROBABILITY_TOLERANCE:
    failures.append(f'{where}: probabilities of canary {worst + 1} sum to {sums[worst]:.4f}, '
                    'not 1')
  return failures


def _text(values) -> List[str]:
  return [value.decode(errors='replace') if isinstance(value, bytes) else str(value)
          for value in values]


def _only_input(signature) -> str:
  """The name of a signature's one input."""
  names = list(signature.structured_input_signature[1])
  if len(names) != 1:
    raise ValueError(f'expected one input, found {names}')
  return names[0]


def read_examples(pattern: str, compression: str = '') -> List[bytes]:
  files = sorted(tf.io.gfile.glob(pattern))
  return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type=compression)]


def image_bytes_of(serialized: Sequence[bytes], image_feature: str) -> List[bytes]:
  images = []
  for record in serialized:
    example = tf.train.Example.FromString(record)
    images.append(example.features.feature[image_feature].bytes_list.value[0])
  return images


def _call(signatures, name: str, values: Sequence[bytes]) -> Dict[str, np.ndarray]:
  signature = signatures[name]
  outputs = signature(**{_only_input(signature): tf.constant(list(values))})
  return {key: value.numpy() for key, value in outputs.items()}


def check_canaries(signatures, canaries: Sequence[bytes], image_feature: str,
                   classes: Sequence[str], latency_ceiling_ms: float) -> Dict[str, Any]:
  """Sends the canaries to `serving_default` and `from_examples` of loaded signatures; returns
  {'canaries', 'latency_ms', 'failures'}."""
  failures: List[str] = []
  images = image_bytes_of(canaries, image_feature)
  count, class_count = len(images), len(classes)
  result = {'canaries': count, 'latency_ms': None, 'failures': failures}
  missing = [name for name in (SERVING_SIGNATURE, EXAMPLES_SIGNATURE) if name not in signatures]
  if missing:
    failures.append(f'the model has no {" or ".join(missing)} signature (it has '
                    f'{", ".join(sorted(signatures)) or "none"})')
    return result
  try:
    served = _call(signatures, SERVING_SIGNATURE, images)
    from_examples = _call(signatures, EXAMPLES_SIGNATURE, canaries)
  except (tf.errors.OpError, ValueError, TypeError) as error:
    failures.append(f'a canary request failed: '
                    f'{messages.tensorflow_error_line(getattr(error, "message", error))}')
    return result
  for name, outputs in ((SERVING_SIGNATURE, served), (EXAMPLES_SIGNATURE, from_examples)):
    if 'probabilities' not in outputs:
      failures.append(f'{name}: no probabilities output (it has {", ".join(sorted(outputs))})')
    else:
      failures += score_failures(name, outputs['probabilities'], count, class_count)
  if 'classes' in served:
    wrong = [row for row in served['classes'] if _text(row) != list(classes)]
    if wrong:
      failures.append(f'{SERVING_SIGNATURE}: classes {_text(wrong[0])}, expected the vocabulary '
                      f'{list(classes)}')
  for name in ('most_probable_class', 'decision'):
    unknown = sorted(set(_text(served[name])) - set(classes)) if name in served else []
    if unknown:
      failures.append(f'{SERVING_SIGNATURE}: {name} {unknown[0]!r} is not in the vocabulary '
                      f'{list(classes)}')
  if not failures:
    difference = float(np.abs(served['probabilities'] - from_examples['probabilities']).max())
    if difference > PROBABILITY_TOLERANCE:
      failures.append(f'{SERVING_SIGNATURE} and {EXAMPLES_SIGNATURE} differ by {difference:.4f} '
                      'on the same image')
    elif 'review' in served and 'review' in from_examples and np.any(
        np.asarray(served['review'], bool) != (np.asarray(from_examples['review']) > 0.5)):
      failures.append(f'{SERVING_SIGNATURE} and {EXAMPLES_SIGNATURE} flag different images for '
                      'review')
  latencies = []
  for image in images[:1] + images:  # the first request warms up, and is not counted
    started = time.perf_counter()
    _call(signatures, SERVING_SIGNATURE, [image])
    latencies.append((time.perf_counter() - started) * 1000)
  latencies = latencies[1:]
  median = float(np.median(latencies))
  result['latency_ms'] = {'median': round(median, 2), 'max': round(max(latencies), 2),
                          'requests': [round(value, 2) for value in latencies]}
  if median > latency_ceiling_ms:
    failures.append(f'median latency of a one-image request {median:.1f} ms is over the '
                    f'ceiling of {latency_ceiling_ms:g} ms')
  return result


def tflite_model(model_path: str):
  """A function of pixels → the TFLite model's probabilities, run as a device runs it."""
  with tf.io.gfile.GFile(model_path, 'rb') as handle:
    interpreter = tf.lite.Interpreter(model_content=handle.read())
  runner = interpreter.get_signature_runner()
  input_name = list(runner.get_input_details())[0]
  return lambda pixels: runner(**{input_name: pixels.astype(np.float32)})['probabilities']



def tflite_agreement(signatures, model_path: str, examples: Sequence[bytes]) -> Dict[str, Any]:
  """{'examples', 'identical_labels' (a share), 'max_probability_difference', 'size_bytes'} of
  the TFLite model against the SavedModel on `examples`."""
  on_device = tflite_model(model_path)
  saved_model, lite = [], []
  for start in range(0, len(examples), AGREEMENT_BATCH):
    batch = examples[start:start + AGREEMENT_BATCH]
    saved_model.append(_call(signatures, EXAMPLES_SIGNATURE, batch)['probabilities'])
    lite.append(on_device(_call(signatures, TRANSFORM_SIGNATURE, batch)[PIXELS_OUTPUT]))
  saved_model, lite = np.concatenate(saved_model), np.concatenate(lite)
  return {
      'examples': len(examples),
      'identical_labels': float(np.mean(saved_model.argmax(1) == lite.argmax(1))),
      'max_probability_difference': float(np.abs(saved_model - lite).max()),
      'size_bytes': tf.io.gfile.stat(model_path).length,
  }


def run_checks(model_dir: str, canaries: Sequence[bytes], image_feature: str,
               classes: Sequence[str], latency_ceiling_ms: float,
               tflite_model: Optional[str] = None,
               agreement_examples: Sequence[bytes] = ()) -> Dict[str, Any]:
  """The whole report (module docstring) for the SavedModel in `model_dir`."""
  started = time.perf_counter()
  try:
    signatures = tf.saved_model.load(model_dir).signatures
  except Exception as error:  # pylint: disable=broad-except
    return {'loaded': False, 'canaries': len(canaries), 'latency_ms': None, 'tflite': None,
            'failures': [f'the model did not load: {messages.tensorflow_error_line(error)}']}
  report = {'loaded': True, 'load_seconds': round(time.perf_counter() - started, 2)}
  report.update(check_canaries(signatures, canaries, image_feature, classes, latency_ceiling_ms))
  report['tflite'] = None
  if tflite_model and not report['failures']:
    report['tflite'] = tflite_agreement(signatures, tflite_model, agreement_examples)
  return report


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  parser = command_line.OneLineArgumentParser(
      prog='python -m serving.canary',
      description='Send canary requests to a SavedModel and report what it answered.')
  parser.add_argument('--model-dir', required=True, help='the SavedModel folder')
  parser.add_argument('--canaries', required=True,
                      help='TFRecord file of serialized tf.Examples to send')
  parser.add_argument('--image-feature', required=True,
                      help='the feature of each example holding the encoded image bytes')
  parser.add_argument('--classes', required=True, help='the label vocabulary, comma-separated')
  parser.add_argument('--latency-ceiling-ms', type=float, required=True)
  parser.add_argument('--report', required=True, help='where to write the JSON report')
  parser.add_argument('--tflite-model', help='a TFLite model of the same network on pixels')
  parser.add_argument('--agreement-examples',
                      help='gzipped TFRecord files (a glob) the TFLite model is compared on')
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  report = run_checks(
      args.model_dir, read_examples(args.canaries), args.image_feature,
      args.classes.split(','), args.latency_ceiling_ms, args.tflite_model,
      read_examples(args.agreement_examples, 'GZIP') if args.agreement_examples else ())
  with tf.io.gfile.GFile(args.report, 'w') as handle:
    json.dump(report, handle, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
