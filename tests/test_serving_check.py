"""The serving check before the push (components/serving_check/, serving/canary.py) and the
on-device TFLite model it measures: in the shared pipeline runs (the first passes and pushes the
TFLite model beside the SavedModel; the fourth makes no TFLite model; the sixth, held to a
latency ceiling of 0.01 ms, fails and is not pushed), and canaries sent to SavedModels that answer
wrongly."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components import contracts
from models import features
from runs import metadata_store, summary
from serving import canary

CLASSES = list(features.LABEL_NAMES)


def run_output(pipeline_runs, run_index: int, type_name: str):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  return [artifact for _, found, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][run_index]) if found == type_name][0]


def test_a_servable_model_passes_and_its_tflite_model_is_pushed_beside_it(pipeline_runs):
  blessing = run_output(pipeline_runs, 0, 'InfraBlessing')
  assert metadata_store.artifact_property(blessing, 'blessed') == 1
  assert os.path.exists(os.path.join(blessing.uri, contracts.INFRA_BLESSED_FILE))
  with open(os.path.join(blessing.uri, contracts.SERVING_CHECK_FILE)) as handle:
    report = json.load(handle)
  # The eval split has 3 images per class: all 9 are sent.
  assert report['loaded'] and report['canaries'] == 9 and report['failures'] == []
  assert len(report['latency_ms']['requests']) == 9
  assert report['latency_ms']['median'] <= 1000  # the default ceiling
  canaries = list(tf.data.TFRecordDataset(os.path.join(blessing.uri, contracts.CANARIES_FILE)))
  labels = sorted(tf.train.Example.FromString(record.numpy()).features.feature[
      features.LABEL_KEY].int64_list.value[0] for record in canaries)
  assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert report['tflite']['examples'] == 9 and report['tflite']['identical_labels'] >= 0.99
  assert report['tflite_agrees'] is True

  version_dir = pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound' / pipeline_runs[
      'serving_after_first'][0]
  assert os.path.getsize(version_dir / 'tflite' / 'model.tflite') == report['tflite']['size_bytes']
  pushed = run_output(pipeline_runs, 0, 'PushedModel')
  assert metadata_store.artifact_property(pushed, 'tflite_pushed') == 1
  stdout = pipeline_runs['stdout'][0]
  assert 'serving check: passed: 9 canaries' in stdout
  assert 'on-device model: TFLite' in stdout and 'pushed beside the SavedModel' in stdout


def test_the_pushed_tflite_model_classifies_pixels_prepared_as_its_metadata_says(pipeline_runs):
  version_dir = pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound' / pipeline_runs[
      'serving_after_first'][0]
  with open(version_dir / 'tflite' / 'metadata.json') as handle:
    metadata = json.load(handle)
  assert metadata['labels'] == CLASSES and metadata['weights'] == 'float16'
  size = metadata['input']['shape'][1]
  assert size == 48 and 'divide by 255' in metadata['input']['preprocessing']
  model = tf.saved_model.load(str(version_dir))
  paths = [pipeline_runs['data_root'] / name / f'{name} (1).png' for name in CLASSES]
  encoded = [tf.io.read_file(str(path)) for path in paths]
  pixels = np.stack([tf.clip_by_value(tf.image.resize(
      tf.io.decode_png(image, channels=3), [size, size], antialias=True) / 255.0, 0, 1).numpy()
                     for image in encoded])
  lite = canary.tflite_model(str(version_dir / 'tflite' / 'model.tflite'))(pixels)
  served = model.signatures['serving_default'](image_bytes=tf.stack(encoded))
  np.testing.assert_allclose(lite, served['probabilities'].numpy(), atol=0.02)
  assert metadata['malignant_threshold'] == pytest.approx(
      float(served['malignant_threshold'].numpy()[0]), abs=1e-6)


def test_no_on_device_model_is_made_or_pushed_when_none_is_asked_for(pipeline_runs):
  """Run 4 asked for `--tflite-weights none`: the SavedModel is checked and pushed alone."""
  model = run_output(pipeline_runs, 3, 'Model')
  assert not os.path.exists(os.path.join(model.uri, 'tflite'))
  assert metadata_store.artifact_property(model, contracts.TFLITE_MODEL_PROPERTY) is None
  with open(os.path.join(run_output(pipeline_runs, 3, 'InfraBlessing').uri,
                         contracts.SERVING_CHECK_FILE)) as handle:
    report = json.load(handle)
  assert report['loaded'] and report['failures'] == []
  assert report['tflite'] is None and report['tflite_agrees'] is False
  pushed = run_output(pipeline_runs, 3, 'PushedModel')
  assert metadata_store.artifact_property(pushed, 'tflite_pushed') == 0
  [version] = set(pipeline_runs['serving_after_fifth']) - set(pipeline_runs['serving_after_third'])
  version_dir = pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound' / version
  assert (version_dir / 'saved_model.pb').exists() and not (version_dir / 'tflite').exists()
  assert 'on-device model: none made (--tflite-weights none)' in pipeline_runs['stdout'][3]


def test_a_model_that_fails_a_canary_is_not_pushed_and_the_run_says_why(pipeline_runs, tmp_path):
  sixth = summary.summarize_run(pipeline_runs['metadata_path'], run_id=metadata_store.run_contexts(
      metadata_store.open_store(pipeline_runs['metadata_path']))[5].name)
  # Blessed by the Evaluator, refused by the serving check alone.
  assert sixth.blessed is True and sixth.serving_check_passed is False
  assert sixth.pushed_destination is None
  assert pipeline_runs['serving_after_sixth'] == pipeline_runs['serving_after_fifth']
  blessing = run_output(pipeline_runs, 5, 'InfraBlessing')
  assert os.path.exists(os.path.join(blessing.uri, contracts.INFRA_NOT_BLESSED_FILE))
  assert metadata_store.artifact_property(run_output(pipeline_runs, 5, 'PushedModel'),
                                          'pushed') == 0
  [failure] = sixth.serving_check['failures']
  assert 'is over the ceiling of 0.01 ms' in failure
  stdout = pipeline_runs['stdout'][5]
  assert f'serving check: failed: {failure}' in stdout
  assert 'pushed to: nothing pushed (the serving check failed)' in stdout
  states = {run.node_id: run.state for run in pipeline_runs['runs'][5]}
  assert states['Trainer'] == 'cached' and states['ServingCheck'] == 'complete'


class WrongScores(tf.Module):
  """A servable model that answers wrongly: scores that do not sum to 1, and an unknown label."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve(self, image_bytes):
    batch = tf.shape(image_bytes)[0]
    return {'probabilities': tf.fill([batch, 3], 0.5),
            'classes': tf.tile(tf.constant([CLASSES]), [batch, 1]),
            'decision': tf.fill([batch], 'cyst')}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def from_examples(self, examples):
    batch = tf.shape(examples)[0]
    return {'probabilities': tf.fill([batch, 3], float('nan'))}


