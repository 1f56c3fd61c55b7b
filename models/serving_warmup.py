"""TF Serving's SavedModel warmup: requests saved with a model, replayed when a server loads it.

A server that answers before a version has run once makes its first clients pay for tracing
and for the kernels' first allocations, all at once when they come together (16 concurrent first
requests took 8 s each and grew the server by 700 MB). TF Serving replays the PredictionLog
records in `<version>/assets.extra/tf_serving_warmup_requests` before it marks a version
available; the exporter writes them here and the local server replays them the same way.
"""

import os
from typing import List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')


def write_requests(export_dir: str,
                   requests: Sequence[Tuple[str, Mapping[str, np.ndarray]]]) -> None:
  """Writes (signature name, {input name: array}) pairs as TF Serving's warmup records."""
  path = os.path.join(export_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for signature_name, inputs in requests:
      request = predict_pb2.PredictRequest()
      request.model_spec.signature_name = signature_name
      for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())


def read_requests(version_dir: str) -> List[predict_pb2.PredictRequest]:
  """The warmup requests saved with a version, none when it has no warmup file."""
  path = os.path.join(version_dir, WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    return []
  requests = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog.FromString(record)
    if log.WhichOneof('log_type') != 'predict_log':
      raise ValueError(f'{path}: only Predict warmup requests are replayed here, not '
                       f'{log.WhichOneof("log_type")}')
    requests.append(log.predict_log.request)
  return requests
