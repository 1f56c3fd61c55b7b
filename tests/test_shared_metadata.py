"""ML Metadata on a database server, shared by two pipelines running at once, and the Airflow DAG
under a real `airflow scheduler` with the LocalExecutor: each component in its own worker
process, Airflow's own database on PostgreSQL, ML Metadata on MariaDB (MySQL's protocol), both
servers started for these tests in a temporary folder and stopped at the end
(benchmarks/database_servers.py)."""

import json
import os
import shlex
import subprocess
import time

import conftest
import pytest

from benchmarks import airflow_scheduler, database_servers
from data import synthetic
from orchestration import metadata_connection
from pipeline import configs
from runs import metadata_store

AIRFLOW_PIPELINE = configs.PIPELINE_NAME
SECOND_PIPELINE = 'second-site'
SMALL_RUN = airflow_scheduler.SMALL_RUN  # the orchestration is under test, not the network
PIPELINE_TASKS = 18  # tests/test_airflow_runner.py's PIPELINE_TASKS
RESOLVERS = {'pinned_schema_resolver', 'previous_span_statistics_resolver',
             'training_spans_resolver', 'latest_blessed_model_resolver'}


@pytest.fixture(scope='module')
def servers(tmp_path_factory):
  missing = database_servers.missing_servers()
  if missing:
    conftest.require_service(f'the database servers ({", ".join(missing)})',
                             f'.ci/run installs them, or apt-get install {" ".join(missing)}')
  workdir = str(tmp_path_factory.mktemp('servers'))
  with database_servers.mariadb_server(workdir) as metadata_server, \
      database_servers.postgresql_server() as airflow_database:
    yield {'workdir': workdir, 'metadata': metadata_server, 'airflow_database': airflow_database}


def _store_flags(servers) -> list:
  return ['--metadata-connection', servers['metadata'].url('shared'),
          '--metadata-password-file', servers['metadata'].password_file]


@pytest.fixture(scope='module')
def shared_runs(servers, tmp_path_factory, python, project_root):
  """The DAG triggered under the scheduler (two task processes at a time) while local_runner.py
  runs a second pipeline into the same ML Metadata database; then the DAG triggered again."""
  workdir = tmp_path_factory.mktemp('shared')
  data_root = workdir / 'images'
  synthetic.generate_dataset(str(data_root), images_per_class=10, image_size=48, seed=4)
  airflow_output, local_output = workdir / 'airflow-output', workdir / 'local-output'
  dag_flags = ['--data-root', str(data_root), '--output-dir', str(airflow_output), *SMALL_RUN,
               *_store_flags(servers)]
  environment = database_servers.airflow_environment(
      str(workdir / 'airflow'), servers['airflow_database'],
      database_servers.dags_folder_with_the_dag(str(workdir / 'dags'), project_root),
      shlex.join(dag_flags), workers=2)
  scheduler = database_servers.AirflowScheduler(environment, str(workdir / 'scheduler.log'))
  local_command = [python, 'local_runner.py', '--data-root', str(data_root), '--output-dir',
                   str(local_output), '--pipeline-name', SECOND_PIPELINE, *SMALL_RUN,
                   '--metadata-connection', servers['metadata'].url('shared')]
  # This one reads the password from the environment, the DAG from the file.
  local_environment = {**os.environ, metadata_connection.PASSWORD_VARIABLE:
                       servers['metadata'].password}
  scheduler.start()
  try:
    scheduler.wait_for_dag(AIRFLOW_PIPELINE, timeout=600)
    scheduler.trigger(AIRFLOW_PIPELINE, 'first')
    local = subprocess.run(local_command, cwd=project_root, env=local_environment,
                           capture_output=True, text=True, timeout=1200, check=False)
    first_seconds = scheduler.wait_for_run(AIRFLOW_PIPELINE, 'first', timeout=1200)
    second_seconds = scheduler.run_and_wait(AIRFLOW_PIPELINE, 'second', timeout=1200)
    task_rows = scheduler.query(
        'SELECT run_id, task_id, state, pid, hostname FROM task_instance WHERE dag_id = %s',
        AIRFLOW_PIPELINE)
    serialized_dag = json.dumps(scheduler.query('SELECT data FROM serialized_dag')[0][0])
  finally:
    scheduler.stop()
  logs = ''.join(open(os.path.join(folder, name), encoding='utf-8', errors='replace').read()
                 for folder, _, names in os.walk(workdir / 'airflow' / 'logs') for name in names)
  return {'local': local, 'airflow_output': airflow_output, 'local_output': local_output,
          'first_seconds': first_seconds, 'second_seconds': second_seconds,
          'tasks': task_rows, 'scheduler_pid': scheduler.process.pid,
          'serialized_dag': serialized_dag, 'task_logs': logs,
          'scheduler_log': (workdir / 'scheduler.log').read_text(errors='replace'),
          'data_root': data_root}


