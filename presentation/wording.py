"""The one wording of each fact a person reads about a model: the operating point and its review
band, the decisions and the review flag with their intervals, the serving check and the on-device
model. The summary, the report, the inspector and the model card all say them with these.
"""

from typing import Any, Dict, List, Optional

from evaluation import classification_statistics, metric_names
from models import calibration


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
    lower, upper = metrics.get(name + metric_names.LOWER), metrics.get(name + metric_names.UPPER)
    return f'{found:.3f}' + (f' [{lower:.3f}, {upper:.3f}]' if lower is not None else '')

  if classification_statistics.REVIEW_FRACTION not in metrics:
    return []
  regret = metrics.get(classification_statistics.SPECIFICITY_REGRET)
  return [
      f'decisions: malignant sensitivity {value(metric_names.MALIGNANT_SENSITIVITY)}, '
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
