"""Request logging, as TF Serving's: a sample of the predict requests the server answers, written
as PredictionLog protos to TFRecord files (`--request-log-dir`, `--request-log-rate`).

TF Serving's `logging_config` writes `tensorflow.serving.PredictionLog` records, each with the
model spec and sampling rate in `log_metadata` and the whole PredictRequest in `predict_log`;
these are the same records, so its tools read either. Each server process writes its own file,
`requests-<start time>-<pid>.tfrecord`, flushed after every record so a reader (`python -m
runs.skew`) sees the requests as they come. Only requests that were answered are logged.

`encoded_images` reads the images back out of a record: the `image_bytes` input of
`serving_default` and `explain`, or the image feature of each tf.Example given to
`from_examples`. Pixels (`from_pixels`) are not the image the client had, so are not read.
"""

import os
import random
import threading
import time
from typing import Iterator, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from models import features

IMAGE_INPUT = 'image_bytes'
EXAMPLES_INPUT = 'examples'
LOG_FILE_PATTERN = 'requests-*.tfrecord'


class RequestLogger:
  """Writes a `sampling_rate` share of the requests, picked at random, to `log_dir`."""

  def __init__(self, log_dir: str, sampling_rate: float, model_name: str,
               seed: Optional[int] = None):
    self._path = os.path.join(
        log_dir, LOG_FILE_PATTERN.replace('*', f'{time.strftime("%Y%m%d%H%M%S")}-{os.getpid()}'))
    tf.io.gfile.makedirs(log_dir)
    self._rate = sampling_rate
    self._model_name = model_name
    self._random = random.Random(seed)
    self._lock = threading.Lock()
    self._writer = None
    self.logged = 0

  @property
  def path(self) -> str:
    return self._path

  def log(self, version: int, signature_name: str, inputs: Mapping[str, np.ndarray]) -> bool:
    """Logs one answered request, if the sample takes it; returns whether it did."""
    with self._lock:
      if self._random.random() >= self._rate:
        return False
      record = prediction_log_pb2.PredictionLog()
      spec = record.log_metadata.model_spec
      spec.name, spec.signature_name = self._model_name, signature_name
      spec.version.value = version
      record.log_metadata.sampling_config.sampling_rate = self._rate
      request = record.predict_log.request
      request.model_spec.CopyFrom(spec)
      for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
      if self._writer is None:
        self._writer = tf.io.TFRecordWriter(self._path)
      self._writer.write(record.SerializeToString())
      self._writer.flush()
      self.logged += 1
      return True

  def close(self) -> None:
    with self._lock:
      if self._writer is not None:
        self._writer.close()


def read_logs(log_dir: str) -> Iterator[prediction_log_pb2.PredictionLog]:
  """Every PredictionLog under `log_dir`, file by file in name order."""
  for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, LOG_FILE_PATTERN))):
    for record in tf.data.TFRecordDataset(path):
      yield prediction_log_pb2.PredictionLog.FromString(record.numpy())


def encoded_images(record: prediction_log_pb2.PredictionLog) -> Tuple[int, List[bytes]]:
  """(the version that answered, the encoded images the request sent)."""
  request = record.predict_log.request
  version = record.log_metadata.model_spec.version.value
  if IMAGE_INPUT in request.inputs:
    return version, [bytes(value) for value in tf.make_ndarray(request.inputs[IMAGE_INPUT]).ravel()]
  if EXAMPLES_INPUT in request.inputs:
    images = []
    for serialized in tf.make_ndarray(request.inputs[EXAMPLES_INPUT]).ravel():
      feature = tf.train.Example.FromString(serialized).features.feature.get(features.IMAGE_KEY)
      if feature is not None and feature.bytes_list.value:
        images.append(feature.bytes_list.value[0])
    return version, images
  return version, []