def _store(servers, pipeline_name):
  config = configs.PipelineConfig(metadata_connection=servers['metadata'].url('shared'),
                                  metadata_password_file=servers['metadata'].password_file)
  return metadata_store.open_store(metadata_connection.connection_config(config), pipeline_name)


def test_each_component_ran_once_in_a_worker_process_of_its_own(servers, shared_runs):
  first = [row for row in shared_runs['tasks'] if row[0] == 'first']
  assert len(first) == PIPELINE_TASKS
  assert {row[2] for row in first} == {'success'}
  pids = [row[3] for row in first]
  assert len(set(pids)) == PIPELINE_TASKS and shared_runs['scheduler_pid'] not in pids

  store = _store(servers, AIRFLOW_PIPELINE)
  first_run, _ = metadata_store.run_contexts(store)
  components = metadata_store.component_runs(store, first_run.id)
  assert sorted(component.node_id for component in components) == sorted(
      row[1] for row in first)
  states = {component.node_id: component.state for component in components}
  assert {state for node, state in states.items() if node not in RESOLVERS} == {'complete'}, (
      states)


def test_the_scheduled_run_pushed_a_model(servers, shared_runs):
  store = _store(servers, AIRFLOW_PIPELINE)
  [push] = metadata_store.pushes(store)
  versions = os.listdir(shared_runs['airflow_output'] / 'serving' / 'breast_ultrasound')
  assert versions == [push.version]
  assert push.model.uri.startswith(str(shared_runs['airflow_output'] / 'pipeline'))


def test_a_second_triggered_run_is_cached(servers, shared_runs):
  store = _store(servers, AIRFLOW_PIPELINE)
  _, second = metadata_store.run_contexts(store)
  states = {component.node_id: component.state
            for component in metadata_store.component_runs(store, second.id)}
  assert len(states) == PIPELINE_TASKS
  assert {state for node, state in states.items() if node not in RESOLVERS} == {'cached'}
  assert len(metadata_store.pushes(store)) == 1


def test_two_pipelines_ran_at_once_on_one_store_and_are_read_apart(
    servers, shared_runs, python, project_root):
  local = shared_runs['local']
  assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
  assert f'ML Metadata: {servers["metadata"].url("shared")}' in local.stdout
  assert 'blessed: yes' in local.stdout

  def inspect_runs(pipeline_name):
    completed = subprocess.run(
        [python, '-m', 'runs.inspect', '--output-dir', str(shared_runs['local_output']),
         '--pipeline-name', pipeline_name, *_store_flags(servers), '--json', 'runs'],
        cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)

  dag_runs, local_runs = inspect_runs(AIRFLOW_PIPELINE), inspect_runs(SECOND_PIPELINE)
  assert len(dag_runs) == 2 and len(local_runs) == 1
  dag_executions = {component['execution_id'] for run in dag_runs
                    for component in run['components']}
  local_executions = {component['execution_id'] for component in local_runs[0]['components']}
  assert dag_executions and local_executions and not dag_executions & local_executions
  # They ran at the same time: the local run's first execution began before the DAG's first
  # run ended, and ended after it began.
  store = _store(servers, None)
  spans = {}
  for name, ids in (('dag', {component['execution_id'] for component in dag_runs[0]
                             ['components']}), ('local', local_executions)):
    executions = store.get_executions_by_id(sorted(ids))
    spans[name] = (min(execution.create_time_since_epoch for execution in executions),
                   max(execution.last_update_time_since_epoch for execution in executions))
  assert spans['local'][0] < spans['dag'][1] and spans['dag'][0] < spans['local'][1]
  # Each pipeline's models are its own.
  assert [push.model.uri.startswith(str(shared_runs['local_output']))
          for push in metadata_store.pushes(_store(servers, SECOND_PIPELINE))] == [True]


