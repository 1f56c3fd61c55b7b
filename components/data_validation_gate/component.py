"""DataValidationGate: fail the run, naming each reason, before anything trains on bad data.

ExampleValidator records anomalies and DataQualityCheck records leaks and label conflicts, but
both let the pipeline go on. This component reads their outputs and raises when any split has an
anomaly or the data-quality report has a violation (a cross-split leak, or label conflicts the
policy forbids). Transform is wired to run after it, so the run stops before training while both
reports stay in ML Metadata for inspection.
"""

from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import contracts
from components.artifact_types import DataQualityReport
from components.data_validation_gate.anomalies import read_anomalies


class DataAnomaliesError(RuntimeError):
  """The examples do not match the schema, leak across splits or break the conflict policy."""


def check_no_anomalies(anomalies: standard_artifacts.ExampleAnomalies) -> None:
  """Raises DataAnomaliesError listing every anomaly ExampleValidator found."""
  found = read_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
  lines = [f'{split}: {line}' for split, split_lines in found.items() for line in split_lines]
  if lines:
    raise DataAnomaliesError('data validation failed: ' + '; '.join(lines))


def check_data_quality(data_quality: DataQualityReport) -> None:
  """Raises DataAnomaliesError listing the violations DataQualityCheck recorded."""
  violations = data_quality.get_json_value_custom_property(contracts.VIOLATIONS_PROPERTY) or []
  if violations:
    raise DataAnomaliesError('data quality check failed: ' + '; '.join(violations))


@component
def DataValidationGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
                       data_quality: InputArtifact[DataQualityReport],
                       code_version: Parameter[str] = ''):
  """Fails the run on any anomaly or data-quality violation; see the module docstring.

  `code_version` is a fingerprint of this component's code, unused here: it is in the
  configuration only so that TFX's cache reruns the gate when the code changes.
  """
  del code_version
  check_data_quality(data_quality)
  check_no_anomalies(anomalies)
