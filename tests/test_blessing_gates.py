"""The Evaluator's gates with every gate live: each seen failing on its own while the others hold
at realistic thresholds, the calibration gate seen passing at the default 0.10, the paired
comparison with the baseline seen with an interval of non-zero width, and `--gate-on-bounds`
run end to end. One output directory of a nearly separable set (`nearly_separable_data_root`:
stripes, and some cross-hatched images whose label the pixels cannot tell), the seed network at
48 px for 30 epochs: models right on the stripes and right by chance on the rest, so two seeds
disagree on a few eval images.

A. Seed 42, the default gates (accuracy ≥ 0.6, sensitivity at the point ≥ 0.6, calibration
   error ≤ 0.10, non-inferiority margin 0.10): blessed, the calibration gate passing at 0.10.
B. Seed 43, the default gates: compared with A on the same eval images, refused by the
   non-inferiority gate alone (its lower bound is below −0.10; the other three pass).
Then B again (the Trainer cached), each run with the margin widened to pass and one other gate
set just past B's own value, the rest at the defaults:
C. accuracy, D. sensitivity at the operating point, E. calibration error, each refused alone;
F. `--gate-on-bounds` with a calibration gate between B's estimate and the upper end of its
   interval: refused on the bound, where the estimate would pass.
"""

import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from evaluation import blessing, classification_statistics, metric_names
from runs import metadata_store, summary

SEED_RECIPE = ('--network', 'seed', '--image-size', '48', '--epochs', '30',
               '--tflite-weights', 'none')
VERSUS_BASELINE = metric_names.ACCURACY_VERSUS_BASELINE
ACCURACY = metric_names.ACCURACY
SENSITIVITY = metric_names.MALIGNANT_SENSITIVITY
CALIBRATION = metric_names.EXPECTED_CALIBRATION_ERROR


