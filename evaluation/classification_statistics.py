"""What the Evaluator measures, as plain functions of labels and predictions, and their
bootstrap intervals.

From a confusion matrix (counts[true class][predicted class]): macro-F1, malignant recall, each
class's precision and recall, and malignant against the rest (specificity, PPV, NPV). From the
probabilities: macro AUC (one-vs-rest). Of the decisions beside the probabilities and the review
flag: the specificity regret, the share flagged, and the unflagged decisions' sensitivity and
specificity (`decision_review_statistics`). Of two models' probabilities of the same images:
`paired_statistics`, the candidate's accuracy less the baseline's. `bootstrap_intervals`
resamples eval images, or whole near-duplicate groups, for 95 % percentile intervals; a paired
statistic resamples both models' predictions of an image together, so the interval of the
difference is as narrow as the models' agreement allows. evaluation/tfma_metrics.py wraps these as
TFMA metrics; benchmarks/grouped_cross_validation.py computes them on its folds.
"""

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from sklearn import metrics as sklearn_metrics

from evaluation.metric_names import (ACCURACY, ACCURACY_VERSUS_BASELINE, EXPECTED_CALIBRATION_ERROR,
                                     MACRO_AUC, MACRO_F1, MALIGNANT_SENSITIVITY)
from models import calibration, features


def macro_f1(counts: np.ndarray) -> float:
  true_positives = np.diag(counts)
  denominators = counts.sum(axis=0) + counts.sum(axis=1)  # predicted + actual = 2TP + FP + FN
  scores = np.divide(2 * true_positives, denominators, out=np.zeros_like(true_positives),
                     where=denominators > 0)
  return float(scores.mean())


def malignant_recall(counts: np.ndarray) -> float:
  malignant = features.MALIGNANT_LABEL
  actual = counts[malignant].sum()
  return float(counts[malignant, malignant] / actual) if actual else float('nan')


def class_precision_recall(counts: np.ndarray) -> Dict[str, float]:
  """'precision_<class>' and 'recall_<class>' of every class; NaN where undefined."""
  values = {}
  for index, class_name in enumerate(features.LABEL_NAMES):
    predicted, actual = counts[:, index].sum(), counts[index].sum()
    values[f'precision_{class_name}'] = (float(counts[index, index] / predicted) if predicted
                                         else float('nan'))
    values[f'recall_{class_name}'] = (float(counts[index, index] / actual) if actual
                                      else float('nan'))
  return values


def malignant_versus_rest(counts: np.ndarray) -> Dict[str, float]:
  """Specificity, PPV and NPV of calling an image malignant, against the other classes."""
  malignant = features.MALIGNANT_LABEL
  true_positive = counts[malignant, malignant]
  false_negative = counts[malignant].sum() - true_positive
  false_positive = counts[:, malignant].sum() - true_positive
  true_negative = counts.sum() - true_positive - false_negative - false_positive

  def ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else float('nan')

  return {'malignant_specificity': ratio(true_negative, true_negative + false_positive),
          'malignant_ppv': ratio(true_positive, true_positive + false_positive),
          'malignant_npv': ratio(true_negative, true_negative + false_negative)}


