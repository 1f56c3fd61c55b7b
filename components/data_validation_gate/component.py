"""DataValidationGate: fail the run, naming each reason, before anything trains on bad data.

ExampleValidator records anomalies and DataQualityCheck records leaks and label conflicts, but
both let the pipeline go on. This component reads their outputs and raises when any split has an
anomaly or the data-quality report has a violation (a cross-split leak, or label conflicts the
policy forbids). Transform is wired to run after it, so the run stops before training while both
reports stay in ML Metadata for inspection.
"""

import os
from typing import List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import contracts
from components.artifact_types import DataQualityReport


class DataAnomaliesError(RuntimeError):
  """The examples do not match the schema, leak across splits or break the conflict policy."""


def describe_anomalies(anomalies_artifact: standard_artifacts.ExampleAnomalies) -> List[str]:
  """One line per anomaly: split, feature, short and long description."""
  lines = []
  for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
    path = os.path.join(anomalies_artifact.uri, f'Split-{split}', contracts.ANOMALIES_FILE)
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


def check_data_quality(data_quality: DataQualityReport) -> None:
  """Raises DataAnomaliesError listing the violations DataQualityCheck recorded."""
  violations = data_quality.get_json_value_custom_property(contracts.VIOLATIONS_PROPERTY) or []
  if violations:
    raise DataAnomaliesError('data quality check failed: ' + '; '.join(violations))


@component
def DataValidationGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
                       data_quality: InputArtifact[DataQualityReport]):
  """Fails the run on any anomaly or data-quality violation; see the module docstring."""
  check_data_quality(data_quality)
  check_no_anomalies(anomalies)