def _run(python, project_root, data_root, output_dir, *flags):
  done = subprocess.run(
      [python, 'local_runner.py', '--data-root', str(data_root), '--output-dir', str(output_dir),
       *SEED_RECIPE, *flags], cwd=project_root, capture_output=True, text=True, timeout=900,
      check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return done.stdout


@pytest.fixture(scope='module')
def gate_runs(tmp_path_factory, python, project_root, nearly_separable_data_root):
  output_dir = tmp_path_factory.mktemp('gates') / 'output'
  metadata_path = str(output_dir / 'metadata.sqlite')
  run = lambda *flags: _run(python, project_root, nearly_separable_data_root, output_dir, *flags)
  stdouts = [run(), run('--seed', '43')]
  measured = summary.summarize_run(metadata_path).metrics  # B's
  assert measured[ACCURACY] < 1 and measured[SENSITIVITY] < 1 and measured[CALIBRATION] > 0
  lower = measured[f'{VERSUS_BASELINE}_lower_diff']
  passing_margin = f'{-lower + 0.05:.4f}'
  calibration_upper = measured[f'{CALIBRATION}{metric_names.UPPER}']
  thresholds = {
      'accuracy': ('--min-accuracy', f'{measured[ACCURACY] + 0.01:.4f}'),
      'sensitivity': ('--min-malignant-recall', f'{measured[SENSITIVITY] + 0.01:.4f}'),
      'calibration': ('--max-calibration-error', f'{measured[CALIBRATION] / 2:.4f}'),
      'bounds': ('--max-calibration-error',
                 f'{(measured[CALIBRATION] + calibration_upper) / 2:.4f}', '--gate-on-bounds'),
  }
  for flags in thresholds.values():
    stdouts.append(run('--seed', '43', '--non-inferiority-margin', passing_margin, *flags))
  store = metadata_store.open_store(metadata_path)
  contexts = metadata_store.run_contexts(store)
  return {'output_dir': output_dir, 'stdout': stdouts, 'store': store, 'measured': measured,
          'thresholds': thresholds, 'margin': float(passing_margin),
          'summaries': [summary.summarize_run(metadata_path, run_id=context.name)
                        for context in contexts],
          'components': [metadata_store.component_runs(store, context.id)
                         for context in contexts]}


def _outputs_of(gate_runs, run_index):
  return {type_name: artifact for _, type_name, artifact in metadata_store.run_outputs(
      gate_runs['store'], gate_runs['components'][run_index])}


def _failed(gate_runs, run_index):
  """TFMA's own verdict: the metrics whose thresholds it found not met."""
  return blessing.failed_metrics(_outputs_of(gate_runs, run_index)['ModelEvaluation'].uri)


def test_the_first_model_passes_every_gate_at_the_defaults(gate_runs):
  first = gate_runs['summaries'][0]
  assert first.blessed is True and first.pushed_destination
  assert _failed(gate_runs, 0) == []
  checks = {check.check: check for check in first.blessing_checks}
  assert set(checks) == {'sparse_categorical_accuracy ≥ 0.6', 'malignant_sensitivity ≥ 0.6',
                         'expected_calibration_error ≤ 0.1',
                         "accuracy against the baseline model's on the same eval images"}
  # The calibration gate, live at 0.10, passed on a model whose error is above 0.
  calibration_check = checks['expected_calibration_error ≤ 0.1']
  assert calibration_check.passed and 0 < calibration_check.value <= 0.10
  versus = checks["accuracy against the baseline model's on the same eval images"]
  assert versus.passed and versus.value is None
  assert versus.note == 'no baseline yet: the first blessed model'


def test_the_non_inferiority_gate_alone_refuses_a_retrain_from_another_seed(gate_runs):
  second = gate_runs['summaries'][1]
  evaluator = [run for run in gate_runs['components'][1] if run.node_id == 'Evaluator'][0]
  inputs = {event.path.steps[0].key: event.artifact_id
            for event in gate_runs['store'].get_events_by_execution_ids([evaluator.execution_id])
            if event.type == event.INPUT}
  first_model, second_model = _outputs_of(gate_runs, 0)['Model'], _outputs_of(gate_runs, 1)['Model']
  assert inputs['baseline_model'] == first_model.id and inputs['model'] == second_model.id
  # Not the same network: the other seed gives other weights.
  first_variables = tf.train.load_checkpoint(
      os.path.join(first_model.uri, 'Format-Serving', 'variables', 'variables'))
  second_variables = tf.train.load_checkpoint(
      os.path.join(second_model.uri, 'Format-Serving', 'variables', 'variables'))
  kernels = [name for name, shape in first_variables.get_variable_to_shape_map().items()
             if len(shape) == 4]  # the convolutions'
  assert kernels and not any(np.allclose(first_variables.get_tensor(name),
                                         second_variables.get_tensor(name)) for name in kernels)
  metrics = second.metrics
  assert _failed(gate_runs, 1) == [f'{VERSUS_BASELINE}_lower_diff']
  failed = [check for check in second.blessing_checks if not check.passed]
  assert [check.evidence for check in failed] == ['paired difference']
  assert failed[0].value == metrics[f'{VERSUS_BASELINE}_lower_diff'] < -0.10
  assert second.blessed is False and second.pushed_destination is None
  assert ("FAILED  accuracy against the baseline model's on the same eval images: lower end of "
          'the 95 % interval of the difference ≥ −0.1') in gate_runs['stdout'][1]


def test_the_paired_interval_has_width_and_is_narrower_than_the_unpaired_one(gate_runs):
  """The Evaluator's interval of (B's accuracy − A's) resamples each eval image's two
  predictions together: recomputed from the two SavedModels' predictions of the eval images, it
  is the same interval, of non-zero width (the models disagree on some images), and narrower than
  the interval of the two accuracies resampled apart."""
  metrics = gate_runs['summaries'][1].metrics
  lower, upper = (metrics[f'{VERSUS_BASELINE}_lower_diff'],
                  metrics[f'{VERSUS_BASELINE}_upper_diff'])
  assert upper - lower > 0
  [examples] = [artifact for run, _, artifact in metadata_store.run_outputs(
      gate_runs['store'], gate_runs['components'][0]) if run.node_id == 'ImageExampleGen']
  eval_files = tf.io.gfile.glob(os.path.join(examples.uri, 'Split-eval', '*'))
  serialized = [record.numpy() for record in tf.data.TFRecordDataset(eval_files,
                                                                       compression_type='GZIP')]
  labels = np.array([tf.train.Example.FromString(record).features.feature['label']
                     .int64_list.value[0] for record in serialized])
  groups = [tf.train.Example.FromString(record).features.feature['duplicate_group']
            .bytes_list.value[0].decode() for record in serialized]
  probabilities = [
      tf.saved_model.load(os.path.join(_outputs_of(gate_runs, index)['Model'].uri,
                                       'Format-Serving')).signatures['from_examples'](
          examples=tf.constant(serialized))['probabilities'].numpy() for index in (1, 0)]
  both = np.concatenate(probabilities, axis=1)
  correct = [np.mean(p.argmax(axis=1) == labels) for p in probabilities]
  assert metrics[f'{VERSUS_BASELINE}_diff'] == pytest.approx(correct[0] - correct[1])
  [(paired_lower, paired_upper)] = classification_statistics.bootstrap_intervals(
      classification_statistics.paired_statistics, labels, both, groups).values()
  assert (paired_lower, paired_upper) == pytest.approx((lower, upper))
  rng = np.random.default_rng(0)
  differences = []
  for _ in range(1000):
    candidate, baseline = (rng.integers(0, len(labels), len(labels)) for _ in range(2))
    differences.append(np.mean(probabilities[0][candidate].argmax(axis=1) == labels[candidate])
                       - np.mean(probabilities[1][baseline].argmax(axis=1) == labels[baseline]))
  unpaired_lower, unpaired_upper = np.percentile(differences, [2.5, 97.5])
  assert upper - lower < unpaired_upper - unpaired_lower


@pytest.mark.parametrize('run_index, name, metric', [
    (2, 'accuracy', ACCURACY), (3, 'sensitivity', SENSITIVITY), (4, 'calibration', CALIBRATION)])
def test_each_gate_alone_refuses_the_model_while_the_others_hold(gate_runs, run_index, name,
                                                                 metric):
  states = {run.node_id: run.state for run in gate_runs['components'][run_index]}
  assert states['Trainer'] == 'cached' and states['Evaluator'] == 'complete'
  assert _failed(gate_runs, run_index) == [metric]
  result = gate_runs['summaries'][run_index]
  checks = {check.check: check for check in result.blessing_checks}
  threshold = gate_runs['thresholds'][name][1]
  operator = '≤' if metric == CALIBRATION else '≥'
  failing = f'{metric} {operator} {float(threshold):g}'
  assert [check for check, found in checks.items() if not found.passed] == [failing]
  # The other three live: the defaults, and the comparison with A at a margin B passes.
  defaults = {ACCURACY: f'{ACCURACY} ≥ 0.6', SENSITIVITY: f'{SENSITIVITY} ≥ 0.6',
              CALIBRATION: f'{CALIBRATION} ≤ 0.1'}
  holding = [check for gated, check in defaults.items() if gated != metric]
  assert all(checks[check].passed for check in holding)
  [versus] = [check for check in checks.values() if check.evidence == 'paired difference']
  assert versus.passed and versus.value == gate_runs['measured'][f'{VERSUS_BASELINE}_lower_diff']
  assert versus.check.endswith(f'≥ −{gate_runs["margin"]:g}')
  assert result.blessed is False and result.pushed_destination is None
  assert f'FAILED  {failing}' in gate_runs['stdout'][run_index]


def test_gate_on_bounds_refuses_on_the_interval_where_the_estimate_passes(gate_runs):
  result = gate_runs['summaries'][5]
  threshold = float(gate_runs['thresholds']['bounds'][1])
  measured = gate_runs['measured']
  assert measured[CALIBRATION] < threshold < measured[f'{CALIBRATION}{metric_names.UPPER}']
  assert _failed(gate_runs, 5) == [f'{CALIBRATION}{metric_names.UPPER}']
  failed = [check for check in result.blessing_checks if not check.passed]
  assert len(failed) == 1 and failed[0].value == pytest.approx(
      measured[f'{CALIBRATION}{metric_names.UPPER}'])
  assert failed[0].check == (f'{CALIBRATION} (upper end of its 95 % interval) ≤ '
                             f'{threshold:g}')
  # The accuracy and sensitivity gates read their lower ends, and hold.
  lower_ends = {check.check for check in result.blessing_checks if check.passed
                and check.evidence != 'paired difference'}
  assert lower_ends == {f'{ACCURACY} (lower end of its 95 % interval) ≥ 0.6',
                        f'{SENSITIVITY} (lower end of its 95 % interval) ≥ 0.6'}
  assert result.blessed is False
  serving_dir = gate_runs['output_dir'] / 'serving' / 'breast_ultrasound'
  assert len([name for name in os.listdir(serving_dir) if name.isdigit()]) == 1  # A's alone