def canary_examples(count: int):
  return [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'png']))}))
          .SerializeToString() for _ in range(count)]


def test_canaries_name_what_a_wrong_model_answers(tmp_path):
  module = WrongScores()
  tf.saved_model.save(module, str(tmp_path / 'wrong'), signatures={
      'serving_default': module.serve, 'from_examples': module.from_examples})
  report = canary.run_checks(str(tmp_path / 'wrong'), canary_examples(3), features.IMAGE_KEY,
                             CLASSES, latency_ceiling_ms=10_000)
  assert report['loaded'] is True
  assert report['failures'] == [
      'serving_default: probabilities of canary 1 sum to 1.5000, not 1',
      'from_examples: 9 probabilities are not finite',
      "serving_default: decision 'cyst' is not in the vocabulary ['benign', 'malignant', 'normal']",
  ]


def test_canaries_name_a_missing_signature_and_a_model_that_does_not_load(tmp_path):
  module = WrongScores()
  tf.saved_model.save(module, str(tmp_path / 'no_examples'),
                      signatures={'serving_default': module.serve})
  report = canary.run_checks(str(tmp_path / 'no_examples'), canary_examples(1),
                             features.IMAGE_KEY, CLASSES, latency_ceiling_ms=10_000)
  assert report['failures'] == ['the model has no from_examples signature (it has '
                                'serving_default)']
  (tmp_path / 'broken').mkdir()
  (tmp_path / 'broken' / 'saved_model.pb').write_bytes(b'not a SavedModel')
  report = canary.run_checks(str(tmp_path / 'broken'), canary_examples(1), features.IMAGE_KEY,
                             CLASSES, latency_ceiling_ms=10_000)
  assert report['loaded'] is False
  assert report['failures'][0].startswith('the model did not load: ')

