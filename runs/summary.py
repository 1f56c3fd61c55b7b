"""What a finished run did, read back from ML Metadata: the end-of-run summary.

Everything here comes from the metadata store and the artifacts it points to, never from the
runner's memory, so it describes exactly what was recorded: each component's execution in the
run (its state, whether it was cached, how long it took), the data ExampleGen kept and skipped,
the data-quality figures (near-duplicates, label conflicts, leaks), the evaluation metrics, the
blessing and the pushed model.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional

from components import contracts
from components.artifact_types import DataQualityReport, DriftReport, ModelCard
from components.data_quality.report import format_report_line
from components.drift_check.component import read_drift_report
from evaluation import blessing, metric_names, results
from models import features
from orchestration import output_lock
from presentation import wording
from runs.metadata_store import (ComponentRun, artifact_property, component_runs, location_text,
                                 open_store, run_contexts, run_outputs, spans_of_model, spans_read_by)


@dataclasses.dataclass
class RunSummary:
  run_id: str
  components: List[ComponentRun]
  class_counts: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)
  skipped_files: List[Dict[str, str]] = dataclasses.field(default_factory=list)
  ignored_files: List[Dict[str, str]] = dataclasses.field(default_factory=list)
  normalised_files: List[Dict[str, str]] = dataclasses.field(default_factory=list)
  # DataQualityCheck's artifact properties, and where its files are.
  data_quality: Dict[str, Any] = dataclasses.field(default_factory=dict)
  data_quality_uri: Optional[str] = None
  # The Trainer's operating point (models/calibration.py's OperatingPoint as a dict).
  operating_point: Optional[Dict[str, Any]] = None
  # The Tuner's best, trained with (`--tune`); None when the recipe's values were used.
  hyperparameters: Optional[Dict[str, Any]] = None
  metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
  confusion_matrix: List[List[int]] = dataclasses.field(default_factory=list)
  operating_point_confusion_matrix: List[List[int]] = dataclasses.field(default_factory=list)
  blessed: Optional[bool] = None
  # Each gate of the Evaluator, what it read and whether it held (evaluation/blessing.py).
  blessing_checks: List[blessing.BlessingCheck] = dataclasses.field(default_factory=list)
  # ServingCheck's verdict and report (components/serving_check/), the TFLite model's size.
  serving_check_passed: Optional[bool] = None
  serving_check: Optional[Dict[str, Any]] = None
  tflite_bytes: Optional[int] = None
  tflite_error: Optional[str] = None  # why the Trainer wrote no TFLite model
  pushed_destination: Optional[str] = None
  tflite_pushed: bool = False
  model_card: Optional[str] = None  # model_card.html: the pushed version's copy, when pushed
  # Spans (a data root of span folders; 0 without): the one this run ingested, those the
  # model was trained and evaluated on, and DriftCheck's report (drift.json) against the
  # previous span.
  span: int = 0
  trained_spans: List[int] = dataclasses.field(default_factory=list)
  evaluated_spans: List[int] = dataclasses.field(default_factory=list)
  drift: Optional[Dict[str, Any]] = None
  # With --warm-start: {'base_model': its directory, 'epochs': n}, or {'cold_start': why}.
  warm_start: Optional[Dict[str, Any]] = None


def summarize_run(metadata_path, run_id: Optional[str] = None,
                  pipeline_name: Optional[str] = None,
                  output_dir: Optional[str] = None) -> RunSummary:
  """The summary of the given run (default: the latest) recorded in `metadata_path` (a SQLite
  file, or a server's ConnectionConfig with the `output_dir` it writes for), of the pipeline
  `pipeline_name` where the store holds several."""
  store = open_store(metadata_path, pipeline_name)
  every_run = run_contexts(store)
  contexts = every_run if run_id is None else [
      context for context in every_run if context.name == run_id]
  if not contexts:
    raise ValueError(f'no pipeline run recorded in {location_text(metadata_path)}'
                     + (f' for pipeline {pipeline_name!r}' if pipeline_name else ''))
  context = contexts[-1]
  # Only the newest run can be going on, and only while a run holds the output directory.
  in_progress = (context == every_run[-1] and output_lock.running_holder(
      output_dir or os.path.dirname(os.path.abspath(metadata_path))) is not None)
  summary = RunSummary(run_id=context.name,
                       components=component_runs(store, context.id, in_progress))
  for component, type_name, artifact in run_outputs(store, summary.components):
    if type_name == 'Examples' and component.node_id.endswith('ExampleGen'):
      summary.span = artifact_property(artifact, 'span') or 0
      summary.class_counts = artifact_property(artifact, contracts.CLASS_COUNTS_PROPERTY) or {}
      summary.skipped_files = artifact_property(artifact, contracts.SKIPPED_FILES_PROPERTY) or []
      summary.ignored_files = artifact_property(artifact, contracts.IGNORED_FILES_PROPERTY) or []
      summary.normalised_files = artifact_property(
          artifact, contracts.NORMALISED_FILES_PROPERTY) or []
    elif type_name == DriftReport.TYPE_NAME:
      summary.drift = read_drift_report(artifact.uri)
    elif type_name == DataQualityReport.TYPE_NAME:
      summary.data_quality = {name: artifact_property(artifact, name) for name in (
          *contracts.DATA_QUALITY_COUNT_PROPERTIES, contracts.LABEL_CONFLICT_POLICY_PROPERTY)}
      summary.data_quality_uri = artifact.uri
    elif type_name == 'Model':
      summary.trained_spans = spans_of_model(store, artifact.id)
      summary.warm_start = artifact_property(artifact, 'warm_start')
      summary.operating_point = artifact_property(artifact, 'operating_point')
      summary.hyperparameters = artifact_property(artifact, 'hyperparameters')
      summary.tflite_bytes = artifact_property(artifact, contracts.TFLITE_BYTES_PROPERTY)
      summary.tflite_error = artifact_property(artifact, contracts.TFLITE_ERROR_PROPERTY)
    elif type_name == 'ModelEvaluation':
      summary.evaluated_spans = spans_read_by(store, component.execution_id)
      summary.metrics, matrices = results.read_overall_evaluation(artifact.uri)
      summary.blessing_checks = blessing.checks_of_evaluation(artifact.uri, summary.metrics)
      summary.confusion_matrix = matrices.get(metric_names.PROBABILITIES_OUTPUT, [])
      summary.operating_point_confusion_matrix = matrices.get(
          metric_names.OPERATING_POINT_OUTPUT, [])
    elif type_name == 'ModelBlessing':
      summary.blessed = artifact_property(artifact, 'blessed') == 1
    elif type_name == 'InfraBlessing':
      summary.serving_check_passed = artifact_property(artifact, 'blessed') == 1
      summary.serving_check = artifact_property(artifact, contracts.SERVING_CHECK_PROPERTY)
    elif type_name == ModelCard.TYPE_NAME:
      summary.model_card = (
          artifact_property(artifact, contracts.MODEL_CARD_PUSHED_COPY_PROPERTY)
          or os.path.join(artifact.uri, contracts.MODEL_CARD_HTML_FILE))
    elif type_name == 'PushedModel' and artifact_property(artifact, 'pushed') == 1:
      summary.pushed_destination = artifact_property(artifact, 'pushed_destination')
      summary.tflite_pushed = artifact_property(artifact, 'tflite_pushed') == 1
  return summary


def format_warm_start(record: Dict[str, Any]) -> str:
  if 'cold_start' in record:
    return f'cold start (--warm-start): {record["cold_start"]}'
  return f'warm start: from {record["base_model"]}, {int(record["epochs"])} epoch(s)'


def format_spans(spans: List[int]) -> str:
  return ', '.join(str(span) for span in spans) if spans else 'none'


def format_span_lines(summary: RunSummary) -> List[str]:
  """Which span the run ingested, which the model was trained and evaluated on, and the drift
  from the previous span; nothing for a data root without spans."""
  if not summary.span:
    return []
  lines = [f'span {summary.span} ingested'
           + (f'; trained on span(s) {format_spans(summary.trained_spans)}'
              if summary.trained_spans else '')
           + (f'; evaluated on the eval split of span(s) {format_spans(summary.evaluated_spans)}'
              if summary.evaluated_spans else '')]
  drift = summary.drift or {}
  if 'baseline_span' not in drift:
    lines.append('drift: nothing to compare with (no earlier span ingested)')
    return lines
  lines.append(f'drift of span {drift["span"]} from span {drift["baseline_span"]} '
               f'({drift["split"]} split):')
  for row in drift['measurements']:
    verdict = 'DRIFTED' if row['beyond'] else 'within'
    lines.append(f'  {row["feature"]:<16} {row["measure"]:<26} {row["distance"]:>7.3f}  '
                 f'{verdict} (threshold {row["threshold"]:g})')
  return lines


def format_summary(summary: RunSummary) -> str:
  lines = [f'Pipeline run {summary.run_id}', '']
  lines.append(f'  {"component":<32} {"status":<10} {"seconds":>8}')
  for component in summary.components:
    lines.append(f'  {component.node_id:<32} {component.state:<10} {component.seconds:>8.1f}')
  total = sum(component.seconds for component in summary.components)
  lines.append(f'  {"total":<32} {"":<10} {total:>8.1f}')
  if summary.class_counts:
    lines.append('')
    lines.append('  examples   ' + ' '.join(f'{name:>10}' for name in features.LABEL_NAMES))
    for split, counts in sorted(summary.class_counts.items(), reverse=True):
      lines.append(f'  {split:<10} ' + ' '.join(f'{int(counts.get(name, 0)):>10}'
                                                for name in features.LABEL_NAMES))
  span_lines = format_span_lines(summary)
  if span_lines:
    lines.append('')
    lines.extend(f'  {line}' for line in span_lines)
  if summary.data_quality:
    lines.append('')
    lines.append(f'  data quality: {format_report_line(summary.data_quality)}')
    lines.append(f'    contact sheet: {summary.data_quality_uri}/'
                 f'{contracts.CONTACT_SHEET_FILE}')
  if summary.skipped_files:
    lines.append('')
    lines.append(f'  skipped {len(summary.skipped_files)} input files:')
    lines.extend(f'    {row["file"]}: {row["reason"]}' for row in summary.skipped_files)
  if summary.ignored_files:
    lines.append(f'  ignored {len(summary.ignored_files)} files left by operating systems or '
                 'archivers: ' + ', '.join(row['file'] for row in summary.ignored_files))
  if summary.normalised_files:
    lines.append(f'  stored {len(summary.normalised_files)} images as PNG of the pixels Pillow '
                 'read (TensorFlow would decode the originals differently):')
    lines.extend(f'    {row["file"]}: {row["reason"]}' for row in summary.normalised_files)
  if summary.hyperparameters:
    lines.append('')
    lines.append('  tuned hyperparameters (the Tuner\'s best, trained with): ' + ', '.join(
        f'{name} {value:.3g}' if isinstance(value, float) else f'{name} {value}'
        for name, value in sorted(summary.hyperparameters.items())))
  if summary.warm_start:
    lines.append('')
    lines.append(f'  {format_warm_start(summary.warm_start)}')
  if summary.operating_point:
    lines.append('')
    lines.append(f'  operating point: {wording.format_operating_point(summary.operating_point)}')
  review_lines = wording.format_decision_review(summary.metrics or {})
  if review_lines:
    lines.append('')
    lines.append('  at the operating point on the eval split ([95 % bootstrap interval]):')
    lines.extend(f'    {line}' for line in review_lines)
  if summary.metrics:
    lines.append('')
    lines.append('  evaluation (eval split, overall; [95 % bootstrap interval]):')
    metrics = summary.metrics
    for name in sorted(metrics):
      if name.startswith('example_count') or name.endswith(('_lower', '_upper', '_lower_diff',
                                                            '_upper_diff')):
        continue
      # Of the differences from the baseline, only the paired one has an interval: TFMA's other
      # differences subtract the baseline's interval ends, which is no interval of a difference.
      paired = name == metric_names.ACCURACY_VERSUS_BASELINE + '_diff'
      lower, upper = ((metrics.get(f'{metric_names.ACCURACY_VERSUS_BASELINE}_lower_diff'),
                       metrics.get(f'{metric_names.ACCURACY_VERSUS_BASELINE}_upper_diff'))
                      if paired else (metrics.get(name + '_lower'), metrics.get(name + '_upper')))
      interval = f'  [{lower:.3f}, {upper:.3f}]' if lower is not None else ''
      lines.append(f'    {name:<40} {metrics[name]:.4f}{interval}')
  for title, matrix in (('most probable class', summary.confusion_matrix),
                        ('the model\'s decision at its operating point',
                         summary.operating_point_confusion_matrix)):
    if any(any(row) for row in matrix):
      lines.append('')
      lines.append(f'  confusion matrix, {title} (rows: true class, columns: predicted):')
      lines.append('    ' + ' ' * 10 + ''.join(f'{name:>10}' for name in features.LABEL_NAMES))
      for name, row in zip(features.LABEL_NAMES, matrix):
        lines.append(f'    {name:<10}' + ''.join(f'{count:>10}' for count in row))
  lines.append('')
  if summary.blessed is None:
    lines.append('  not evaluated')
  else:
    lines.append(f'  blessed: {"yes" if summary.blessed else "no"}')
    lines.extend(f'    {line}' for line in blessing.format_checks(summary.blessing_checks))
  if summary.serving_check_passed is not None:
    check = wording.format_serving_check(summary.serving_check or {}, summary.serving_check_passed)
    lines.append(f'  serving check: {check}')
    tflite = wording.format_tflite(summary.serving_check, summary.tflite_bytes,
                                   summary.tflite_pushed, summary.tflite_error)
    lines.append(f'  on-device model: {tflite}')
  pusher_cached = any(component.node_id == 'Pusher' and component.state == 'cached'
                      for component in summary.components)
  when = ' (by an earlier run; this run reused it)' if pusher_cached else ''
  why_not = [reason for reason, stopped in (
      ('not blessed', summary.blessed is False),
      ('the serving check failed', summary.serving_check_passed is False)) if stopped]
  lines.append(f'  pushed to: {summary.pushed_destination or "nothing pushed"}'
               f'{when if summary.pushed_destination else ""}'
               + (f' ({" and ".join(why_not)})' if why_not and not summary.pushed_destination
                  else ''))
  if summary.model_card:
    lines.append(f'  model card: {summary.model_card}')
  return '\n'.join(lines)
