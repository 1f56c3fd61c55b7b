"""The Evaluator's gates, each seen failing on its own and the comparison with the baseline seen
passing, on one output directory of a separable set (the `gate_runs` fixture):

A. The seed network, blessed and pushed: the first model, no baseline to compare with.
B. The same recipe from another seed: a model as good as A but not identical to it, compared
   with A on the same eval images and blessed.
C. B's model with `--min-malignant-recall 1.01`, which no model meets: refused on the malignant
   sensitivity alone (its accuracy, calibration error and comparison with A all pass).

The other gates failing alone are in test_pipeline_end_to_end.py (accuracy: run 3; calibration
error: run 5) and test_faults.py (the comparison with the baseline: a one-epoch model).
"""

import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from pipeline import eval_config
from runs import blessing, metadata_store, summary

SEED_RECIPE = ('--model', 'seed', '--image-size', '48', '--min-malignant-recall', '0',
               '--max-calibration-error', '1', '--tflite-weights', 'none')
VERSUS_BASELINE = eval_config.ACCURACY_VERSUS_BASELINE


@pytest.fixture(scope='module')
def gate_runs(tmp_path_factory, python, project_root, separable_data_root):
  output_dir = tmp_path_factory.mktemp('gates') / 'output'
  stdouts = []
  for flags in ((), ('--seed', '43'), ('--seed', '43', '--min-malignant-recall', '1.01')):
    # The last --min-malignant-recall wins over SEED_RECIPE's.
    done = subprocess.run(
        [python, 'local_runner.py', '--data-root', str(separable_data_root), '--output-dir',
         str(output_dir), *SEED_RECIPE, *flags], cwd=project_root, capture_output=True,
        text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stdouts.append(done.stdout)
  metadata_path = str(output_dir / 'metadata.sqlite')
  store = metadata_store.open_store(metadata_path)
  contexts = metadata_store.run_contexts(store)
  return {'output_dir': output_dir, 'stdout': stdouts, 'store': store,
          'summaries': [summary.summarize_run(metadata_path, run_id=context.name)
                        for context in contexts],
          'components': [metadata_store.component_runs(store, context.id)
                         for context in contexts]}


def _model_of(gate_runs, run_index):
  outputs = {type_name: artifact for _, type_name, artifact in metadata_store.run_outputs(
      gate_runs['store'], gate_runs['components'][run_index])}
  return outputs['Model']


def test_the_first_model_is_blessed_with_nothing_to_compare_with(gate_runs):
  first = gate_runs['summaries'][0]
  assert first.blessed is True and first.pushed_destination
  versus = [check for check in first.blessing_checks if check.evidence == 'paired difference']
  assert len(versus) == 1 and versus[0].passed and versus[0].value is None
  assert versus[0].note == 'no baseline yet: the first blessed model'


def test_a_retrain_from_another_seed_is_compared_on_the_same_images_and_blessed(gate_runs):
  second = gate_runs['summaries'][1]
  evaluator = [run for run in gate_runs['components'][1] if run.node_id == 'Evaluator'][0]
  inputs = {event.path.steps[0].key: event.artifact_id
            for event in gate_runs['store'].get_events_by_execution_ids([evaluator.execution_id])
            if event.type == event.INPUT}
  first_model, second_model = _model_of(gate_runs, 0), _model_of(gate_runs, 1)
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
  # As good: the paired difference and its interval, and the gate read its lower end.
  metrics = second.metrics
  assert metrics[f'{VERSUS_BASELINE}_diff'] == pytest.approx(
      metrics['sparse_categorical_accuracy_diff'])
  assert (metrics[f'{VERSUS_BASELINE}_lower_diff'] <= metrics[f'{VERSUS_BASELINE}_diff']
          <= metrics[f'{VERSUS_BASELINE}_upper_diff'])
  versus = [check for check in second.blessing_checks if check.evidence == 'paired difference']
  assert versus[0].passed and versus[0].value == metrics[f'{VERSUS_BASELINE}_lower_diff']
  assert versus[0].value >= -0.10  # the default margin
  assert all(check.passed for check in second.blessing_checks)
  assert second.blessed is True and second.pushed_destination
  assert ("passed  accuracy against the baseline model's on the same eval images: lower end of "
          'the 95 % interval of the difference ≥ −0.1') in gate_runs['stdout'][1]


def test_the_malignant_sensitivity_gate_alone_refuses_a_model(gate_runs):
  third = gate_runs['summaries'][2]
  states = {run.node_id: run.state for run in gate_runs['components'][2]}
  assert states['Trainer'] == 'cached' and states['Evaluator'] == 'complete'
  evaluation = [artifact for _, type_name, artifact in metadata_store.run_outputs(
      gate_runs['store'], gate_runs['components'][2]) if type_name == 'ModelEvaluation'][0]
  assert blessing.failed_metrics(evaluation.uri) == [eval_config.MALIGNANT_SENSITIVITY]
  failed = [check.check for check in third.blessing_checks if not check.passed]
  assert failed == ['malignant_sensitivity ≥ 1.01']
  assert third.blessed is False and third.pushed_destination is None
  assert 'FAILED  malignant_sensitivity ≥ 1.01' in gate_runs['stdout'][2]
  serving_dir = gate_runs['output_dir'] / 'serving' / 'breast_ultrasound'
  assert len([name for name in os.listdir(serving_dir) if name.isdigit()]) == 2  # A's and B's
