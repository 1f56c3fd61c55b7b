"""The Airflow DAG under a real scheduler against Airflow's single-process test mode.

    python -m benchmarks.airflow_scheduler [--data-root DIR] [--workers 1 2] [--workdir DIR]

Runs the pipeline's DAG on the same small data:
- once in `DAG.test()` mode (`python airflow_runner.py`: every task in one process, ML Metadata
  and Airflow's database in SQLite);
- then, for each `--workers` count, under `airflow scheduler` with the LocalExecutor running that
  many task processes at a time, Airflow's database on a throwaway PostgreSQL server and ML
  Metadata on a throwaway MariaDB server (benchmarks/database_servers.py), a first run and a
  second, cached, triggered run.

Prints each run's seconds (the scheduler's, from the DAG run's start to its end), the seconds its
components took as ML Metadata records them, and the seconds the tasks took as Airflow records
them: what is left is the scheduler's and the task processes' own time.
"""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import List

from benchmarks import database_servers
from pipeline import configs

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The seed notebook's small CNN on small images, one epoch: the orchestration is measured.
SMALL_RUN = ['--network', 'seed', '--epochs', '1', '--image-size', '48', '--ensemble-members', '1',
             '--min-accuracy', '0', '--min-malignant-recall', '0', '--max-calibration-error', '1',
             '--tflite-weights', 'none']


def component_seconds(connection_config, pipeline_name: str) -> List[float]:
  """Each run's total component seconds in ML Metadata, oldest run first."""
  from runs import metadata_store  # pylint: disable=g-import-not-at-top
  store = metadata_store.open_store(connection_config, pipeline_name)
  return [sum(component.seconds for component in metadata_store.component_runs(store, run.id))
          for run in metadata_store.run_contexts(store)]


def dag_test_seconds(data_root: str, workdir: str) -> dict:
  output_dir = os.path.join(workdir, 'dag-test')
  started = time.monotonic()
  completed = subprocess.run([sys.executable, 'airflow_runner.py', '--data-root', data_root,
                              '--output-dir', output_dir, *SMALL_RUN], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=False)
  if completed.returncode:
    sys.exit(f'DAG.test() run failed: {completed.stderr[-2000:]}')
  seconds = time.monotonic() - started
  [components] = component_seconds(os.path.join(output_dir, 'metadata.sqlite'),
                                   configs.PIPELINE_NAME)
  return {'mode': 'DAG.test(), one process', 'run': 'first', 'seconds': seconds,
          'components': components, 'tasks': None}


def scheduler_rows(data_root: str, workdir: str, workers: int, metadata_server,
                   database_url: str) -> List[dict]:
  output_dir = os.path.join(workdir, f'scheduler-{workers}')
  config = configs.PipelineConfig(output_dir=output_dir,
                                  metadata_connection=metadata_server.url(f'workers_{workers}'),
                                  metadata_password_file=metadata_server.password_file)
  flags = ['--data-root', data_root, '--output-dir', output_dir, *SMALL_RUN,
           '--metadata-connection', config.metadata_connection,
           '--metadata-password-file', config.metadata_password_file]
  environment = database_servers.airflow_environment(
      os.path.join(workdir, f'airflow-{workers}'), database_url,
      database_servers.dags_folder_with_the_dag(os.path.join(workdir, f'dags-{workers}'),
                                                PROJECT_ROOT),
      shlex.join(flags), workers)
  scheduler = database_servers.AirflowScheduler(
      environment, os.path.join(workdir, f'scheduler-{workers}.log'))
  rows = []
  scheduler.start()
  try:
    scheduler.wait_for_dag(config.pipeline_name, timeout=600)
    for run in ('first', 'cached'):
      run_id = f'{run}-{workers}-workers'
      seconds = scheduler.run_and_wait(config.pipeline_name, run_id, timeout=3600)
      [(tasks,)] = scheduler.query('SELECT SUM(duration) FROM task_instance WHERE run_id = %s',
                                   run_id)
      rows.append({'mode': f'scheduler, LocalExecutor, {workers} worker(s)', 'run': run,
                   'seconds': seconds, 'tasks': float(tasks)})
  finally:
    scheduler.stop()
  from orchestration import metadata_connection  # pylint: disable=g-import-not-at-top
  for row, components in zip(rows, component_seconds(
      metadata_connection.connection_config(config), config.pipeline_name)):
    row['components'] = components
  return rows


def format_rows(rows: List[dict]) -> str:
  lines = [f'{"mode":<40} {"run":<7} {"run s":>7} {"tasks s":>8} {"components s":>13}']
  for row in rows:
    tasks = '' if row['tasks'] is None else f'{row["tasks"]:.0f}'
    lines.append(f'{row["mode"]:<40} {row["run"]:<7} {row["seconds"]:>7.0f} {tasks:>8} '
                 f'{row["components"]:>13.0f}')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root', help='class folders (default: 10 synthetic images a class)')
  parser.add_argument('--workers', type=int, nargs='+', default=[1, 2],
                      help='LocalExecutor task processes at a time, one scheduler run each')
  parser.add_argument('--workdir', help='where runs and servers go (default: a temporary folder)')
  args = parser.parse_args(argv)
  missing = database_servers.missing_servers()
  if missing:
    sys.exit(f'not installed: {", ".join(missing)} (apt-get install {" ".join(missing)})')
  workdir = args.workdir or tempfile.mkdtemp(prefix='airflow-scheduler-')
  data_root = args.data_root
  if data_root is None:
    from data import synthetic  # pylint: disable=g-import-not-at-top
    data_root = os.path.join(workdir, 'images')
    synthetic.generate_dataset(data_root, images_per_class=10, image_size=48, seed=4)
  rows = [dag_test_seconds(os.path.abspath(data_root), workdir)]
  print(format_rows(rows), flush=True)
  with database_servers.mariadb_server(workdir) as metadata_server, \
      database_servers.postgresql_server() as database_url:
    for workers in args.workers:
      rows += scheduler_rows(os.path.abspath(data_root), workdir, workers, metadata_server,
                             database_url)
      print(format_rows(rows[-2:]).split('\n', 1)[1], flush=True)
  print()
  print(format_rows(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
