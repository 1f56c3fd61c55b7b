"""Reading what TFX's ExampleValidator found: one readable line per anomaly, per split.

DataValidationGate stops the run on these lines, and the run report shows them.
"""

import os
from typing import Dict, Iterable, List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components import contracts


def read_anomalies(anomalies_uri: str, split_names: Iterable[str]) -> Dict[str, List[str]]:
  """{split: ['feature 'x': short description (description)', ...]} of an ExampleAnomalies
  artifact; a split without anomalies has an empty list."""
  found = {}
  for split in split_names:
    path = os.path.join(anomalies_uri, f'Split-{split}', contracts.ANOMALIES_FILE)
    if not tf.io.gfile.exists(path):
      continue
    with tf.io.gfile.GFile(path, 'rb') as handle:
      anomalies = anomalies_pb2.Anomalies.FromString(handle.read())
    lines = [f'feature {feature!r}: {info.short_description} ({info.description})'
             for feature, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField('dataset_anomaly_info'):
      info = anomalies.dataset_anomaly_info
      lines.append(f'data set: {info.short_description} ({info.description})')
    found[split] = lines
  return found
