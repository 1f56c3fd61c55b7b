"""The whole pipeline, run six times through `local_runner.py` on a small synthetic set (the
`pipeline_runs` fixture in conftest.py; runs 1 and 2 are `first_runs`, and their tests are in the
quick tier).

1. A first run: every component executes once, the model is blessed and pushed, and the pushed
   SavedModel classifies a PNG read from disk.
2. The same command again: every component is taken from the cache.
3. With `--min-accuracy 1.01`: the Evaluator runs again and refuses the blessing, and the
   serving directory still holds only the version pushed by the first run.
   The accuracy gate alone refuses it: there is no other blessed model to compare with.
4. With `--epochs 1 --ensemble-members 2 --non-inferiority-margin 1` and a two-trial `--tune`: a
   new model (test_ensemble.py and test_tuning.py look at how it was made), evaluated against
   the first (the latest blessed) as baseline on the same eval images, with a comparison it
   cannot fail (a margin of 1): blessed and pushed as a second version.
5. With every gate passable but `--max-calibration-error 0`, which no model meets: the
   Evaluator refuses the blessing on the calibration error alone, and nothing is pushed.
6. The first run's model again, blessed (a margin of 1), with a serving latency ceiling of
   0.01 ms that no model meets: ServingCheck fails it and nothing is pushed (test_serving_check.py).
Everything is asserted from ML Metadata and the files it points to.
"""

import os

import pytest
import tensorflow as tf

from components.eval_explanations import component as eval_explanations
from evaluation import blessing
from models import calibration, features
from runs import metadata_store, report_facts, summary

COMPONENTS = ('ImageExampleGen', 'DataQualityCheck', 'StatisticsGen', 'CuratedSchemaGen',
              'ExampleValidator', 'DataValidationGate', 'Transform', 'Trainer', 'Evaluator',
              'ServingCheck', 'EvalExplainer', 'Pusher', 'ModelCardGenerator')
RESOLVER = 'latest_blessed_model_resolver'


def states(component_runs):
  return {run.node_id: run.state for run in component_runs}


@pytest.mark.quick
def test_first_run_executes_each_component_once(first_runs):
  assert len(first_runs['runs']) == 2
  first = first_runs['runs'][0]
  node_ids = [run.node_id for run in first]
  for component in COMPONENTS + (RESOLVER,):
    assert node_ids.count(component) == 1, node_ids
  assert all(run.state == 'complete' for run in first), states(first)


@pytest.mark.quick
def test_first_run_blesses_and_pushes_a_model(first_runs):
  store = metadata_store.open_store(first_runs['metadata_path'])
  run_id = metadata_store.run_contexts(store)[0].name
  first = summary.summarize_run(first_runs['metadata_path'], run_id=run_id)
  assert first.blessed is True
  assert first.pushed_destination is not None
  assert os.path.dirname(first.pushed_destination) == str(
      first_runs['output_dir'] / 'serving' / 'breast_ultrasound')
  assert first_runs['serving_after_first'] == [os.path.basename(first.pushed_destination)]
  assert set(first.class_counts) == {'train', 'eval'}
  assert sum(first.class_counts['eval'].values()) == 9  # 20% of 15 per class
  matrix = first.confusion_matrix
  assert sum(map(sum, matrix)) == 9
  assert [sum(row) for row in matrix] == [3, 3, 3]
  correct = sum(matrix[index][index] for index in range(len(matrix)))
  assert abs(correct / 9 - first.metrics['sparse_categorical_accuracy']) < 1e-6
  malignant = features.MALIGNANT_LABEL
  assert abs(first.metrics['malignant_recall'] - matrix[malignant][malignant] / 3) < 1e-6
  f1_per_class = [2 * matrix[index][index]
                  / (sum(matrix[index]) + sum(row[index] for row in matrix))
                  for index in range(len(matrix))]
  assert first.metrics['macro_f1'] == pytest.approx(sum(f1_per_class) / 3, abs=1e-6)
  aucs = [first.metrics[f'auc/{name}'] for name in features.LABEL_NAMES]
  assert abs(first.metrics['macro_auc'] - sum(aucs) / 3) < 1e-6
  assert 'blessed: yes' in first_runs['stdout'][0]


