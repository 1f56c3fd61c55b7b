"""The ML Metadata inspector: what the pipeline ran, wrote and pushed, read from the store.

    python -m runs.inspect --output-dir DIR [--json] runs
    python -m runs.inspect --output-dir DIR [--json] artifacts [--type TYPE]
    python -m runs.inspect --output-dir DIR [--json] lineage [ARTIFACT_ID | pushed]
    python -m runs.inspect --output-dir DIR [--json] models
    python -m runs.inspect --output-dir DIR [--json] spans
    python -m runs.inspect --output-dir DIR [--json] inferences

- `runs`: each pipeline run with every component's start, status, duration and whether it was
  cached;
- `artifacts`: id, type, producing component, run and URI of every artifact (or of one type);
- `lineage`: from an artifact (default: the newest pushed model) back through the executions
  and artifacts that led to it: examples, statistics, schema, transform graph, model, blessing,
  and what each of those executions also wrote (the evaluation);
- `models`: each trained model with its network, its operating point (the malignant threshold),
  its latest evaluation (accuracy, macro-F1, macro AUC, sensitivity and specificity at the
  operating point, calibration error) and which gates it failed or passed (and the paired
  difference from the baseline), whether any evaluation blessed it (as TFX's
  latest-blessed-model resolver counts), the version it was pushed as and the spans it was
  trained and evaluated on;
- `spans`: each ingestion of a span (a data root of span folders): the run, its images per
  split and class, and its drift from the previous span (each measurement, and the features
  beyond their thresholds);
- `inferences`: each batch inference run (`local_runner.py --infer-dir`): its input folder, the
  images it classified and skipped, the model that served it (artifact, training run, pushed
  version), the labels it gave and where its predictions are.

Tables for people by default; `--json` prints the same as JSON for scripts. The store is opened
read-only, so it can be inspected while a run is going.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import sys
from typing import Any, Dict, List, Optional

from cli import command_line

command_line.prepare_environment()

from cli import exclusive_run, reader_flags  # pylint: disable=g-import-not-at-top
from orchestration import metadata_connection, output_lock  # pylint: disable=g-import-not-at-top
from runs import metadata_store  # pylint: disable=g-import-not-at-top

EXIT_USAGE = command_line.EXIT_USAGE
MODEL_METRICS = ('sparse_categorical_accuracy', 'macro_f1', 'macro_auc', 'malignant_sensitivity',
                 'malignant_specificity', 'expected_calibration_error')


def _time(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds).strftime('%Y-%m-%d %H:%M:%S')


def _execution_row(store, execution) -> Dict[str, Any]:
  state = metadata_store.STATE_NAMES.get(execution.last_known_state, 'unknown')
  return {'component': metadata_store.node_id_of(store, execution.id),
          'execution_id': execution.id, 'run': metadata_store.run_of(store, execution.id),
          'state': state}


def _artifact_row(store, artifact) -> Dict[str, Any]:
  return {'id': artifact.id, 'type': metadata_store.type_name_of(store, artifact),
          'uri': artifact.uri}


def list_runs(store, output_dir: str) -> List[Dict[str, Any]]:
  """Every run and its components; executions that a killed run left marked running are
  'interrupted' (the newest run's are 'running' while a run holds the output dir)."""
  runs = []
  contexts = metadata_store.run_contexts(store)
  in_progress = output_lock.running_holder(output_dir) is not None
  for context in contexts:
    components = [{'component': run.node_id, 'execution_id': run.execution_id,
                   'started': _time(run.started), 'status': run.state,
                   'seconds': round(run.seconds, 3), 'cached': run.state == 'cached'}
                  for run in metadata_store.component_runs(
                      store, context.id, run_in_progress=in_progress and context == contexts[-1])]
    runs.append({'run': context.name, 'started': _time(context.create_time_since_epoch / 1000),
                 'components': components})
  return runs


def list_artifacts(store, type_name: Optional[str] = None) -> List[Dict[str, Any]]:
  artifacts = (store.get_artifacts_by_type(type_name) if type_name else store.get_artifacts())
  rows = []
  for artifact in sorted(artifacts, key=lambda artifact: artifact.id):
    producer = metadata_store.producer_of(store, artifact.id)
    row = _artifact_row(store, artifact)
    row.update({'producer': metadata_store.node_id_of(store, producer.id) if producer else '',
                'run': metadata_store.run_of(store, producer.id) if producer else ''})
    rows.append(row)
  return rows


def newest_pushed_model(store):
  found = metadata_store.pushes(store)
  return found[-1].pushed_model if found else None


def lineage(store, artifact, shown=None) -> Dict[str, Any]:
  """The artifact, the execution that wrote it, and recursively that execution's inputs.

  An artifact or execution reached twice (the examples feed several components) is expanded
  once; later it is marked `shown_above`.
  """
  shown = set() if shown is None else shown
  node = _artifact_row(store, artifact)
  if ('artifact', artifact.id) in shown:
    node['shown_above'] = True
    return node
  shown.add(('artifact', artifact.id))
  producer = metadata_store.producer_of(store, artifact.id)
  if producer is None:
    return node
  node['written_by'] = _execution_row(store, producer)
  if ('execution', producer.id) in shown:
    node['written_by']['shown_above'] = True
    return node
  shown.add(('execution', producer.id))
  node['also_wrote'] = [_artifact_row(store, other)
                        for other in metadata_store.outputs_of(store, producer.id)
                        if other.id != artifact.id]
  node['inputs'] = [dict(lineage(store, parent, shown), key=key)
                    for key, parent in metadata_store.inputs_of(store, producer.id)]
  return node


def list_models(store) -> List[Dict[str, Any]]:
  # Imported here: TFMA is slow to import and only this command reads evaluations.
  from evaluation import blessing, results  # pylint: disable=g-import-not-at-top
  evaluations, blessings, evaluated_spans = {}, {}, {}
  for execution in sorted(store.get_executions(), key=lambda execution: execution.id):
    if metadata_store.node_id_of(store, execution.id) != 'Evaluator':
      continue
    model_ids = [artifact.id for key, artifact in metadata_store.inputs_of(store, execution.id)
                 if key == 'model']
    for output in metadata_store.outputs_of(store, execution.id):
      kind = metadata_store.type_name_of(store, output)
      for model_id in model_ids:
        if kind == 'ModelEvaluation':
          evaluations[model_id] = output  # the latest evaluation's metrics are shown
          evaluated_spans[model_id] = metadata_store.spans_read_by(store, execution.id)
        elif kind == 'ModelBlessing':
          # Blessed once is blessed, as TFX's latest-blessed-model resolver sees it.
          blessings[model_id] = (blessings.get(model_id, False)
                                 or metadata_store.artifact_property(output, 'blessed') == 1)
  pushes = {push.model.id: push.version for push in metadata_store.pushes(store)
            if push.model is not None}
  rows = []
  for model in sorted(store.get_artifacts_by_type('Model'), key=lambda model: model.id):
    producer = metadata_store.producer_of(store, model.id)
    custom_config = (producer and metadata_store.execution_json_property(
        producer, 'custom_config')) or {}
    metrics, checks = {}, []
    if model.id in evaluations:
      all_metrics, _ = results.read_overall_evaluation(evaluations[model.id].uri)
      checks = [dataclasses.asdict(check) for check in blessing.checks_of_evaluation(
          evaluations[model.id].uri, all_metrics)]
      metrics = {name: all_metrics.get(name) for name in MODEL_METRICS}
      # The 95 % bootstrap intervals where the Evaluator computed them.
      metrics.update({f'{name}_{end}': all_metrics[f'{name}_{end}'] for name in MODEL_METRICS
                      for end in ('lower', 'upper') if f'{name}_{end}' in all_metrics})
    rows.append({'id': model.id, 'run': metadata_store.run_of(store, producer.id) if producer
                 else '', 'network': custom_config.get('network'),
                 'trained_spans': metadata_store.spans_of_model(store, model.id),
                 'evaluated_spans': evaluated_spans.get(model.id, []),
                 'malignant_threshold': metadata_store.artifact_property(model,
                                                                         'malignant_threshold'),
                 'operating_point': metadata_store.artifact_property(model, 'operating_point'),
                 'hyperparameters': metadata_store.artifact_property(model, 'hyperparameters'),
                 'epochs': custom_config.get('epochs'), 'metrics': metrics,
                 'blessed': blessings.get(model.id), 'blessing_checks': checks,
                 'pushed_version': pushes.get(model.id),
                 'uri': model.uri})
  return rows


def list_spans(store) -> List[Dict[str, Any]]:
  """Each ingestion of a span by ImageExampleGen, oldest first, with DriftCheck's verdict on
  it."""
  # pylint: disable=g-import-not-at-top
  from components.artifact_types import DriftReport
  from components.drift_check.component import read_drift_report
  drift_of_span = {}
  for drift in sorted(store.get_artifacts_by_type(DriftReport.TYPE_NAME),
                      key=lambda found: found.id):
    report = read_drift_report(drift.uri) or {}
    drift_of_span[report.get('span')] = report
  rows = []
  for examples in sorted(store.get_artifacts_by_type('Examples'), key=lambda found: found.id):
    producer = metadata_store.producer_of(store, examples.id)
    if producer is None or not metadata_store.node_id_of(store, producer.id).endswith(
        'ImageExampleGen'):
      continue
    span = metadata_store.artifact_property(examples, 'span') or 0
    drift = drift_of_span.get(span, {})
    rows.append({'span': span, 'examples_id': examples.id,
                 'run': metadata_store.run_of(store, producer.id),
                 'data_root': metadata_store.artifact_property(examples, 'data_root'),
                 'class_counts': metadata_store.artifact_property(examples, 'class_counts'),
                 'compared_with_span': drift.get('baseline_span'),
                 'drift_measurements': drift.get('measurements', []),
                 'drifted': drift.get('drifted', [])})
  return rows


def format_spans(rows) -> str:
  def images(counts):
    return ', '.join(f'{split} {int(sum((counts or {}).get(split, {}).values()))}'
                     for split in ('train', 'eval', 'excluded') if (counts or {}).get(split))

  def drift(row):
    if row['compared_with_span'] is None:
      return 'nothing to compare with'
    beyond = [f'{measure["feature"]} {measure["distance"]:.3f}'
              for measure in row['drift_measurements'] if measure['beyond']]
    return (f'vs span {row["compared_with_span"]}: '
            + ('DRIFTED ' + ', '.join(beyond) if beyond else 'within thresholds'))
  return format_table(['span', 'examples', 'run', 'images', 'drift'],
                      [[row['span'], row['examples_id'], row['run'], images(row['class_counts']),
                        drift(row)] for row in rows]) if rows else 'no spans ingested'


def format_table(headers: List[str], rows: List[List[Any]]) -> str:
  cells = [[('' if value is None else str(value)) for value in row] for row in rows]
  widths = [max([len(header)] + [len(row[index]) for row in cells])
            for index, header in enumerate(headers)]
  lines = ['  '.join(header.ljust(width) for header, width in zip(headers, widths)).rstrip()]
  lines += ['  '.join(value.ljust(width) for value, width in zip(row, widths)).rstrip()
            for row in cells]
  return '\n'.join(lines)


def format_runs(runs) -> str:
  blocks = []
  for run in runs:
    rows = [[component['component'], component['started'], component['status'],
             f'{component["seconds"]:.1f}', 'yes' if component['cached'] else 'no']
            for component in run['components']]
    blocks.append(f'run {run["run"]} (started {run["started"]})\n' + format_table(
        ['component', 'started', 'status', 'seconds', 'cached'], rows))
  return '\n\n'.join(blocks) if blocks else 'no runs recorded'


def format_artifacts(rows) -> str:
  return format_table(['id', 'type', 'producer', 'run', 'uri'],
                      [[row['id'], row['type'], row['producer'], row['run'], row['uri']]
                       for row in rows]) if rows else 'no artifacts'


def format_lineage(node: Dict[str, Any], depth: int = 0) -> str:
  indent = '    ' * depth
  key = f'{node["key"]}: ' if 'key' in node else ''
  lines = [f'{indent}{key}{node["type"]} #{node["id"]}  {node["uri"]}'
           + ('  (shown above)' if node.get('shown_above') else '')]
  if 'written_by' in node:
    execution = node['written_by']
    lines.append(f'{indent}  written by {execution["component"]} (execution '
                 f'{execution["execution_id"]}, run {execution["run"]}, {execution["state"]})'
                 + ('  (shown above)' if execution.get('shown_above') else ''))
    for other in node.get('also_wrote', []):
      lines.append(f'{indent}  which also wrote {other["type"]} #{other["id"]}  {other["uri"]}')
    lines.extend(format_lineage(parent, depth + 1) for parent in node.get('inputs', []))
  return '\n'.join(lines)


def _decided_by(checks: List[Dict[str, Any]]) -> str:
  """The gates a model's latest evaluation failed, or that all passed, and the paired difference
  from the baseline where one was measured."""
  if not checks:
    return ''
  failed = [check['check'] for check in checks if not check['passed']]
  versus = [check for check in checks
            if check['evidence'] == 'paired difference' and check['value'] is not None]
  text = 'failed ' + '; '.join(failed) if failed else 'every gate passed'
  return text + (f' (vs baseline: lower end {versus[0]["value"]:+.3f})' if versus else '')


def format_models(rows) -> str:
  def metric(row, name):
    value = row['metrics'].get(name)
    return '' if value is None else f'{value:.3f}'
  def spans(row):
    if not any(row['trained_spans']) and not any(row['evaluated_spans']):
      return ''
    return (','.join(map(str, row['trained_spans'])) + ' / '
            + ','.join(map(str, row['evaluated_spans'])))
  return format_table(
      ['id', 'run', 'network', 'spans (train / eval)', 'malignant threshold', 'accuracy',
       'macro-F1', 'macro AUC', 'sensitivity', 'specificity', 'calibration error', 'blessed',
       'latest evaluation', 'pushed version'],
      [[row['id'], row['run'], row['network'], spans(row),
        '' if row['malignant_threshold'] is None else f'{row["malignant_threshold"]:.4f}',
        *(metric(row, name) for name in MODEL_METRICS),
        {True: 'yes', False: 'no', None: 'not evaluated'}[row['blessed']],
        _decided_by(row['blessing_checks']),
        row['pushed_version'] or '']
       for row in rows]) if rows else 'no models trained'



def format_inferences(rows) -> str:
  return format_table(
      ['run', 'status', 'input', 'images', 'skipped', 'model', 'version', 'predictions'],
      [[row['run'], row['state'], row['input'], row['images'], len(row['skipped']),
        row['model_id'], row['model_version'], row['predictions']] for row in rows])


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  json_flag = argparse.ArgumentParser(add_help=False)
  json_flag.add_argument('--json', action='store_true', default=argparse.SUPPRESS,
                         help='print JSON instead of a table')
  parser = command_line.OneLineArgumentParser(
      prog='python -m runs.inspect', parents=[json_flag],
      description='Inspect the ML Metadata of pipeline runs.')
  reader_flags.add_reader_flags(parser)
  commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND',
                                   parser_class=command_line.OneLineArgumentParser)
  commands.add_parser('runs', parents=[json_flag], help='pipeline runs and their components')
  artifacts = commands.add_parser('artifacts', parents=[json_flag], help='recorded artifacts')
  artifacts.add_argument('--type', help='only this artifact type, e.g. Model, Examples')
  lineage_parser = commands.add_parser('lineage', parents=[json_flag],
                                       help='what led to an artifact')
  lineage_parser.add_argument('artifact', nargs='?', default='pushed',
                              help='an artifact id, or "pushed" for the newest pushed model '
                              '(default)')
  commands.add_parser('models', parents=[json_flag],
                      help='trained models, metrics, blessing, pushed version')
  commands.add_parser('spans', parents=[json_flag],
                      help='ingested spans, their images and their drift from the span before')
  commands.add_parser('inferences', parents=[json_flag],
                      help='batch inference runs and the model that served each')
  args = parser.parse_args(argv)
  args.json = getattr(args, 'json', False)
  if args.command == 'lineage' and args.artifact != 'pushed' and not args.artifact.isdigit():
    parser.error(f'lineage: expected an artifact id or "pushed", got {args.artifact!r}')
  return args


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  logging.getLogger('tensorflow').setLevel(logging.ERROR)  # TFMA's deprecation notices
  config = reader_flags.reader_config(args)
  problem = metadata_connection.reader_problem(config)
  if problem:
    print(f'runs.inspect: error: {problem}', file=sys.stderr)
    return exclusive_run.exit_code_of_problem(config)
  store = metadata_store.open_pipeline_store(config)
  if args.command == 'runs':
    result, text = list_runs(store, args.output_dir), format_runs
  elif args.command == 'artifacts':
    known_types = {artifact_type.name for artifact_type in store.get_artifact_types()}
    if args.type is not None and args.type not in known_types:
      print(f'runs.inspect: error: no artifact type {args.type!r} in the store (have '
            f'{", ".join(sorted(known_types))})', file=sys.stderr)
      return EXIT_USAGE
    result, text = list_artifacts(store, args.type), format_artifacts
  elif args.command == 'lineage':
    if args.artifact == 'pushed':
      artifact = newest_pushed_model(store)
      if artifact is None:
        print('runs.inspect: error: no model has been pushed yet', file=sys.stderr)
        return EXIT_USAGE
    else:
      found = store.get_artifacts_by_id([int(args.artifact)])
      if not found:
        print(f'runs.inspect: error: no artifact with id {args.artifact}', file=sys.stderr)
        return EXIT_USAGE
      artifact = found[0]
    result, text = lineage(store, artifact), format_lineage
  elif args.command == 'spans':
    result, text = list_spans(store), format_spans
  elif args.command == 'inferences':
    from runs import inference  # pylint: disable=g-import-not-at-top
    result, text = inference.inference_runs(store), format_inferences
  else:
    result, text = list_models(store), format_models
  print(json.dumps(result, indent=1) if args.json else text(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
