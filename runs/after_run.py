"""What every runner does once a pipeline run has ended: the summary read back from ML Metadata
and the run report (local_runner.py and airflow_runner.py alike)."""

import sys

from cli import command_line
from orchestration import metadata_connection


def print_summary_and_report(config, prog: str) -> None:
  """After a successful run: the summary from ML Metadata, then the report."""
  from runs import summary  # pylint: disable=g-import-not-at-top  # seconds to import
  print()
  print(summary.format_summary(summary.summarize_run(
      metadata_connection.reader_location(config), pipeline_name=config.pipeline_name,
      output_dir=config.output_dir)))
  write_run_report(config, prog)


def write_run_report(config, prog: str) -> None:
  """Writes <output-dir>/report/index.html for the latest run and names it; `prog` names the
  command in a warning."""
  from runs import report  # pylint: disable=g-import-not-at-top
  try:
    index = report.write_report(metadata_connection.reader_location(config), config.report_dir,
                                pipeline_name=config.pipeline_name, output_dir=config.output_dir)
    print(f'  report: {index}')
  except Exception as error:  # pylint: disable=broad-except
    # The run itself is over; a report that cannot be drawn must not hide its outcome.
    cause = command_line.root_cause(error)
    print(f'{prog}: warning: no run report: {cause.__class__.__name__}: {cause}',
          file=sys.stderr)
