"""DriftCheck: the newest span's statistics against the previous span's, by TFDV's comparators.

A new span can look unlike the data the serving model learned from: another scanner's gain, a
changed referral mix. This component compares the training split's statistics of the span this
run ingested with those of the newest older span (resolved by
`components.history_strategies.PreviousSpanStatisticsStrategy`):

- the label distribution (`label_name`) by L-infinity distance, the largest difference of one
  class's share;
- the image-content features ImageExampleGen records (mean intensity, contrast, share of dark
  pixels) and the image's width and height by approximate Jensen–Shannon divergence of their
  histograms.

It runs TFDV's own `validate_statistics` with `previous_statistics`, the comparators set on a
copy of the pinned schema (TFX 1.16's ExampleValidator passes no previous statistics, so drift
comparators in a schema are ignored there). It writes a DriftReport artifact: `drift.json`, every
measurement with its threshold, and the `drifted` custom property, one line per feature beyond
its threshold naming the spans, the feature and the distance. It never fails the run:
DataValidationGate does (or only warns), after the report is recorded in ML Metadata.
"""

import json
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_data_validation as tfdv
from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from components import contracts
from components.artifact_types import DriftReport
from components.history_strategies import span_of
from models import features

# The numeric features compared by Jensen–Shannon divergence.
DIVERGENCE_FEATURES = (*features.CONTENT_KEYS, features.WIDTH_KEY, features.HEIGHT_KEY)
DRIFT_FILE = 'drift.json'
DRIFTED_PROPERTY = 'drifted'  # ['span 2 against span 1: feature ...', ...]
COMPARED_SPANS_PROPERTY = 'compared_spans'  # '2 against 1', or '' when there was nothing to compare
_MEASURE_NAMES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: 'L-infinity distance',
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE:
        'Jensen-Shannon divergence',
}


def with_comparators(schema: schema_pb2.Schema, max_label_distance: float,
                     max_feature_divergence: float, kind: str = 'drift') -> schema_pb2.Schema:
  """A copy of `schema` whose label and content features carry TFDV's drift (or, with kind
  'skew', skew) comparators at these thresholds; other comparators are removed."""
  compared = schema_pb2.Schema()
  compared.CopyFrom(schema)
  for feature in compared.feature:
    feature.ClearField('drift_comparator')
    feature.ClearField('skew_comparator')
    comparator = getattr(feature, f'{kind}_comparator')
    if feature.name == features.LABEL_NAME_KEY:
      comparator.infinity_norm.threshold = max_label_distance
    elif feature.name in DIVERGENCE_FEATURES:
      comparator.jensen_shannon_divergence.threshold = max_feature_divergence
  return compared


def measurements(anomalies: anomalies_pb2.Anomalies, kind: str = 'drift') -> List[dict]:
  """{'feature', 'measure', 'distance', 'threshold', 'beyond'} of every compared feature."""
  found = []
  for info in anomalies.drift_skew_info:
    for measurement in getattr(info, f'{kind}_measurements'):
      found.append({'feature': '.'.join(info.path.step),
                    'measure': _MEASURE_NAMES.get(measurement.type, str(measurement.type)),
                    'distance': round(measurement.value, 4),
                    'threshold': measurement.threshold,
                    'beyond': measurement.value > measurement.threshold})
  return sorted(found, key=lambda row: (not row['beyond'], row['feature']))


def load_split_statistics(statistics: standard_artifacts.ExampleStatistics,
                          split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
  return stats_artifact_utils.load_statistics(statistics, split).proto()


def measure_drift(current: statistics_pb2.DatasetFeatureStatisticsList,
                  previous: statistics_pb2.DatasetFeatureStatisticsList,
                  schema: schema_pb2.Schema, max_label_distance: float,
                  max_feature_divergence: float) -> List[dict]:
  """Every drift measurement of `current` against `previous` (see `measurements`)."""
  anomalies = tfdv.validate_statistics(
      current, with_comparators(schema, max_label_distance, max_feature_divergence),
      previous_statistics=previous)
  return measurements(anomalies)


def drift_lines(rows: List[dict], spans: str) -> List[str]:
  """One line per feature beyond its threshold, naming the spans, the feature and the distance."""
  return [f'span {spans}: {row["feature"]} drifted, {row["measure"]} {row["distance"]:.3f} > '
          f'{row["threshold"]:g}' for row in rows if row['beyond']]


@component
def DriftCheck(statistics: InputArtifact[standard_artifacts.ExampleStatistics],
               schema: InputArtifact[standard_artifacts.Schema],
               drift: OutputArtifact[DriftReport],
               max_label_distance: Parameter[float],
               max_feature_divergence: Parameter[float],
               baseline_statistics: InputArtifact[standard_artifacts.ExampleStatistics] = None,
               code_version: Parameter[str] = ''):
  """Writes the drift report of `statistics` against `baseline_statistics`; see the module
  docstring. Without a baseline (a first span, a data root without spans) nothing is compared.
  The thresholds' defaults are the pipeline's (pipeline/configs.py says why).

  `code_version` is a fingerprint of this component's code, unused here: it is in the
  configuration only so that TFX's cache reruns the check when the code changes.
  """
  del code_version
  report: Dict[str, object] = {'span': span_of(statistics), 'split': contracts.TRAIN_SPLIT,
                               'max_label_distance': max_label_distance,
                               'max_feature_divergence': max_feature_divergence}
  rows: List[dict] = []
  spans = ''
  if baseline_statistics is not None:
    spans = f'{span_of(statistics)} against {span_of(baseline_statistics)}'
    pinned = io_utils.SchemaReader().read(
        io_utils.get_only_uri_in_dir(schema.uri))
    rows = measure_drift(load_split_statistics(statistics, contracts.TRAIN_SPLIT),
                         load_split_statistics(baseline_statistics, contracts.TRAIN_SPLIT),
                         pinned, max_label_distance, max_feature_divergence)
    report['baseline_span'] = span_of(baseline_statistics)
  report['measurements'] = rows
  lines = drift_lines(rows, spans)
  report['drifted'] = lines
  tf.io.gfile.makedirs(drift.uri)
  with tf.io.gfile.GFile(os.path.join(drift.uri, DRIFT_FILE), 'w') as handle:
    json.dump(report, handle, indent=1)
  drift.set_string_custom_property(COMPARED_SPANS_PROPERTY, spans)
  drift.set_json_value_custom_property(DRIFTED_PROPERTY, lines)
  for line in lines:
    logging.warning('DriftCheck: %s', line)


def read_drift_report(drift_uri: str) -> Optional[dict]:
  """The drift.json of a DriftReport artifact (by its URI), or None when it has none."""
  path = os.path.join(drift_uri, DRIFT_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as handle:
    return json.load(handle)