def test_the_password_is_in_no_log_nor_in_the_dag_airflow_stores(servers, shared_runs):
  password = servers['metadata'].password
  for name in ('serialized_dag', 'task_logs', 'scheduler_log'):
    assert shared_runs[name] and password not in shared_runs[name], name
  assert password not in shared_runs['local'].stdout + shared_runs['local'].stderr


def test_one_run_per_pipeline_in_a_shared_store(servers, shared_runs, python, project_root,
                                                tmp_path):
  config = configs.PipelineConfig(
      output_dir=str(shared_runs['local_output']), pipeline_name=SECOND_PIPELINE,
      metadata_connection=servers['metadata'].url('shared'),
      metadata_password_file=servers['metadata'].password_file)

  def local_run(output_dir):
    return subprocess.run(
        [python, 'local_runner.py', '--data-root', str(shared_runs['data_root']),
         '--output-dir', str(output_dir), '--pipeline-name', SECOND_PIPELINE, *SMALL_RUN,
         *_store_flags(servers)], cwd=project_root, capture_output=True, text=True,
        timeout=600, check=False)

  # Another machine holds the pipeline (its output dir's file lock is not seen here).
  with metadata_connection.exclusive_pipeline(config):
    busy = local_run(shared_runs['local_output'])
  assert busy.returncode == 3, busy.stderr[-3000:]
  assert busy.stderr.strip().endswith('wait for it to finish, or pass --wait-for-output-dir')
  assert f"pipeline '{SECOND_PIPELINE}' in ML Metadata at" in busy.stderr
  assert len(busy.stderr.strip().splitlines()) == 1

  # The same pipeline name from another output directory.
  elsewhere = local_run(tmp_path / 'another-output')
  assert elsewhere.returncode == 4
  assert f"already holds pipeline '{SECOND_PIPELINE}' with its artifacts elsewhere" in (
      elsewhere.stderr)
  assert 'give this output dir a --pipeline-name of its own' in elsewhere.stderr
  assert not (tmp_path / 'another-output').exists()


def test_a_wrong_password_is_one_line(servers, python, project_root, tmp_path):
  wrong = tmp_path / 'wrong.password'
  wrong.write_text('not-the-password\n')
  completed = subprocess.run(
      [python, 'local_runner.py', '--output-dir', str(tmp_path / 'output'),
       '--metadata-connection', servers['metadata'].url('shared'),
       '--metadata-password-file', str(wrong)], cwd=project_root, capture_output=True,
      text=True, timeout=300, check=False)
  assert completed.returncode == 4
  assert completed.stderr.strip() == (
      f'local_runner.py: error: cannot open ML Metadata at {servers["metadata"].url("shared")}: '
      "Access denied for user 'mlmd'@'127.0.0.1' (using password: YES)")