@pytest.mark.quick
def test_first_run_explains_eval_images_in_the_pipeline_with_lineage(first_runs):
  """EvalExplainer's artifact, made from the Trainer's model and the examples, is what the
  report draws; the report itself runs no model."""
  store = metadata_store.open_store(first_runs['metadata_path'])
  first = first_runs['runs'][0]
  explainer = next(run for run in first if run.node_id == 'EvalExplainer')
  trainer = next(run for run in first if run.node_id == 'Trainer')
  inputs = dict(metadata_store.inputs_of(store, explainer.execution_id))
  assert inputs['model'].id in {artifact.id
                                for artifact in metadata_store.outputs_of(store, trainer.execution_id)}
  assert metadata_store.type_name_of(store, inputs['examples']) == 'Examples'
  [explanations] = metadata_store.outputs_of(store, explainer.execution_id)
  rows = eval_explanations.read_explanations(explanations.uri)
  assert explanations.custom_properties['explained'].int_value == len(rows) > 0
  eval_files = {f'{name} ({index})' for name in features.LABEL_NAMES for index in range(1, 16)}
  for row in rows:
    assert row['true'] in features.LABEL_NAMES and row['predicted'] in features.LABEL_NAMES
    assert os.path.splitext(os.path.basename(row['file']))[0] in eval_files
    assert 0 < row['confidence'] <= 1 and row['heat'].ndim == 2 and row['pixels'].ndim == 3
  # Wrong answers first, the most confident first; then right ones, at most 2 per class.
  wrong = [row['confidence'] for row in rows if row['true'] != row['predicted']]
  assert wrong == sorted(wrong, reverse=True) and len(wrong) <= 8
  assert all(row['true'] == row['predicted'] for row in rows[len(wrong):])
  facts = report_facts.gather_report_facts(first_runs['metadata_path'],
                                           metadata_store.run_contexts(store)[0].name)
  assert [row['file'] for row in facts.explained] == [row['file'] for row in rows]


@pytest.mark.quick
def test_first_run_records_the_data_quality_report(first_runs):
  first = summary.summarize_run(first_runs['metadata_path'],
                                run_id=metadata_store.run_contexts(
                                    metadata_store.open_store(first_runs['metadata_path']))[0].name)
  assert first.data_quality['image_count'] == 45
  assert first.data_quality['group_count'] == 45  # distinct synthetic images
  assert first.data_quality['cross_split_leak_count'] == 0
  assert first.data_quality['label_conflict_policy'] == 'exclude'
  for name in ('data_quality.json', 'image_groups.csv', 'contact_sheet.png'):
    assert os.path.getsize(os.path.join(first.data_quality_uri, name)) > 0
  assert 'data quality: 45 images in 45 groups' in first_runs['stdout'][0]


@pytest.mark.quick
def test_pushed_model_classifies_a_png_from_disk(first_runs):
  serving_dir = first_runs['output_dir'] / 'serving' / 'breast_ultrasound'
  version_dir = serving_dir / first_runs['serving_after_first'][0]
  loaded = tf.saved_model.load(str(version_dir))
  assert {'serving_default', 'from_examples', 'transform_features'} <= set(loaded.signatures)
  png_path = first_runs['data_root'] / 'malignant' / 'malignant (2).png'
  image_bytes = tf.io.read_file(str(png_path))
  outputs = loaded.signatures['serving_default'](image_bytes=tf.reshape(image_bytes, [1]))
  probabilities = outputs['probabilities'].numpy()
  assert probabilities.shape == (1, len(features.LABEL_NAMES))
  assert abs(probabilities.sum() - 1.0) < 1e-4
  decision = outputs['decision'].numpy()[0].decode()
  threshold = float(outputs['malignant_threshold'].numpy()[0])
  assert 0 < threshold <= calibration.HIGHEST_THRESHOLD  # the calibration set had malignant images
  expected = calibration.operating_point_labels(probabilities, threshold)[0]
  assert decision == features.LABEL_NAMES[expected]
  # Apart from the decision: the most probable class and its calibrated probability.
  assert outputs['most_probable_class'].numpy()[0].decode() == features.LABEL_NAMES[
      probabilities.argmax()]
  assert outputs['most_probable_probability'].numpy()[0] == pytest.approx(probabilities.max())
  assert [name.decode() for name in outputs['classes'].numpy()[0]] == list(features.LABEL_NAMES)
  # The same threshold is on the Model artifact in ML Metadata.
  store = metadata_store.open_store(first_runs['metadata_path'])
  model = [artifact for artifact in store.get_artifacts_by_type('Model')][0]
  assert metadata_store.artifact_property(model, 'malignant_threshold') == pytest.approx(
      threshold, abs=1e-6)
  assert metadata_store.artifact_property(model, 'operating_point')['calibration_examples'] > 0


@pytest.mark.quick
def test_unchanged_rerun_takes_every_component_from_the_cache(first_runs):
  second = states(first_runs['runs'][1])
  assert {component: second[component] for component in COMPONENTS} == {
      component: 'cached' for component in COMPONENTS}
  assert 'Trainer cached' in first_runs['stdout'][1]


@pytest.mark.quick
def test_a_run_leaves_nothing_in_the_temporary_folder(first_runs):
  # TFX packs a copy of itself there for every Beam step unless the runner's arguments say the
  # workers have it (pipeline/configs.direct_runner_args): 195 MB a run before.
  assert not list(first_runs['temp_dir'].iterdir())


