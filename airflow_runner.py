"""The same breast-ultrasound pipeline as an Apache Airflow DAG, with TFX's AirflowDagRunner.

On an Airflow deployment, put this file (or a link to it) in the DAGs folder and give the
pipeline's flags to the scheduler and workers in an environment variable:

    BREAST_ULTRASOUND_PIPELINE_FLAGS="--data-root /data/busi --output-dir /srv/busi" airflow ...

The DAG `breast-ultrasound` has one task per component, wired as the pipeline's components are.
It has no schedule unless BREAST_ULTRASOUND_SCHEDULE gives one (a cron expression or an Airflow
preset such as `@daily`): each scheduled run ingests the data root's newest span, and a run with
no new span is cached from end to end. Without one, trigger it (`airflow dags trigger
breast-ultrasound`) when the data change. Runs never overlap (one active run at a time) and
missed intervals are not caught up.

Here, one run in Airflow's own single-process test mode (`DAG.test()`: every task in this
process, in dependency order, no scheduler; Airflow's database is SQLite under
<output-dir>/airflow unless AIRFLOW_HOME says otherwise):

    python airflow_runner.py [--data-root DIR] [--output-dir DIR] [pipeline flags...]

The flags are local_runner.py's (`cli/flags.py`); ML Metadata, artifacts, the serving
directory and the report are where local_runner.py puts them, so `python -m runs.inspect` reads
an Airflow run as it reads a local one.
"""

import datetime
import os
import shlex
import sys
from typing import List, Optional

# Airflow imports DAG files from its DAGs folder: the project's packages come from beside this
# file, wherever that folder is.
PROJECT_ROOT = os.path.dirname(os.path.realpath(__file__))
if PROJECT_ROOT not in sys.path:
  sys.path.insert(0, PROJECT_ROOT)

from cli import command_line  # pylint: disable=g-import-not-at-top

command_line.prepare_environment()

from cli import exclusive_run, flags, reader_flags  # pylint: disable=g-import-not-at-top
from orchestration import metadata_connection  # pylint: disable=g-import-not-at-top
from pipeline import configs  # pylint: disable=g-import-not-at-top
from runs import after_run  # pylint: disable=g-import-not-at-top

PROG = 'airflow_runner.py'

FLAGS_VARIABLE = 'BREAST_ULTRASOUND_PIPELINE_FLAGS'
SCHEDULE_VARIABLE = 'BREAST_ULTRASOUND_SCHEDULE'
# Airflow wants a start date; without catch-up, a schedule starts from the latest interval.
START_DATE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def flag_parser() -> command_line.OneLineArgumentParser:
  parser = command_line.OneLineArgumentParser(
      prog=PROG, description=__doc__.splitlines()[0])
  flags.add_pipeline_flags(parser)
  reader_flags.add_metadata_flags(parser)
  return parser


def config_from_arguments(argv: List[str]) -> configs.PipelineConfig:
  args = flags.parse_flags(flag_parser(), argv)
  data_root = os.path.abspath(args.data_root) if args.data_root else configs.DEFAULT_DATA_ROOT
  args.data_root = data_root
  return flags.config_from_flags(args, output_dir=os.path.abspath(args.output_dir))


def create_dag(config: configs.PipelineConfig, schedule: Optional[str] = None):
  """The pipeline of `config` as an Airflow DAG, one task per component, run on `schedule` (a
  cron expression or preset; None: only when triggered)."""
  from tfx.orchestration.airflow import airflow_dag_runner  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top

  runner = airflow_dag_runner.AirflowDagRunner(airflow_dag_runner.AirflowPipelineConfig(
      airflow_dag_config={'schedule': schedule, 'start_date': START_DATE, 'catchup': False,
                          'max_active_runs': 1,
                          'description': 'breast-ultrasound TFX pipeline'}))
  return runner.run(create_pipeline(config, metadata_connection.connection_config(config)))


def dag_from_environment():
  """The DAG Airflow's scheduler and workers import, from the flags in FLAGS_VARIABLE."""
  try:
    config = config_from_arguments(shlex.split(os.environ.get(FLAGS_VARIABLE, '')))
  except SystemExit as error:  # a bad flag: Airflow lists it as this file's import error
    raise ValueError(f'{FLAGS_VARIABLE}: bad pipeline flags (exit {error.code})') from None
  schedule = os.environ.get(SCHEDULE_VARIABLE) or None
  if schedule and not schedule.startswith('@'):
    from croniter import croniter  # pylint: disable=g-import-not-at-top  # Airflow's own
    if not croniter.is_valid(schedule):
      raise ValueError(f'{SCHEDULE_VARIABLE}: {schedule!r} is neither a cron expression nor an '
                       'Airflow preset (@hourly, @daily, @weekly, ...)')
  return create_dag(config, schedule)


def main(argv: Optional[List[str]] = None) -> int:
  config = config_from_arguments(sys.argv[1:] if argv is None else argv)
  if config.data_root == configs.DEFAULT_DATA_ROOT:
    command_line.ensure_default_data(config.data_root)
  problem = flags.check_inputs(config)
  if problem:
    print(f'{PROG}: error: {problem}', file=sys.stderr)
    return command_line.EXIT_USAGE
  problem = metadata_connection.store_problem(config)
  if problem:
    print(f'{PROG}: error: {problem}', file=sys.stderr)
    return command_line.EXIT_METADATA_UNAVAILABLE
  os.makedirs(config.output_dir, exist_ok=True)
  os.environ.setdefault('AIRFLOW_HOME', os.path.join(config.output_dir, 'airflow'))
  os.environ.setdefault('AIRFLOW__CORE__LOAD_EXAMPLES', 'False')
  return exclusive_run.run_exclusively(config, False, PROG, lambda: run_dag_test(config))


def run_dag_test(config: configs.PipelineConfig) -> int:
  """One run of the DAG in Airflow's test mode, then the summary and report."""
  from airflow.utils import db  # pylint: disable=g-import-not-at-top
  from airflow.utils.state import DagRunState  # pylint: disable=g-import-not-at-top

  print(f'Airflow test mode: DAG {config.pipeline_name} on {config.data_root}\n'
        f'  output: {config.output_dir} (Airflow database: {os.environ["AIRFLOW_HOME"]})',
        flush=True)
  db.initdb(load_connections=False)
  dag_run = create_dag(config).test()
  if dag_run.state != DagRunState.SUCCESS:
    failed = [instance.task_id for instance in dag_run.get_task_instances()
              if instance.state == 'failed']
    after_run.write_run_report(config, PROG)
    print(f'{PROG}: DAG run {dag_run.state}; failed: {", ".join(failed) or "none"} '
          '(the task logs above say why)', file=sys.stderr)
    return command_line.EXIT_PIPELINE_FAILED
  after_run.print_summary_and_report(config, PROG)
  return 0


if __name__ == '__main__':
  sys.exit(main())
else:
  DAG = dag_from_environment()
