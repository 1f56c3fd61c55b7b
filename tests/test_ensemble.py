"""A deep ensemble: members trained by the Trainer and exported as one SavedModel that averages
their probabilities, with the same signatures as one network."""

import json
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import calibration, export, features, model, networks, warm_start
from runs import metadata_store

SIGNATURES = {'serving_default', 'from_examples', 'transform_features', 'explain', 'from_pixels'}


def transform_graph_uri(runs) -> str:
  store = metadata_store.open_store(runs['metadata_path'])
  return [artifact.uri for _, type_name, artifact in metadata_store.run_outputs(
      store, runs['runs'][0]) if type_name == 'TransformGraph'][0]


def images_of(runs, count: int):
  folder = runs['data_root'] / 'malignant'
  return [(folder / name).read_bytes() for name in sorted(os.listdir(folder))[:count]]


def by_hand(members, pixels: np.ndarray) -> np.ndarray:
  """The mean over members of each member's mean over the image and its mirror image."""
  return np.mean([(member(pixels, training=False).numpy()
                   + member(pixels[:, :, ::-1, :], training=False).numpy()) / 2
                  for member in members], axis=0)


def test_the_exported_ensemble_averages_its_members_in_every_signature(first_runs, tmp_path):
  transform_output = tft.TFTransformOutput(transform_graph_uri(first_runs))
  size = transform_output.transformed_feature_spec()[features.TRANSFORMED_IMAGE_KEY].shape[0]
  members = []
  for seed, favoured in ((1, 0), (2, 2)):
    keras.utils.set_random_seed(seed)
    # The seed CNN: the averaging is under test, and it exports in seconds (the default's
    # ensemble is exported by the fourth pipeline run, below).
    member = networks.RECIPES['seed'].build(size, 3)
    # Untrained networks answer about 1/3 for every class; a bias makes each member lean to
    # its own class, so their mean is neither of them.
    member.get_layer('probabilities').bias.assign(np.eye(3, dtype=np.float32)[favoured] * 2)
    members.append(member)
  # No threshold and temperature 1: the calibrated probabilities are the members' mean itself.
  export.export_model(members, transform_output, str(tmp_path), test_time_flips=True,
                     operating_point=calibration.OperatingPoint(temperature=1.0),
                     image_size=size)
  loaded = tf.saved_model.load(str(tmp_path))
  assert set(loaded.signatures) == SIGNATURES

  image_bytes = tf.constant(images_of(first_runs, 3))
  explained = loaded.signatures['explain'](image_bytes=image_bytes)
  pixels = explained['image_pixels'].numpy()
  expected = by_hand(members, pixels)
  single = by_hand(members[:1], pixels)
  assert np.abs(expected - single).max() > 0.1

  served = loaded.signatures['serving_default'](image_bytes=image_bytes)
  np.testing.assert_allclose(served['probabilities'].numpy(), expected, atol=1e-5)
  examples = tf.constant([tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
                          .SerializeToString() for image in image_bytes.numpy()])
  from_examples = loaded.signatures['from_examples'](examples=examples)
  np.testing.assert_allclose(from_examples['uncalibrated_probabilities'].numpy(), expected,
                             atol=1e-5)
  np.testing.assert_allclose(explained['probabilities'].numpy(), expected, atol=1e-5)
  from_pixels = loaded.signatures['from_pixels'](image_pixels=tf.constant(pixels))
  np.testing.assert_allclose(from_pixels['probabilities'].numpy(), expected, atol=1e-5)
  assert explained['heat_map'].shape == (3, size, size)


def test_the_trainer_trains_each_member_of_the_ensemble(pipeline_runs):
  """Run 4 asked for `--ensemble-members 2 --epochs 1`."""
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  model_run = [artifact for _, type_name, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][3]) if type_name == 'ModelRun'][0]
  with open(os.path.join(model_run.uri, model.HISTORY_FILE)) as handle:
    histories = json.load(handle)
  assert len(histories) == 2 and all(len(history['loss']) == 1 for history in histories)
  # Different seeds: the two members did not learn the same thing.
  assert histories[0]['loss'] != histories[1]['loss']
  assert {'member_0', 'member_1'} <= set(os.listdir(model_run.uri))
  trainer = [run for run in pipeline_runs['runs'][3] if run.node_id == 'Trainer'][0]
  execution = store.get_executions_by_id([trainer.execution_id])[0]
  custom_config = metadata_store.execution_json_property(execution, 'custom_config')
  assert custom_config[model.ENSEMBLE_MEMBERS_KEY] == 2
  # Four networks cross-fitted on three quarters of the 36 training images each (one batch an
  # epoch) to choose the operating point, then the two members refitted on all of them (two
  # batches) to ship.
  stdout = pipeline_runs['stdout'][3]
  cross_fitting = stdout.index('cross-fitting 4 networks')
  refitting = stdout.index('refitting the 2 members on the whole training split')
  steps = lambda text: re.findall(r'^(\d+)/\d+ - ', text, re.MULTILINE)
  assert set(steps(stdout[cross_fitting:refitting])) == {'1'}
  assert set(steps(stdout[refitting:])) == {'2'}


def test_the_operating_point_pools_the_folds_of_networks_that_never_trained_on_them(
    pipeline_runs):
  """Run 4: an ensemble of two, its operating point chosen on the out-of-fold predictions of four
  cross-fitted networks, the Tuner's fold left out. Read back from the Model artifact: every
  network predicted only groups it did not train on, every training group was predicted by
  exactly one, and the predictions of three folds were pooled."""
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  trained = [artifact for _, type_name, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][3]) if type_name == 'Model'][0]
  with open(os.path.join(trained.uri, model.CROSS_FITTING_FILE)) as handle:
    folds = json.load(handle)['folds']
  with open(os.path.join(trained.uri, warm_start.TRAINING_GROUPS_FILE)) as handle:
    training_groups = set(json.load(handle))
  assert len(folds) == 4
  for fold in folds:
    assert fold['predicted'] and not set(fold['predicted']) & set(fold['trained_on'])
    assert set(fold['predicted']) | set(fold['trained_on']) == training_groups
  predicted = [group for fold in folds for group in fold['predicted']]
  assert sorted(predicted) == sorted(training_groups)  # each group by exactly one network
  pooled = [fold for fold in folds if fold['pooled']]
  assert len(pooled) == 3
  point = metadata_store.artifact_property(trained, 'operating_point')
  assert point['pooled_folds'] == 3 and point['chosen_on'] == 'out-of-fold'
  assert point['calibration_examples'] == sum(fold['predicted_images'] for fold in pooled)