def test_impossible_gate_blocks_the_push(pipeline_runs):
  third = states(pipeline_runs['runs'][2])
  assert third['Trainer'] == 'cached'
  assert third['Evaluator'] == 'complete'  # New thresholds: evaluated again.
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  run_id = metadata_store.run_contexts(store)[2].name
  result = summary.summarize_run(pipeline_runs['metadata_path'], run_id=run_id)
  assert result.blessed is False
  assert result.pushed_destination is None
  assert pipeline_runs['serving_after_third'] == pipeline_runs['serving_after_first']
  assert 'blessed: no' in pipeline_runs['stdout'][2]
  # The accuracy gate alone: the others pass, and there is no other blessed model to compare.
  assert [check.check for check in result.blessing_checks if not check.passed] == [
      'sparse_categorical_accuracy ≥ 1.01']
  evaluation = [artifact for component, type_name, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][2]) if type_name == 'ModelEvaluation'][0]
  assert blessing.failed_metrics(evaluation.uri) == ['sparse_categorical_accuracy']


def test_new_model_is_compared_with_the_latest_blessed_one(pipeline_runs):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  runs = metadata_store.run_contexts(store)
  first = summary.summarize_run(pipeline_runs['metadata_path'], run_id=runs[0].name)
  fourth = summary.summarize_run(pipeline_runs['metadata_path'], run_id=runs[3].name)
  fourth_states = states(pipeline_runs['runs'][3])
  assert fourth_states['Trainer'] == 'complete'
  evaluator = [run for run in pipeline_runs['runs'][3] if run.node_id == 'Evaluator'][0]
  inputs = {event.path.steps[0].key: event.artifact_id
            for event in store.get_events_by_execution_ids([evaluator.execution_id])
            if event.type == event.INPUT}
  first_trainer = [run for run in pipeline_runs['runs'][0] if run.node_id == 'Trainer'][0]
  model_type_id = store.get_artifact_type('Model').id
  first_model_id = [artifact.id for artifact in metadata_store.outputs_of(store, first_trainer.execution_id)
                    if artifact.type_id == model_type_id][0]
  assert inputs['baseline_model'] == first_model_id
  assert inputs['model'] != first_model_id
  difference = fourth.metrics['sparse_categorical_accuracy_diff']
  assert abs(fourth.metrics['sparse_categorical_accuracy'] - difference
             - first.metrics['sparse_categorical_accuracy']) < 1e-6
  # The candidate's confusion matrix, not the baseline's nor none, when a baseline is present.
  assert sum(map(sum, fourth.confusion_matrix)) == 9
  correct = sum(fourth.confusion_matrix[index][index] for index in range(3))
  assert abs(correct / 9 - fourth.metrics['sparse_categorical_accuracy']) < 1e-6
  assert fourth.blessed is True
  serving_dir = pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound'
  versions = sorted(os.listdir(serving_dir))
  assert len(versions) == 2 and versions[0] == pipeline_runs['serving_after_first'][0]
  assert fourth.pushed_destination == str(serving_dir / versions[1])
  # Paired on the same nine eval images: the difference of the accuracies, with its interval.
  assert fourth.metrics['accuracy_versus_baseline_diff'] == pytest.approx(difference)
  assert (fourth.metrics['accuracy_versus_baseline_lower_diff'] <= difference
          <= fourth.metrics['accuracy_versus_baseline_upper_diff'])
  assert ("passed  accuracy against the baseline model's on the same eval images: lower end of "
          'the 95 % interval of the difference ≥ −1') in pipeline_runs['stdout'][3]


def test_training_curves_are_written(pipeline_runs):
  runs_dir = pipeline_runs['output_dir'] / 'pipeline' / 'Trainer' / 'model_run'
  curves = [os.path.join(folder, name) for folder, _, names in os.walk(runs_dir)
            for name in names if name == 'training_curves.png']
  assert len(curves) == 2  # The first and the fourth run trained; the others were cached.
  with open(curves[0], 'rb') as handle:
    assert handle.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_model_missing_the_calibration_gate_is_not_blessed(pipeline_runs):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  run_id = metadata_store.run_contexts(store)[4].name
  fifth = summary.summarize_run(pipeline_runs['metadata_path'], run_id=run_id)
  assert states(pipeline_runs['runs'][4])['Evaluator'] == 'complete'
  assert fifth.blessed is False and fifth.pushed_destination is None
  assert fifth.metrics['expected_calibration_error'] > 0
  evaluation = [artifact for component, type_name, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][4]) if type_name == 'ModelEvaluation'][0]
  assert blessing.failed_metrics(evaluation.uri) == ['expected_calibration_error']
  assert [check.check for check in fifth.blessing_checks if not check.passed] == [
      'expected_calibration_error ≤ 0']
  assert pipeline_runs['serving_after_fifth'] == sorted(
      os.listdir(pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound'))
  assert len(pipeline_runs['serving_after_fifth']) == 2  # the versions of runs 1 and 4
