"""What a finished run did, read back from ML Metadata: the end-of-run summary.

Everything here comes from the metadata store and the artifacts it points to, never from the
runner's memory, so it describes exactly what was recorded: each component's execution in the
run (its state, whether it was cached, how long it took), the data ExampleGen kept and skipped,
the data-quality figures (near-duplicates, label conflicts, leaks), the evaluation metrics, the
blessing and the pushed model.
"""

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components import contracts
from components.artifact_types import DataQualityReport, DriftReport, ModelCard
from components.data_quality.report import format_report_line
from components.drift_check.component import read_drift_report
from models import calibration, features
from pipeline import classification_statistics, eval_config, output_lock
from runs import blessing
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
  # Each gate of the Evaluator, what it read and whether it held (runs/blessing.py).
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


def read_overall_evaluation(evaluation_uri: str) -> Tuple[Dict[str, float],
                                                         Dict[str, List[List[int]]]]:
  """Overall-slice metrics of the candidate, keyed readably (e.g. 'auc/malignant',
  'recall_malignant'), and its confusion matrices as counts[true class][predicted class], by
  model output ('probabilities': the most probable class; 'operating_point': the decision)."""
  result = tfma.load_eval_result(evaluation_uri, model_name=_candidate_name(evaluation_uri))
  return overall_metrics(result), _overall_confusion_matrices(result)


def read_overall_arrays(evaluation_uri: str) -> Dict[str, np.ndarray]:
  """The candidate's array-valued overall metrics (the reliability diagrams, the ROC curve),
  by name."""
  result = tfma.load_eval_result(evaluation_uri, model_name=_candidate_name(evaluation_uri))
  arrays = {}
  for slice_key, metrics_by_output in result.slicing_metrics:
    if slice_key:
      continue
    for sub_keys in metrics_by_output.values():
      for name, value in sub_keys.get('', {}).items():
        if 'arrayValue' in value:
          array = value['arrayValue']
          arrays[name] = np.array([float(number) for number in array.get('float64Values', [])],
                                  dtype=np.float64).reshape(array.get('shape', [0]))
  return arrays


def _candidate_name(evaluation_uri: str) -> Optional[str]:
  """The candidate's model name when a baseline was evaluated beside it (TFMA then finds no
  plots without it), else None."""
  with tf.io.gfile.GFile(os.path.join(evaluation_uri, 'eval_config.json')) as handle:
    model_specs = json.load(handle).get('evalConfig', {}).get('modelSpecs', [])
  names = [spec['name'] for spec in model_specs if 'name' in spec and not spec.get('isBaseline')]
  return names[0] if len(model_specs) > 1 and names else None


def _overall_confusion_matrices(result) -> Dict[str, List[List[int]]]:
  size = len(features.LABEL_NAMES)
  matrices = {}
  for slice_key, plots_by_output in result.plots:
    if slice_key:
      continue
    for output, sub_keys in plots_by_output.items():
      plot = sub_keys.get('', {}).get('multiClassConfusionMatrixAtThresholds')
      if not plot:
        continue
      counts = matrices.setdefault(output or eval_config.PROBABILITIES_OUTPUT,
                                   [[0] * size for _ in range(size)])
      # JSON from protos omits zero fields: a missing class id is class 0.
      for entry in plot['matrices'][0].get('entries', []):
        actual, predicted = entry.get('actualClassId', 0), entry.get('predictedClassId', 0)
        if 0 <= actual < size and 0 <= predicted < size:
          counts[actual][predicted] = int(entry.get('numWeightedExamples', 0))
  return matrices


def overall_metrics(result) -> Dict[str, float]:
  """The overall slice's metrics of a TFMA EvalResult, keyed readably: 'macro_f1',
  'auc/benign', 'recall_malignant', 'sparse_categorical_accuracy_diff', ..."""
  metrics: Dict[str, float] = {}
  for slice_key, metrics_by_output in result.slicing_metrics:
    if slice_key:
      continue
    for sub_keys in metrics_by_output.values():
      for sub_key, values in sub_keys.items():
        # Sub keys look like '', 'classId:1' or 'classId:1 topK:1'.
        class_id = re.search(r'classId:(\d+)', sub_key)
        for name, value in values.items():
          if 'doubleValue' not in value:
            continue
          # A macro average is keyed 'macro_average: true\n_<name>'.
          name = name.rsplit('\n', 1)[-1].lstrip('_')
          if class_id and name == eval_config.MACRO_AUC:
            continue  # the per-class inputs of the average, the same as auc/<class>
          if class_id and name != eval_config.MALIGNANT_RECALL:
            name += '/' + features.LABEL_NAMES[int(class_id.group(1))]
          metrics[name] = float(value['doubleValue'])  # 'NaN' arrives as text
  return metrics


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
      summary.metrics, matrices = read_overall_evaluation(artifact.uri)
      summary.blessing_checks = blessing.checks_of_evaluation(artifact.uri, summary.metrics)
      summary.confusion_matrix = matrices.get(eval_config.PROBABILITIES_OUTPUT, [])
      summary.operating_point_confusion_matrix = matrices.get(
          eval_config.OPERATING_POINT_OUTPUT, [])
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


def operating_point_evidence(point: Dict[str, Any]) -> str:
  """What the operating point was chosen on, in words."""
  examples = int(point.get('calibration_examples') or 0)
  malignant = point.get('calibration_malignant')
  images = f'{examples} images' + (f' ({int(malignant)} malignant)' if malignant else '')
  seen = int(point.get('seen_by_base_model') or 0)
  unseen = f' (less {seen} the warm start\'s base model saw)' if seen else ''
  if point.get('chosen_on') == calibration.OUT_OF_FOLD:
    pooled = int(point.get('pooled_folds') or 0)
    networks = f'{pooled} cross-fitted networks\'' if pooled else 'the cross-fitted networks\''
    return (f'{networks} out-of-fold predictions of {images} of the training split{unseen}')
  return f'a calibration set of {images} held out of the training split{unseen}'