def test_a_store_that_cannot_be_reached_is_one_line(python, project_root, tmp_path):
  port = database_servers.free_port()  # nothing listens there
  url = f'mysql://mlmd@127.0.0.1:{port}/metadata'
  for command in (['local_runner.py', '--output-dir', str(tmp_path / 'output'),
                   '--metadata-connection', url],
                  ['-m', 'runs.inspect', '--output-dir', str(tmp_path / 'output'),
                   '--metadata-connection', url, 'runs']):
    completed = subprocess.run([python, *command], cwd=project_root, capture_output=True,
                               text=True, timeout=300, check=False)
    assert completed.returncode == 4, completed.stderr
    [line] = completed.stderr.strip().splitlines()
    assert line.endswith(f"cannot open ML Metadata at {url}: Can't connect to MySQL server on "
                         "'127.0.0.1' ([Errno 111] Connection refused)")
  assert not (tmp_path / 'output').exists()


@pytest.mark.parametrize('url, problem', [
    ('postgresql://mlmd@db/metadata', 'ML Metadata 1.16 cannot record TFX runs on PostgreSQL'),
    ('mysql://mlmd:secret@db/metadata', 'put the password in BREAST_ULTRASOUND_METADATA_PASSWORD'
     ' or --metadata-password-file, not in the URL'),
    ('mysql://db/metadata', 'needs a user, a host and a database'),
    ('sqlite:///tmp/metadata.sqlite', 'is not a mysql:// URL'),
])
def test_a_bad_metadata_connection_is_refused_before_anything_runs(url, problem):
  with pytest.raises(ValueError, match=problem):
    metadata_connection.parse_url(url)


def test_the_connection_config_takes_the_password_from_the_file_or_the_environment(
    tmp_path, monkeypatch):
  config = configs.PipelineConfig(metadata_connection='mysql://ml%40team@db.example.org/runs')
  monkeypatch.setenv(metadata_connection.PASSWORD_VARIABLE, 'from-the-environment')
  connection = metadata_connection.connection_config(config)
  assert (connection.mysql.host, connection.mysql.port, connection.mysql.database,
          connection.mysql.user, connection.mysql.password) == (
              'db.example.org', 3306, 'runs', 'ml@team', 'from-the-environment')
  password_file = tmp_path / 'password'
  password_file.write_text('from-the-file\nignored\n')
  config.metadata_password_file = str(password_file)
  assert metadata_connection.connection_config(config).mysql.password == 'from-the-file'
  assert metadata_connection.describe(config) == 'mysql://ml%40team@db.example.org:3306/runs'


def test_the_pipeline_lock_outlives_the_servers_idle_timeout(servers):
  """A run's lock connection sits idle for the whole run; a server that closes idle connections
  (wait_timeout, 2 s here) must not close it, or a second run could start beside the first."""
  import pymysql  # pylint: disable=g-import-not-at-top
  server = servers['metadata']
  admin = pymysql.connect(host='127.0.0.1', port=server.port, user=server.user,
                          password=server.password, autocommit=True)
  config = configs.PipelineConfig(
      data_root='', output_dir='', pipeline_name='idle-lock',
      metadata_connection=server.url('idle_lock'), metadata_password_file=server.password_file)
  lock_name = metadata_connection._LOCK_PREFIX + 'idle-lock'  # pylint: disable=protected-access
  with admin.cursor() as cursor:
    cursor.execute('CREATE DATABASE IF NOT EXISTS idle_lock')
    cursor.execute('SET GLOBAL wait_timeout = 2')
  try:
    with metadata_connection.exclusive_pipeline(config):
      time.sleep(6)  # three idle timeouts
      with admin.cursor() as cursor:
        cursor.execute('SELECT IS_USED_LOCK(%s)', (lock_name,))
        assert cursor.fetchone()[0] is not None
      with pytest.raises(metadata_connection.PipelineBusy, match="pipeline 'idle-lock'"):
        with metadata_connection.exclusive_pipeline(config):
          pass
  finally:
    with admin.cursor() as cursor:
      cursor.execute('SET GLOBAL wait_timeout = 28800')
    admin.close()
