"""InferenceExport: BulkInferrer's prediction logs → a table a person can open.

TFX's BulkInferrer writes `PredictionLog` protos (the request and the model's outputs per
example). This component reads them back and writes, in its Predictions artifact,
`predictions.csv` (path, the answer's fields, a score per class) and `predictions.jsonl` (one
line per image, as `python -m serving.predict` prints them). The answer (models/answer.py) keeps
the most probable class with its calibrated probability apart from the decision at the
operating point; the rows follow the model's `from_examples` signature: the scores are its
calibrated `probabilities`, the decision its `operating_point` (one-hot; the most probable class
for a model without one), the threshold its `malignant_threshold`, the review flag and its reason
its `review` (the reason's code in models/calibration.py's REVIEW_REASONS).
Its custom properties give `row_count`, `decision_counts` ({class: images decided so}) and
`review_count` (images flagged for a person to look at first).
"""

import csv
import json
import os
from typing import Dict, Iterator, List

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components import contracts
from components.artifact_types import Predictions
from models import calibration, features
from models.answer import FIELDS, answer_of


def read_prediction_logs(inference_result_uri: str) -> Iterator[prediction_log_pb2.PredictionLog]:
  files = sorted(tf.io.gfile.glob(os.path.join(inference_result_uri, 'prediction_logs*')))
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    yield prediction_log_pb2.PredictionLog.FromString(record.numpy())


def prediction_rows(log: prediction_log_pb2.PredictionLog) -> List[Dict]:
  """One row per example of a `from_examples` prediction log."""
  request, response = log.predict_log.request, log.predict_log.response
  serialized = tf.make_ndarray(next(iter(request.inputs.values()))).reshape([-1])
  classes = len(features.LABEL_NAMES)
  probabilities = tf.make_ndarray(response.outputs['probabilities']).reshape([-1, classes])
  decisions = (tf.make_ndarray(response.outputs['operating_point']).reshape([-1, classes])
               if 'operating_point' in response.outputs else probabilities)
  column = lambda name: (tf.make_ndarray(response.outputs[name]).reshape([-1])
                         if name in response.outputs else [None] * len(probabilities))
  rows = []
  for example, scores, decision, threshold, review in zip(
      serialized, probabilities, decisions, column('malignant_threshold'), column('review')):
    path = tf.train.Example.FromString(example).features.feature[
        features.FILENAME_KEY].bytes_list.value[0].decode()
    # `review` is the reason's code (calibration.REVIEW_REASONS), 0 for none.
    reason = None if review is None else calibration.REVIEW_REASONS[int(round(review))]
    rows.append({'path': path, **answer_of(
        dict(zip(features.LABEL_NAMES, scores)), features.LABEL_NAMES[int(np.argmax(decision))],
        threshold, None if reason is None else bool(reason), reason)})
  return rows


@component
def InferenceExport(inference_result: InputArtifact[standard_artifacts.InferenceResult],
                    predictions: OutputArtifact[Predictions], code_version: Parameter[str] = ''):
  """Writes predictions.csv and predictions.jsonl, sorted by path; see the module docstring.
  `code_version` only keys TFX's cache."""
  del code_version
  rows = sorted((row for log in read_prediction_logs(inference_result.uri)
                 for row in prediction_rows(log)), key=lambda row: row['path'])
  with tf.io.gfile.GFile(os.path.join(predictions.uri, contracts.PREDICTIONS_JSONL_FILE),
                         'w') as handle:
    for row in rows:
      handle.write(json.dumps(row) + '\n')
  with tf.io.gfile.GFile(os.path.join(predictions.uri, contracts.PREDICTIONS_CSV_FILE),
                         'w') as handle:
    writer = csv.writer(handle)
    writer.writerow(['path', *FIELDS, *features.LABEL_NAMES])
    for row in rows:
      writer.writerow([row['path'], *('' if row[field] is None else row[field]
                                      for field in FIELDS),
                       *(row['scores'][name] for name in features.LABEL_NAMES)])
  predictions.set_int_custom_property('row_count', len(rows))
  counts = {name: sum(row['decision'] == name for row in rows) for name in features.LABEL_NAMES}
  predictions.set_json_value_custom_property('decision_counts', counts)
  predictions.set_int_custom_property('review_count', sum(bool(row['review']) for row in rows))