def format_operating_point(point: Dict[str, Any]) -> str:
  """The operating point in one line, as the summary, the report and the inspector say it."""
  temperature = f'temperature {point["temperature"]:.3g}'
  if point.get('malignant_threshold') is None:
    return (f'no out-of-sample predictions of malignant images to choose a threshold on: the '
            f'most probable class decides; {temperature}')
  ece = ''
  if point.get('calibration_ece_before') is not None:
    ece = (f'; calibration error {point["calibration_ece_before"]:.3f} → '
           f'{point["calibration_ece_after"]:.3f} on them')
  return (f'malignant when p(malignant) ≥ {point["malignant_threshold"]:.4f}, chosen for '
          f'sensitivity ≥ {point["target_sensitivity"]:g} on {operating_point_evidence(point)} '
          f'(reached {point["calibration_sensitivity"]:.2f}); {temperature}{ece}; '
          f'{format_review_band(point)}')


def format_review_band(point: Dict[str, Any]) -> str:
  """The review flag's band in words."""
  band = calibration.review_band(point.get('malignant_threshold'),
                                 point.get('review_half_width'))
  if band is None:
    return ('review flag: only where the ensemble\'s members fall on both sides of the '
            'threshold')
  return (f'review flag: p(malignant) within [{band[0]:.4f}, {band[1]:.4f}] (a budget of '
          f'{point.get("review_fraction", 0):.0%} of those predictions), or the ensemble\'s '
          'members on both sides of that band')


def format_decision_review(metrics: Dict[str, float]) -> List[str]:
  """The decisions on the eval split at the operating point and the review flag, with their 95 %
  intervals, as the summary, the report and the model card say them; nothing for an evaluation
  without them."""
  def value(name: str) -> str:
    found = metrics.get(name)
    if found is None or found != found:
      return 'n/a'
    lower, upper = metrics.get(name + eval_config.LOWER), metrics.get(name + eval_config.UPPER)
    return f'{found:.3f}' + (f' [{lower:.3f}, {upper:.3f}]' if lower is not None else '')

  if classification_statistics.REVIEW_FRACTION not in metrics:
    return []
  regret = metrics.get(classification_statistics.SPECIFICITY_REGRET)
  return [
      f'decisions: malignant sensitivity {value(eval_config.MALIGNANT_SENSITIVITY)}, '
      f'specificity {value("malignant_specificity")}',
      f'specificity regret {value(classification_statistics.SPECIFICITY_REGRET)}'
      + ('' if regret is None or regret != regret else
         ': the best threshold for the cancers found would have called '
         f'{regret:.1%} fewer of the other images malignant'),
      f'review flag: share of the images flagged {value(classification_statistics.REVIEW_FRACTION)}'
      f'; the decisions not flagged: sensitivity '
      f'{value(classification_statistics.UNFLAGGED_SENSITIVITY)}, specificity '
      f'{value(classification_statistics.UNFLAGGED_SPECIFICITY)}']


def format_serving_check(report: Dict[str, Any], passed: bool) -> str:
  """ServingCheck's verdict in one line, as the summary and the report say it."""
  if not passed:
    return 'failed: ' + '; '.join(report.get('failures') or ['no report'])
  latency = report['latency_ms']
  return (f'passed: {int(report["canaries"])} canaries answered well-formed scores through '
          f'serving_default and from_examples; one-image latency median {latency["median"]:.1f} '
          f'ms (max {latency["max"]:.1f} ms); loaded in {report["load_seconds"]:.1f} s')


def format_tflite(report: Optional[Dict[str, Any]], size_bytes: Optional[int],
                  pushed: bool, error: Optional[str] = None) -> str:
  """The on-device model's agreement with the SavedModel in one line."""
  tflite = (report or {}).get('tflite')
  if error:
    return f'no TFLite model: the conversion failed: {error}'
  if not size_bytes and not tflite:
    return 'none made (--tflite-weights none)'
  size = f'{size_bytes / 1024:,.0f} KiB' if size_bytes else 'size unknown'
  if not tflite:
    return f'TFLite, {size}; not compared (the serving check did not pass)'
  verdict = ('pushed beside the SavedModel' if pushed else
             'not pushed' + ('' if tflite['identical_labels'] >= report['min_tflite_agreement']
                             else f' (below {report["min_tflite_agreement"]:.0%})'))
  return (f'TFLite, {size}: the SavedModel\'s label on {tflite["identical_labels"]:.1%} of '
          f'{int(tflite["examples"])} eval images, probabilities within '
          f'{tflite["max_probability_difference"]:.2g}; {verdict}')


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
    lines.append(f'  operating point: {format_operating_point(summary.operating_point)}')
  review_lines = format_decision_review(summary.metrics or {})
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
      paired = name == eval_config.ACCURACY_VERSUS_BASELINE + '_diff'
      lower, upper = ((metrics.get(f'{eval_config.ACCURACY_VERSUS_BASELINE}_lower_diff'),
                       metrics.get(f'{eval_config.ACCURACY_VERSUS_BASELINE}_upper_diff'))
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
    check = format_serving_check(summary.serving_check or {}, summary.serving_check_passed)
    lines.append(f'  serving check: {check}')
    tflite = format_tflite(summary.serving_check, summary.tflite_bytes, summary.tflite_pushed,
                           summary.tflite_error)
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
