"""The model card (components/model_card/): written by every run of the shared pipeline runs,
published for each pushed version outside its served folder, and saying why a model was not
pushed."""

import json
import os

from components import contracts
from components.model_card import card as model_card
from models import backbones, features, networks
from runs import metadata_store, summary


def card_of_run(pipeline_runs, run_index: int):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  artifact = [artifact for _, type_name, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][run_index]) if type_name == 'breast_ultrasound.ModelCard'][0]
  with open(os.path.join(artifact.uri, contracts.MODEL_CARD_JSON_FILE)) as handle:
    return artifact, json.load(handle)


def test_the_pushed_version_has_its_model_card_outside_the_published_folder(pipeline_runs):
  version = pipeline_runs['serving_after_first'][0]
  # Published whole by the Pusher, the version folder never changes: the card is beside it.
  assert not any(name.startswith('model_card') for name in os.listdir(
      pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound' / version))
  version_dir = pipeline_runs['output_dir'] / 'model_cards' / 'breast_ultrasound' / version
  with open(version_dir / contracts.MODEL_CARD_JSON_FILE) as handle:
    card = json.load(handle)
  _, recorded = card_of_run(pipeline_runs, 0)
  assert card == recorded
  assert card['model']['name'] == 'breast_ultrasound' and card['model']['version'] == version
  assert card['model']['training'] == {
      'network': networks.DEFAULT_NETWORK, 'epochs': 2, 'ensemble_members': 1, 'image_size': 48,
      'batch_size': 32,
      'pretrained_weights': backbones.weights_description(networks.DEFAULT_NETWORK, None)}
  assert 'malignant when p(malignant) ≥' in card['model']['operating_point_line']
  assert 'a calibration set of ' in card['model']['operating_point_line']  # one network
  # The two answers, kept apart.
  assert ('the most probable class with its calibrated probability, and the decision at the '
          'operating point') in card['model']['outputs']
  assert card['data']['class_counts'] == {
      'train': {name: 12 for name in features.LABEL_NAMES},
      'eval': {name: 3 for name in features.LABEL_NAMES}}
  assert card['data']['quality']['image_count'] == 45
  assert card['data']['quality']['label_conflict_policy'] == 'exclude'
  first = summary.summarize_run(pipeline_runs['metadata_path'], run_id=metadata_store.run_contexts(
      metadata_store.open_store(pipeline_runs['metadata_path']))[0].name)
  metrics = {row['metric']: row for row in card['evaluation']['metrics']}
  accuracy = metrics['sparse_categorical_accuracy']
  assert accuracy['value'] == first.metrics['sparse_categorical_accuracy']
  assert accuracy['lower'] <= accuracy['value'] <= accuracy['upper']
  assert [row['class'] for row in card['evaluation']['per_class']] == list(features.LABEL_NAMES)
  assert sum(map(sum, card['evaluation']['confusion_matrix_at_operating_point'])) == 9
  assert card['blessing']['blessed'] is True
  assert {check['check'] for check in card['blessing']['checks']} >= {
      'sparse_categorical_accuracy ≥ 0', 'expected_calibration_error ≤ 1'}
  assert card['serving_check']['passed'] is True
  assert any('not a medical device' in line for line in card['not_for'])
  assert any(line.startswith('Single site') for line in card['caveats'])
  assert card['caveats'][0] == model_card.NO_PATIENTS_CAVEAT  # the synthetic set has none

  page = (version_dir / contracts.MODEL_CARD_HTML_FILE).read_text(encoding='utf-8')
  for heading in ('Model', 'Intended use', 'Data', 'Evaluation', 'Blessing', 'Caveats'):
    assert f'<h2>{heading}</h2>' in page
  assert f'version {version}' in page and 'Not a diagnostic device' in page
  assert (f'model card: {version_dir / contracts.MODEL_CARD_HTML_FILE}'
          in pipeline_runs['stdout'][0])


def test_a_model_that_was_not_pushed_gets_a_card_that_says_why(pipeline_runs):
  artifact, card = card_of_run(pipeline_runs, 5)
  assert card['model']['version'] is None and card['model']['pushed_to'] is None
  assert card['blessing']['blessed'] is True and card['serving_check']['passed'] is False
  assert 'is over the ceiling of 0.01 ms' in card['serving_check']['line']
  page = open(os.path.join(artifact.uri, contracts.MODEL_CARD_HTML_FILE), encoding='utf-8').read()
  assert '(not pushed)' in page and 'is over the ceiling of 0.01 ms' in page
  assert (f'model card: {os.path.join(artifact.uri, contracts.MODEL_CARD_HTML_FILE)}'
          in pipeline_runs['stdout'][5])


def test_the_patients_caveat_goes_only_when_every_image_has_a_patient():
  assert model_card.caveats({'image_count': 40})[0] == model_card.NO_PATIENTS_CAVEAT
  assert model_card.caveats({'image_count': 40, 'images_with_patient': 25})[0].startswith(
      'Patients known for 25 of 40 images: the others\' patients may be in both training')
  assert model_card.caveats({'image_count': 40, 'images_with_patient': 40}) == model_card.CAVEATS
  assert not [line for line in model_card.CAVEATS if 'patient' in line.lower()]