def confusion_counts_of(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  """counts[true class][predicted class] from label and predicted-class arrays."""
  size = len(features.LABEL_NAMES)
  return np.bincount(labels * size + predicted, minlength=size * size).reshape(size, size).astype(
      float)


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
  """One-vs-rest AUC averaged over the classes; NaN when a class is missing from `labels`."""
  classes = list(range(len(features.LABEL_NAMES)))
  if len(set(labels.tolist())) < len(classes):
    return float('nan')
  return float(sklearn_metrics.roc_auc_score(labels, probabilities, labels=classes,
                                             multi_class='ovr', average='macro'))


def probability_statistics(labels: np.ndarray, probabilities: np.ndarray) -> Dict[str, float]:
  """Accuracy, macro-F1 and macro AUC of the most probable class, and the expected calibration
  error of the probabilities, as the Evaluator names them."""
  counts = confusion_counts_of(labels, probabilities.argmax(axis=1))
  return {ACCURACY: float(np.trace(counts) / counts.sum()), MACRO_F1: macro_f1(counts),
          MACRO_AUC: macro_auc(labels, probabilities),
          EXPECTED_CALIBRATION_ERROR: calibration.expected_calibration_error(probabilities,
                                                                            labels)}


def paired_statistics(labels: np.ndarray, both: np.ndarray) -> Dict[str, float]:
  """The candidate's accuracy less the baseline's on the same images; `both` holds each image's
  candidate probabilities, then its baseline probabilities ([n, 2 × classes])."""
  classes = both.shape[1] // 2
  correct = lambda probabilities: np.mean(probabilities.argmax(axis=1) == labels)
  return {ACCURACY_VERSUS_BASELINE: float(correct(both[:, :classes]) -
                                          correct(both[:, classes:]))}


def specificity_regret(labels: np.ndarray, malignant_probabilities: np.ndarray,
                       decided_malignant: np.ndarray) -> float:
  """How much specificity the decisions left on the table: the best specificity any threshold on
  `malignant_probabilities` reaches while finding as many malignant images as the decisions
  found, less the decisions' specificity (0: no threshold would have called fewer
  non-malignant images malignant for the cancers found). NaN without both kinds of image."""
  is_malignant = np.asarray(labels) == features.MALIGNANT_LABEL
  decided_malignant = np.asarray(decided_malignant, bool)
  if is_malignant.all() or not is_malignant.any():
    return float('nan')
  found = int(np.sum(decided_malignant & is_malignant))
  scores = np.asarray(malignant_probabilities, np.float64)
  negatives = scores[~is_malignant]
  best = (1.0 if found == 0 else
          float(np.mean(negatives < np.sort(scores[is_malignant])[::-1][found - 1])))
  return best - float(np.mean(~decided_malignant[~is_malignant]))


# Review statistics: of the decisions no person is asked to look at first, and of the flag.
SPECIFICITY_REGRET = 'specificity_regret'
REVIEW_FRACTION = 'review_fraction'
UNFLAGGED_SENSITIVITY = 'unflagged_sensitivity'
UNFLAGGED_SPECIFICITY = 'unflagged_specificity'
REVIEW_STATISTICS = (SPECIFICITY_REGRET, REVIEW_FRACTION, UNFLAGGED_SENSITIVITY,
                     UNFLAGGED_SPECIFICITY)


def decision_review_statistics(labels: np.ndarray, combined: np.ndarray) -> Dict[str, float]:
  """The decisions' specificity regret, the share of images flagged for review, and the
  malignant sensitivity and specificity of the decisions that were not flagged. `combined` holds
  per image the decision (one-hot), the calibrated probabilities and the review flag (1.0 or
  0.0), side by side ([n, 2 × classes + 1])."""
  labels = np.asarray(labels)
  classes = len(features.LABEL_NAMES)
  decided = combined[:, :classes].argmax(axis=1)
  flagged = combined[:, 2 * classes] > 0.5
  kept = decision_statistics(labels[~flagged], combined[~flagged, :classes]) if (
      (~flagged).any()) else {}
  return {SPECIFICITY_REGRET: specificity_regret(
              labels, combined[:, classes + features.MALIGNANT_LABEL],
              decided == features.MALIGNANT_LABEL),
          REVIEW_FRACTION: float(flagged.mean()) if len(flagged) else float('nan'),
          UNFLAGGED_SENSITIVITY: kept.get(MALIGNANT_SENSITIVITY, float('nan')),
          UNFLAGGED_SPECIFICITY: kept.get('malignant_specificity', float('nan'))}


def decision_statistics(labels: np.ndarray, decisions: np.ndarray) -> Dict[str, float]:
  """Malignant sensitivity and specificity of the decisions (one-hot rows)."""
  counts = confusion_counts_of(labels, decisions.argmax(axis=1))
  return {MALIGNANT_SENSITIVITY: malignant_recall(counts),
          'malignant_specificity': malignant_versus_rest(counts)['malignant_specificity']}


STATISTICS = {'probabilities': probability_statistics, 'decisions': decision_statistics,
              'paired': paired_statistics, 'review': decision_review_statistics}


def bootstrap_intervals(statistics: Callable[[np.ndarray, np.ndarray], Dict[str, float]],
                        labels: np.ndarray, predictions: np.ndarray, groups: Sequence[str],
                        draws: int = 1000, seed: int = 0,
                        confidence: float = 0.95) -> Dict[str, Tuple[float, float]]:
  """{statistic: (lower, upper)}: percentile intervals over `draws` resamples with replacement.

  Images are resampled, or whole groups when any group holds several of them (copies of one
  frame are not independent evidence). Draws where a statistic is undefined (a class missing
  from the resample) are left out of that statistic's interval.
  """
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  units: Dict[str, List[int]] = {}
  for index, group in enumerate(groups):
    units.setdefault(group, []).append(index)
  members = (list(units.values()) if any(len(found) > 1 for found in units.values())
             else [[index] for index in range(len(labels))])
  rng = np.random.default_rng(seed)
  found: Dict[str, List[float]] = {}
  for _ in range(draws):
    chosen = rng.integers(0, len(members), size=len(members))
    indices = np.concatenate([members[unit] for unit in chosen])
    for name, value in statistics(labels[indices], predictions[indices]).items():
      if value == value:  # not NaN
        found.setdefault(name, []).append(value)
  tail = (1 - confidence) / 2 * 100
  return {name: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
          for name, values in found.items()}
