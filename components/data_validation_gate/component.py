"""DataValidationGate: fail the run, naming each reason, before anything trains on bad data.

ExampleValidator records anomalies, DataQualityCheck records leaks and label conflicts and
DriftCheck the drift from the previous span, but all three let the pipeline go on. This
component reads their outputs and raises when any split has an anomaly, the data-quality report
has a violation (a cross-split leak, or label conflicts the policy forbids) or a feature drifted
beyond its threshold (under the `stop` drift policy; `warn` only logs it). Transform is wired to
run after it, so the run stops before training while the reports stay in ML Metadata for
inspection.
"""

from absl import logging
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import contracts
from components.artifact_types import DataQualityReport, DriftReport
from components.data_validation_gate.anomalies import read_anomalies
from components.drift_check.component import DRIFTED_PROPERTY

DRIFT_POLICIES = ('stop', 'warn')


class DataAnomaliesError(RuntimeError):
  """The examples do not match the schema, leak across splits or break the conflict policy."""


class DataDriftError(RuntimeError):
  """The newest span drifted from the previous one beyond a threshold."""


def check_no_anomalies(anomalies: standard_artifacts.ExampleAnomalies) -> None:
  """Raises DataAnomaliesError listing every anomaly ExampleValidator found, naming the span
  (for a data root of span folders)."""
  found = read_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
  where = f'span {anomalies.span} ' if anomalies.span else ''
  lines = [f'{where}{split}: {line}' for split, split_lines in found.items()
           for line in split_lines]
  if lines:
    raise DataAnomaliesError('data validation failed: ' + '; '.join(lines))


def check_data_quality(data_quality: DataQualityReport) -> None:
  """Raises DataAnomaliesError listing the violations DataQualityCheck recorded."""
  violations = data_quality.get_json_value_custom_property(contracts.VIOLATIONS_PROPERTY) or []
  if violations:
    raise DataAnomaliesError('data quality check failed: ' + '; '.join(violations))


def check_drift(drift: DriftReport, drift_policy: str) -> None:
  """Raises DataDriftError naming each drifted feature, unless the policy only warns."""
  drifted = drift.get_json_value_custom_property(DRIFTED_PROPERTY) or []
  if drifted and drift_policy == 'stop':
    raise DataDriftError('data drift: ' + '; '.join(drifted) + ' (--drift warn only warns)')
  for line in drifted:
    logging.warning('data drift, not stopping the run (--drift warn): %s', line)


@component
def DataValidationGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
                       data_quality: InputArtifact[DataQualityReport],
                       drift: InputArtifact[DriftReport] = None,
                       drift_policy: Parameter[str] = 'stop',
                       code_version: Parameter[str] = ''):
  """Fails the run on any anomaly, data-quality violation or (with the `stop` policy) drift;
  see the module docstring.

  `code_version` is a fingerprint of this component's code, unused here: it is in the
  configuration only so that TFX's cache reruns the gate when the code changes.
  """
  del code_version
  if drift_policy not in DRIFT_POLICIES:
    raise ValueError(f'drift_policy must be one of {", ".join(DRIFT_POLICIES)}, '
                     f'got {drift_policy!r}')
  check_data_quality(data_quality)
  check_no_anomalies(anomalies)
  if drift is not None:
    check_drift(drift, drift_policy)
