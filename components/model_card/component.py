"""ModelCardGenerator: a model card for every run's model, and beside every pushed version.

It runs after the Pusher and reads what the pipeline recorded in ML Metadata through its input
artifacts (runs/model_card.py lists what the card says and where each part comes from). The
card goes into its own ModelCard artifact and, when the model was pushed, into the pushed
version's folder (`<serving dir>/<version>/model_card.html` and `model_card.json`), which a
model server ignores.
"""

import datetime
import json
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components import contracts
from components.artifact_types import DataQualityReport, ModelCard
from runs import model_card
from runs.metadata_store import artifact_property


def _property(artifact, name):
  return artifact_property(artifact.mlmd_artifact, name)


@component
def ModelCardGenerator(model: InputArtifact[standard_artifacts.Model],
                       examples: InputArtifact[standard_artifacts.Examples],
                       data_quality: InputArtifact[DataQualityReport],
                       evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
                       model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
                       infra_blessing: InputArtifact[standard_artifacts.InfraBlessing],
                       pushed_model: InputArtifact[standard_artifacts.PushedModel],
                       card: OutputArtifact[ModelCard],
                       model_name: Parameter[str],
                       training: Parameter[str],
                       code_version: Parameter[str] = ''):
  """Writes the card; `training` is the recipe as JSON (network, epochs, ensemble members,
  image size, batch size); `code_version` only keys TFX's cache."""
  del code_version
  pushed = _property(pushed_model, 'pushed') == 1
  destination = _property(pushed_model, 'pushed_destination') if pushed else None
  contents = model_card.build_model_card(
      model_name=model_name, training=json.loads(training),
      class_counts=_property(examples, contracts.CLASS_COUNTS_PROPERTY) or {},
      data_quality={name: _property(data_quality, name) for name in (
          *contracts.DATA_QUALITY_COUNT_PROPERTIES, contracts.LABEL_CONFLICT_POLICY_PROPERTY)},
      operating_point=_property(model, 'operating_point'),
      hyperparameters=_property(model, 'hyperparameters'),
      evaluation_uri=evaluation.uri,
      blessed=_property(model_blessing, 'blessed') == 1,
      serving_check=_property(infra_blessing, contracts.SERVING_CHECK_PROPERTY),
      serving_check_passed=_property(infra_blessing, 'blessed') == 1,
      tflite_bytes=_property(model, contracts.TFLITE_BYTES_PROPERTY),
      tflite_error=_property(model, contracts.TFLITE_ERROR_PROPERTY),
      pushed_destination=destination,
      tflite_pushed=_property(pushed_model, 'tflite_pushed') == 1,
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
  model_card.write_model_card(contents, card.uri)
  if destination:
    model_card.write_model_card(contents, destination)
    card.set_string_custom_property(contracts.MODEL_CARD_PUSHED_COPY_PROPERTY, os.path.join(
        destination, contracts.MODEL_CARD_HTML_FILE))
