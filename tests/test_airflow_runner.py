"""airflow_runner.py: the pipeline as an Apache Airflow DAG. Airflow's DagBag imports the file as
a scheduler would, and one run in Airflow's single-process test mode (`DAG.test()`) executes
every component once and pushes a model, as ML Metadata records."""

import os
import subprocess

from data import synthetic
from runs import metadata_store

PIPELINE_TASKS = {'ImageExampleGen', 'DataQualityCheck', 'StatisticsGen',
                  'pinned_schema_resolver', 'CuratedSchemaGen', 'ExampleValidator',
                  'previous_span_statistics_resolver', 'DriftCheck', 'DataValidationGate',
                  'training_spans_resolver', 'Transform', 'Trainer',
                  'latest_blessed_model_resolver', 'Evaluator', 'ServingCheck', 'EvalExplainer',
                  'Pusher', 'ModelCardGenerator'}
# The seed notebook's small CNN and no on-device model: the orchestration is under test here, not
# the network (the default's is in test_pipeline_end_to_end.py).
SMALL_RUN = ('--network', 'seed', '--epochs', '1', '--image-size', '48', '--ensemble-members', '1',
             '--min-accuracy', '0', '--min-malignant-recall', '0', '--max-calibration-error', '1',
             '--tflite-weights', 'none')

# Prints each task and the tasks right after it, as Airflow's scheduler sees them.
_LIST_DAG = """
import sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
if bag.import_errors:
  sys.exit(repr(bag.import_errors))
for dag in bag.dags.values():
  print('SCHEDULE', dag.dag_id, dag.schedule_interval)
  for task in dag.tasks:
    print('TASK', dag.dag_id, task.task_id, ','.join(sorted(task.downstream_task_ids)))
"""


def test_airflow_imports_the_dag_with_one_task_per_component(tmp_path, python, project_root):
  dags = tmp_path / 'dags'
  dags.mkdir()
  os.symlink(os.path.join(project_root, 'airflow_runner.py'), dags / 'breast_ultrasound.py')
  # Importing TFX and TensorFlow takes longer than Airflow's default 30 s on a busy machine; the
  # docs/scaling-out.md says to raise it on a deployment too.
  environment = {**os.environ, 'AIRFLOW_HOME': str(tmp_path / 'airflow'),
                 'AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT': '300',
                 'BREAST_ULTRASOUND_PIPELINE_FLAGS':
                     f'--data-root {tmp_path} --output-dir {tmp_path / "output"} --epochs 3'}
  completed = subprocess.run([python, '-c', _LIST_DAG, str(dags)], cwd=tmp_path, env=environment,
                             capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  rows = [line.split(' ')[1:] for line in completed.stdout.splitlines()
          if line.startswith('TASK ')]
  assert {row[0] for row in rows} == {'breast-ultrasound'}
  assert 'SCHEDULE breast-ultrasound None' in completed.stdout
  downstream = {row[1]: set(filter(None, row[2].split(','))) for row in rows}
  assert set(downstream) == PIPELINE_TASKS
  assert downstream['Transform'] == {'Trainer'}
  assert downstream['Trainer'] == {'latest_blessed_model_resolver', 'Evaluator', 'ServingCheck',
                                   'EvalExplainer', 'Pusher', 'ModelCardGenerator'}
  assert downstream['Evaluator'] == {'Pusher', 'ModelCardGenerator'}
  assert downstream['ServingCheck'] == {'Pusher', 'ModelCardGenerator'}
  assert downstream['Pusher'] == {'ModelCardGenerator'}
  assert downstream['DriftCheck'] == {'DataValidationGate'}
  assert downstream['training_spans_resolver'] == {'Transform', 'Evaluator'}

  # On a schedule, each run taking the newest span.
  environment['BREAST_ULTRASOUND_SCHEDULE'] = '@daily'
  daily = subprocess.run([python, '-c', _LIST_DAG, str(dags)], cwd=tmp_path, env=environment,
                         capture_output=True, text=True, timeout=300, check=False)
  assert 'SCHEDULE breast-ultrasound @daily' in daily.stdout, daily.stderr[-3000:]
  environment['BREAST_ULTRASOUND_SCHEDULE'] = 'every day'
  bad = subprocess.run([python, '-c', _LIST_DAG, str(dags)], cwd=tmp_path, env=environment,
                       capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode != 0
  assert 'BREAST_ULTRASOUND_SCHEDULE: ' in bad.stderr and 'every day' in bad.stderr
  assert 'is neither a cron expression nor an Airflow preset' in bad.stderr
  del environment['BREAST_ULTRASOUND_SCHEDULE']

  environment['BREAST_ULTRASOUND_PIPELINE_FLAGS'] = '--epochs 0'
  bad = subprocess.run([python, '-c', _LIST_DAG, str(dags)], cwd=tmp_path, env=environment,
                       capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode != 0 and 'BREAST_ULTRASOUND_PIPELINE_FLAGS: bad pipeline flags' in (
      bad.stderr)


def test_a_dag_test_run_executes_each_component_once_and_pushes(tmp_path, python, project_root):
  data_root = tmp_path / 'images'
  synthetic.generate_dataset(str(data_root), images_per_class=10, image_size=48, seed=4)
  output_dir = tmp_path / 'output'
  completed = subprocess.run(
      [python, 'airflow_runner.py', '--data-root', str(data_root), '--output-dir',
       str(output_dir), *SMALL_RUN], cwd=project_root, capture_output=True, text=True,
      timeout=900, check=False)
  assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
  assert 'blessed: yes' in completed.stdout
  # Airflow's database went under the output directory, not into the user's home.
  assert (output_dir / 'airflow' / 'airflow.db').is_file()

  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  [run] = metadata_store.run_contexts(store)
  assert run.type == metadata_store.LAUNCHER_RUN_CONTEXT
  components = metadata_store.component_runs(store, run.id)
  assert sorted(component.node_id for component in components) == sorted(PIPELINE_TASKS)
  assert all(component.state in ('complete', 'cached') for component in components)
  [pusher] = [component for component in components if component.node_id == 'Pusher']
  [pushed] = metadata_store.outputs_of(store, pusher.execution_id)
  assert metadata_store.artifact_property(pushed, 'pushed') == 1
  [version] = os.listdir(output_dir / 'serving' / 'breast_ultrasound')
  assert metadata_store.artifact_property(pushed, 'pushed_version') == version
  assert (output_dir / 'report' / 'index.html').is_file()
