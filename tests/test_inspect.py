"""`python -m runs.inspect` against the real pipeline runs of the `pipeline_runs` fixture:
every command, as JSON (checked against ML Metadata and the serving directory) and as a table."""

import json
import os
import subprocess

import pytest

from models import networks
from runs import summary

PIPELINE_COMPONENTS = {'ImageExampleGen', 'DataQualityCheck', 'StatisticsGen',
                       'pinned_schema_resolver', 'CuratedSchemaGen', 'ExampleValidator',
                       'previous_span_statistics_resolver', 'DriftCheck', 'DataValidationGate',
                       'training_spans_resolver', 'Transform', 'Trainer',
                       'latest_blessed_model_resolver', 'Evaluator', 'ServingCheck',
                       'EvalExplainer', 'Pusher', 'ModelCardGenerator'}


def inspect(python, project_root, pipeline_runs, *arguments, as_json=True):
  completed = subprocess.run(
      [python, '-m', 'runs.inspect', '--output-dir', str(pipeline_runs['output_dir']),
       *(['--json'] if as_json else []), *arguments],
      cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
  if completed.returncode != 0:
    return completed
  return json.loads(completed.stdout) if as_json else completed.stdout


def test_runs_lists_each_run_with_its_components(python, project_root, pipeline_runs):
  runs = inspect(python, project_root, pipeline_runs, 'runs')
  assert len(runs) == 6
  first, second = runs[0]['components'], runs[1]['components']
  assert {component['component'] for component in first} == PIPELINE_COMPONENTS
  assert all(component['status'] == 'complete' and not component['cached']
             for component in first)
  trainer = [component for component in first if component['component'] == 'Trainer'][0]
  assert trainer['seconds'] > 1 and trainer['started'].startswith(runs[0]['started'][:10])
  cached = {component['component']: component['cached'] for component in second}
  assert cached['Trainer'] and cached['ImageExampleGen'] and cached['Pusher']
  assert [component['status'] for component in second
          if component['component'] == 'Trainer'] == ['cached']
  table = inspect(python, project_root, pipeline_runs, 'runs', as_json=False)
  assert 'component' in table and 'cached' in table and f'run {runs[4]["run"]}' in table


def test_artifacts_names_type_producer_and_run(python, project_root, pipeline_runs):
  artifacts = inspect(python, project_root, pipeline_runs, 'artifacts')
  by_type = {}
  for artifact in artifacts:
    by_type.setdefault(artifact['type'], []).append(artifact)
  examples = [artifact for artifact in by_type['Examples']
              if artifact['producer'] == 'ImageExampleGen']
  assert len(examples) == 1 and os.path.isdir(examples[0]['uri'])
  models = inspect(python, project_root, pipeline_runs, 'artifacts', '--type', 'Model')
  assert [model['producer'] for model in models] == ['Trainer', 'Trainer']  # runs 1 and 4
  runs = inspect(python, project_root, pipeline_runs, 'runs')
  assert [model['run'] for model in models] == [runs[0]['run'], runs[3]['run']]
  assert models == by_type['Model']
  unknown = inspect(python, project_root, pipeline_runs, 'artifacts', '--type', 'Nope')
  assert unknown.returncode == 2 and "no artifact type 'Nope'" in unknown.stderr


def _walk(node, found):
  found.append(node)
  for parent in node.get('inputs', []):
    _walk(parent, found)
  return found


def test_lineage_leads_from_the_pushed_model_back_to_the_examples(python, project_root,
                                                                   pipeline_runs):
  tree = inspect(python, project_root, pipeline_runs, 'lineage')
  assert tree['type'] == 'PushedModel' and tree['written_by']['component'] == 'Pusher'
  nodes = _walk(tree, [])
  types = {node['type'] for node in nodes}
  assert {'Model', 'ModelBlessing', 'Examples', 'Schema', 'TransformGraph',
          'ExampleStatistics'} <= types
  writers = {node['written_by']['component'] for node in nodes if 'written_by' in node}
  assert {'Pusher', 'Evaluator', 'Trainer', 'Transform', 'CuratedSchemaGen', 'StatisticsGen',
          'ImageExampleGen'} <= writers
  also = {other['type'] for node in nodes for other in node.get('also_wrote', [])}
  assert 'ModelEvaluation' in also
  # The pushed model is the newest pushed version in the serving directory.
  newest = sorted(os.listdir(pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound'))[-1]
  models = inspect(python, project_root, pipeline_runs, 'models')
  model_ids = [node['id'] for node in tree['inputs'] if node['key'] == 'model']
  assert [model['pushed_version'] for model in models if model['id'] in model_ids] == [newest]

  examples = [node for node in nodes if node['type'] == 'Examples'
              and node.get('written_by', {}).get('component') == 'ImageExampleGen'][0]
  from_examples = inspect(python, project_root, pipeline_runs, 'lineage', str(examples['id']))
  assert from_examples['inputs'] == [] and from_examples['id'] == examples['id']
  text = inspect(python, project_root, pipeline_runs, 'lineage', as_json=False)
  assert text.startswith('PushedModel #') and 'written by Trainer' in text
  missing = inspect(python, project_root, pipeline_runs, 'lineage', '999999')
  assert missing.returncode == 2 and 'no artifact with id 999999' in missing.stderr


def test_models_lists_metrics_blessing_and_pushed_version(python, project_root, pipeline_runs):
  models = inspect(python, project_root, pipeline_runs, 'models')
  assert len(models) == 2
  first, fourth = models
  first_run = summary.summarize_run(pipeline_runs['metadata_path'],
                                    run_id=first['run'])
  assert first['network'] == networks.DEFAULT_NETWORK and first['epochs'] == 2
  assert fourth['epochs'] == 1
  # Run 4 tuned (test_tuning.py): the hyperparameters it trained with, none for run 1.
  assert first['hyperparameters'] is None and 'learning_rate' in fourth['hyperparameters']
  # Run 3's impossible gate refused it, but run 1 blessed it: blessed once is blessed.
  assert first['blessed'] is True
  assert first['pushed_version'] == pipeline_runs['serving_after_first'][0]
  assert first['metrics']['sparse_categorical_accuracy'] == pytest.approx(
      first_run.metrics['sparse_categorical_accuracy'])
  serving = sorted(os.listdir(pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound'))
  assert fourth['blessed'] is True and fourth['pushed_version'] == serving[1]
  fourth_run = summary.summarize_run(pipeline_runs['metadata_path'], run_id=fourth['run'])
  assert fourth['metrics']['sparse_categorical_accuracy'] == pytest.approx(
      fourth_run.metrics['sparse_categorical_accuracy'])
  for name in ('sparse_categorical_accuracy', 'malignant_sensitivity', 'malignant_specificity'):
    lower, upper = (fourth['metrics'][f'{name}_lower'], fourth['metrics'][f'{name}_upper'])
    assert lower <= fourth['metrics'][name] <= upper
  assert fourth['malignant_threshold'] == pytest.approx(  # the inspector rounds to 5 places
      fourth_run.operating_point['malignant_threshold'], abs=5e-6)
  # Which evidence decided: run 1's model was last evaluated in run 6, against run 4's model
  # on the same eval images, and every gate passed.
  assert all(check['passed'] for check in first['blessing_checks'])
  versus = [check for check in first['blessing_checks']
            if check['evidence'] == 'paired difference']
  assert versus and versus[0]['value'] is not None and 'difference' in versus[0]['note']
  table = inspect(python, project_root, pipeline_runs, 'models', as_json=False)
  assert 'malignant threshold' in table.splitlines()[0] and 'sensitivity' in table.splitlines()[0]
  assert 'every gate passed (vs baseline: lower end ' in table
  assert pipeline_runs['serving_after_first'][0] in table


def test_missing_store_is_one_line(python, project_root, tmp_path):
  completed = subprocess.run([python, '-m', 'runs.inspect', '--output-dir', str(tmp_path),
                              'runs'], cwd=project_root, capture_output=True, text=True,
                             timeout=120, check=False)
  assert completed.returncode == 2
  assert completed.stderr.count('\n') == 1 and 'no ML Metadata' in completed.stderr


def test_runs_artifacts_and_lineage_load_neither_tensorflow_nor_beam(python, project_root,
                                                                    pipeline_runs):
  """They only read ML Metadata: TensorFlow and Beam would more than double the inspector's
  start-up (about 5 s against 2 on two cores). `models` reads TFMA's evaluations, and loads it."""
  probe = ('import sys\n'
           'from runs import inspect\n'
           'for command in ("runs", "artifacts", "lineage"):\n'
           '  assert inspect.main(["--output-dir", sys.argv[1], command]) == 0\n'
           'print(sorted({"tensorflow", "apache_beam", "tfx"} & set(sys.modules)))\n')
  completed = subprocess.run([python, '-c', probe, str(pipeline_runs['output_dir'])],
                             cwd=project_root, capture_output=True, text=True, timeout=120,
                             check=False)
  assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
  assert completed.stdout.strip().splitlines()[-1] == '[]'
