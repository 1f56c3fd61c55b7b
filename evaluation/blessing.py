"""Which evidence decided a blessing: each gate of the Evaluator's recorded configuration, what
it read (an estimate, an end of a 95 % bootstrap interval, or the paired difference from the
baseline), the value measured and whether it held. The summary, the report, the model card and
the inspector all say it this way.
"""

import dataclasses
import json
import re
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from google.protobuf import json_format

from evaluation import metric_names

# A metric name's end, and what the gate on it read.
_EVIDENCE = {metric_names.LOWER: 'lower end of its 95 % interval',
             metric_names.UPPER: 'upper end of its 95 % interval'}


@dataclasses.dataclass
class BlessingCheck:
  """One threshold of the Evaluator's gate, the value measured and whether it held."""
  check: str
  value: Optional[float]
  passed: bool
  note: str = ''
  evidence: str = 'estimate'  # or an end of an interval, or the paired difference


def metric_key(class_name: str) -> str:
  """TFMA metric class name → the key it is reported under ('SparseCategoricalAccuracy' →
  'sparse_categorical_accuracy', 'MalignantRecall' → 'malignant_recall')."""
  return re.sub(r'(?<!^)(?=[A-Z])', '_', class_name).lower()


def recorded_eval_config(evaluation_uri: str) -> Dict[str, Any]:
  """The Evaluator's configuration as recorded in its artifact, with proto field names."""
  config = tfma.writers.eval_config_writer.load_eval_run(evaluation_uri)[0]
  return json_format.MessageToDict(config, preserving_proto_field_name=True)


def failed_metrics(evaluation_uri: str) -> List[str]:
  """Names of the metrics whose threshold TFMA found not met ('<name>_diff' for a change)."""
  result = tfma.load_validation_result(evaluation_uri)
  names = []
  for per_slice in result.metric_validations_per_slice:
    for failure in per_slice.failures:
      key = failure.metric_key
      names.append(key.name + ('_diff' if key.is_diff else ''))
  return names


def _evidence(key: str) -> str:
  return next((words for end, words in _EVIDENCE.items() if key.endswith(end)), 'estimate')


def _versus_baseline(key: str, margin: Optional[float], metrics: Dict[str, float],
                     failed: List[str]) -> BlessingCheck:
  """The paired comparison with the baseline; `margin` None where TFMA dropped the threshold
  because there was no baseline (it keeps the metric, so the recorded configuration says so)."""
  difference = metrics.get(metric_names.ACCURACY_VERSUS_BASELINE + '_diff')
  lower = metrics.get(key + '_diff')
  upper = metrics.get(metric_names.ACCURACY_VERSUS_BASELINE + metric_names.UPPER + '_diff')
  check = "accuracy against the baseline model's on the same eval images"
  if margin is None or lower is None:
    return BlessingCheck(check, None, f'{key}_diff' not in failed,
                         'no baseline yet: the first blessed model', 'paired difference')
  note = (f'difference {difference:+.3f}, 95 % interval [{lower:+.3f}, {upper:+.3f}]'
          if difference is not None and upper is not None else '')
  return BlessingCheck(f'{check}: lower end of the 95 % interval of the difference ≥ '
                       f'−{margin:g}', lower, f'{key}_diff' not in failed, note,
                       'paired difference')


def blessing_checks(config: Dict[str, Any], metrics: Dict[str, float],
                    failed: List[str]) -> List[BlessingCheck]:
  """Each threshold of the Evaluator's configuration `config` (as `recorded_eval_config` gives
  it), the measured value of the candidate (`metrics`, keyed as results.overall_metrics keys
  them) and whether it held."""
  checks = []
  for spec in config.get('metrics_specs', []):
    for metric in spec.get('metrics', []):
      configured = json.loads(metric.get('config') or '{}')
      key = configured.get('name') or metric_key(metric['class_name'])
      thresholds = [entry['threshold'] for entry in metric.get('per_slice_thresholds', [])]
      thresholds += [metric['threshold']] if 'threshold' in metric else []
      if metric['class_name'] == 'AccuracyVersusBaseline' and not any(
          'change_threshold' in threshold for threshold in thresholds):
        checks.append(_versus_baseline(key, None, metrics, failed))
      for threshold in thresholds:
        value_threshold = threshold.get('value_threshold', {})
        for bound_name, sign in (('lower_bound', '≥'), ('upper_bound', '≤')):
          bound = value_threshold.get(bound_name)
          if bound is not None:
            evidence = _evidence(key)
            name = key if evidence == 'estimate' else (
                f'{key[:key.rindex("_")]} ({evidence})')
            checks.append(BlessingCheck(f'{name} {sign} {float(bound):g}', metrics.get(key),
                                        key not in failed, evidence=evidence))
        change = threshold.get('change_threshold')
        if change is not None:
          checks.append(_versus_baseline(key, -float(change.get('absolute', 0.0)), metrics,
                                         failed))
  return checks


def checks_of_evaluation(evaluation_uri: str, metrics: Dict[str, float]) -> List[BlessingCheck]:
  """`blessing_checks` of an Evaluator's output (its ModelEvaluation artifact's URI)."""
  return blessing_checks(recorded_eval_config(evaluation_uri), metrics,
                         failed_metrics(evaluation_uri))


def format_checks(checks: List[BlessingCheck]) -> List[str]:
  """One line per gate: passed or failed, what it read, the value, and a note."""
  lines = []
  for check in checks:
    value = f'{check.value:.4f}' if check.value is not None else 'not measured'
    note = f' ({check.note})' if check.note else ''
    lines.append(f'{"passed" if check.passed else "FAILED":<7} {check.check}: {value}{note}')
  return lines
