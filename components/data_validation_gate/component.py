"""DataValidationGate: fail the run, naming each anomaly, before anything trains on bad data.

ExampleValidator records anomalies but lets the pipeline go on. This component reads its output
and raises when any split has an anomaly; Transform is wired to run after it, so an anomaly stops
the run before training while the anomalies artifact stays in ML Metadata for inspection.
"""

import os
from typing import List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

ANOMALIES_FILE = 'SchemaDiff.pb'


class DataAnomaliesError(RuntimeError):
  """The examples do not match the schema."""


def describe_anomalies(anomalies_artifact: standard_artifacts.ExampleAnomalies) -> List[str]:
  """One line per anomaly: split, feature, short and long description."""
  lines = []
  for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
    path = os.path.join(anomalies_artifact.uri, f'Split-{split}', ANOMALIES_FILE)
    if not tf.io.gfile.exists(path):
      continue
    with tf.io.gfile.GFile(path, 'rb') as handle:
      anomalies = anomalies_pb2.Anomalies.FromString(handle.read())
    for feature, info in sorted(anomalies.anomaly_info.items()):
      lines.append(f'{split}: feature {feature!r}: {info.short_description}'
                   f' ({info.description})')
    if anomalies.HasField('dataset_anomaly_info'):
      info = anomalies.dataset_anomaly_info
      lines.append(f'{split}: data set: {info.short_description} ({info.description})')
  return lines


def check_no_anomalies(anomalies: standard_artifacts.ExampleAnomalies) -> None:
  """Raises DataAnomaliesError listing every anomaly ExampleValidator found."""
  found = describe_anomalies(anomalies)
  if found:
    raise DataAnomaliesError('data validation failed: ' + '; '.join(found))


@component
def DataValidationGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]):
  """Fails the run when `anomalies` holds any anomaly; see check_no_anomalies."""
  check_no_anomalies(anomalies)
