"""ModelCardGenerator: a model card for every run's model, and for every pushed version.

It runs after the Pusher and gathers what the pipeline recorded in ML Metadata on its input
artifacts (their properties, and where the evaluation is); `card.py` says what the card holds
and writes `model_card.html` and `model_card.json` into the card's own ModelCard artifact and,
when the model was pushed, into `<published_card_dir>/<version>/` beside the serving directory:
never inside the published version, which the Pusher published whole and which must not change
while it is served.
"""

import datetime
import json
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components import contracts
from components.artifact_types import DataQualityReport, ModelCard
from components.model_card import card as model_card


def _property(artifact, name):
  return artifact.get_custom_property(name)


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
                       published_card_dir: Parameter[str],
                       training: Parameter[str],
                       code_version: Parameter[str] = ''):
  """Writes the card into its artifact, and into `published_card_dir/<version>/` too when the
  model was pushed; `training` is the recipe as JSON (network, epochs, ensemble members,
  image size, batch size); `code_version` only keys TFX's cache."""
  del code_version
  pushed = _property(pushed_model, 'pushed') == 1
  destination = _property(pushed_model, 'pushed_destination') if pushed else None
  facts = dict(
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
  published = (os.path.join(published_card_dir, os.path.basename(destination.rstrip('/')))
               if destination else None)
  model_card.write_model_cards(facts, [card.uri] + ([published] if published else []))
  if published:
    card.set_string_custom_property(contracts.MODEL_CARD_PUSHED_COPY_PROPERTY, os.path.join(
        published, contracts.MODEL_CARD_HTML_FILE))
