"""The clinical decisions a trained network needs before it is exported, chosen on out-of-sample
predictions of the training split (never on the eval split): a temperature that makes its
confidence mean what it says, and a malignant threshold that reaches a target sensitivity. The
predictions are an ensemble's out-of-fold ones (each training image predicted by the member that
never trained on it, models/group_split.py) or one network's on its calibration set.

Plain NumPy, shared by the Trainer and the cross-validation benchmark:

- `temperature_scale` / `fit_temperature`: one temperature T for all classes; probabilities
  become softmax(log p / T), minimising the predictions' negative log-likelihood.
- `malignant_threshold`: a threshold on the malignant probability whose sensitivity on the
  predictions reaches the target, midway between two of their scores.
- `operating_point_labels`: malignant when its probability reaches the threshold, otherwise the
  more probable of the other classes.
- `review_half_width` / `review_reasons`: the review flag beside the decision. An image goes to
  a person first when its calibrated malignant probability lies within a band around the
  threshold, symmetric in log-odds, whose half-width puts `review_fraction` of the
  out-of-sample predictions inside it; or when the ensemble's members, each calibrated alike,
  disagree with confidence: one above the band, another below it.
- `expected_calibration_error` (10 equal-width confidence bins) and `brier_score`.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import optimize

from models import features

DEFAULT_TARGET_SENSITIVITY = 0.90
# The operating point as JSON, written by the Trainer beside its SavedModel in the Model artifact.
OPERATING_POINT_FILE = 'operating_point.json'
CALIBRATION_BINS = 10
_SMALLEST_PROBABILITY = 1e-7
# A temperature below 1 sharpens. A network still underconfident after a short training can ask
# for 0.1 (seen on the synthetic data: p ** 8.6), which saturates the probabilities at 0 and 1 and
# leaves no room between scores for a threshold; 0.25 (p ** 4) is sharp enough for any network
# here.
TEMPERATURE_BOUNDS = (0.25, 20.0)
# At p(malignant) >= 0.5 malignant is the most probable class whatever the others are: a higher
# threshold would call benign what the most probable class calls malignant.
HIGHEST_THRESHOLD = 0.5


def temperature_scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log p / T), row by row."""
  logits = np.log(np.clip(probabilities, _SMALLEST_PROBABILITY, 1.0)) / temperature
  logits -= logits.max(axis=1, keepdims=True)
  scaled = np.exp(logits)
  return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
  chosen = probabilities[np.arange(len(labels)), labels]
  return float(-np.mean(np.log(np.clip(chosen, _SMALLEST_PROBABILITY, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: Sequence[int]) -> float:
  """The temperature (within TEMPERATURE_BOUNDS) that minimises the negative log-likelihood of
  `labels`."""
  labels = np.asarray(labels, dtype=np.int64)
  if len(labels) == 0:
    return 1.0
  result = optimize.minimize_scalar(
      lambda log_temperature: negative_log_likelihood(
          temperature_scale(probabilities, math.exp(log_temperature)), labels),
      bounds=tuple(math.log(bound) for bound in TEMPERATURE_BOUNDS), method='bounded')
  return float(math.exp(result.x))


def malignant_threshold(malignant_probabilities: Sequence[float], is_malignant: Sequence[bool],
                        target_sensitivity: float) -> float:
  """A threshold t with sensitivity(p >= t) >= target on these examples, never above 0.5.

  k = ceil(target x malignant examples); t lies midway between the k-th highest malignant
  probability among the malignant examples and the next lower probability of any example, so it
  makes the same decisions on these examples as the k-th score would and leaves new images that
  fall between the two on the malignant side. Ties at the k-th score are all above t;
  probabilities saturated at 1 leave t at 0.5. With no malignant example there is nothing to
  reach: 0.5.
  """
  scores = np.asarray(malignant_probabilities, dtype=np.float64)
  positives = np.sort(scores[np.asarray(is_malignant, bool)])[::-1]
  if len(positives) == 0:
    return HIGHEST_THRESHOLD
  needed = max(1, math.ceil(target_sensitivity * len(positives) - 1e-9))
  kth = positives[min(needed, len(positives)) - 1]
  lower = scores[scores < kth]
  midway = (kth + (lower.max() if len(lower) else 0.0)) / 2
  return float(min(midway, HIGHEST_THRESHOLD))


def operating_point_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
  """Class index per row: malignant when p(malignant) ≥ threshold, else the more probable of the
  others."""
  malignant = features.MALIGNANT_LABEL
  others = probabilities.copy()
  others[:, malignant] = -1.0
  return np.where(probabilities[:, malignant] >= threshold, malignant, others.argmax(axis=1))


# The review flag's reasons, as every output says them, and by code (1 + 2: both), as the
# SavedModel's from_examples signature gives them (BulkInferrer's logs take no strings).
NEAR_THRESHOLD = 'near the threshold'
MEMBERS_DISAGREE = 'members disagree'
REVIEW_REASONS = ('', NEAR_THRESHOLD, MEMBERS_DISAGREE, f'{NEAR_THRESHOLD}; {MEMBERS_DISAGREE}')
# An ensemble's operating point is chosen on the out-of-fold predictions of networks cross-fitted
# on this many folds of the training split (models/model.py): docs/experiments.md measures 2
# (one per member) against 4.
DEFAULT_CROSS_FIT_FOLDS = 4
# 10 % of the images to a person first: measured in docs/experiments.md (the review flag).
DEFAULT_REVIEW_FRACTION = 0.10


def log_odds(probabilities) -> np.ndarray:
  clipped = np.clip(np.asarray(probabilities, np.float64), _SMALLEST_PROBABILITY,
                    1 - _SMALLEST_PROBABILITY)
  return np.log(clipped) - np.log1p(-clipped)


def review_half_width(malignant_probabilities: Sequence[float], threshold: Optional[float],
                      review_fraction: float) -> Optional[float]:
  """The half-width, in log-odds, of the band around `threshold` that holds
  ⌊`review_fraction` × n⌋ of these n (calibrated, out-of-sample) malignant probabilities, its
  edges midway between two of them (as the threshold is), so that no prediction lies on an edge;
  None without a threshold or a budget."""
  scores = np.asarray(malignant_probabilities, np.float64)
  if threshold is None or review_fraction <= 0 or len(scores) == 0:
    return None
  distances = np.sort(np.abs(log_odds(scores) - log_odds(threshold)))
  inside = min(int(math.floor(review_fraction * len(scores) + 1e-9)), len(distances))
  if inside == len(distances):
    return float(distances[-1] + 1.0)
  return float((distances[inside] + (distances[inside - 1] if inside else 0.0)) / 2)


def review_band(threshold: Optional[float], half_width: Optional[float]):
  """(low, high): the malignant probabilities the band flags, or None."""
  if threshold is None or half_width is None:
    return None
  centre = float(log_odds(threshold))
  return (float(1 / (1 + math.exp(-(centre - half_width)))),
          float(1 / (1 + math.exp(-(centre + half_width)))))


def review_reasons(probabilities: np.ndarray, member_probabilities: np.ndarray,
                   threshold: Optional[float], half_width: Optional[float]) -> List[str]:
  """Per image, why it should go to a person first ('' when it need not): `probabilities`
  [images, classes] are the ensemble's calibrated probabilities (the temperature applied to the
  members' mean), `member_probabilities` [members, images, classes] each member's, calibrated
  alike. Near the threshold: the ensemble's malignant probability within the band; members
  disagree: their decisions at the operating point differ (with no threshold, their most probable
  classes)."""
  members = np.asarray(member_probabilities, np.float64)
  ensemble = np.asarray(probabilities, np.float64)
  near = np.zeros(len(ensemble), bool)
  if threshold is not None and half_width is not None:
    near = np.abs(log_odds(ensemble[:, features.MALIGNANT_LABEL]) - log_odds(threshold)) <= (
        half_width)
  if threshold is None:
    decisions = members.argmax(axis=2)
    disagree = np.any(decisions != decisions[:1], axis=0)
  else:
    band = review_band(threshold, half_width) or (threshold, threshold)
    member_malignant = members[:, :, features.MALIGNANT_LABEL]
    disagree = (member_malignant.max(axis=0) > band[1]) & (member_malignant.min(axis=0) < band[0])
  return ['; '.join(reason for reason, found in ((NEAR_THRESHOLD, is_near),
                                                  (MEMBERS_DISAGREE, does_disagree)) if found)
          for is_near, does_disagree in zip(near, disagree)]


def expected_calibration_error(probabilities: np.ndarray, labels: Sequence[int],
                               bins: int = CALIBRATION_BINS) -> float:
  """Σ over equal-width bins of the top-class confidence: |accuracy − confidence| × share."""
  table = reliability_table(probabilities, labels, bins)
  total = sum(row['count'] for row in table)
  return float(sum(row['count'] * abs(row['accuracy'] - row['confidence'])
                   for row in table if row['count']) / max(total, 1))


def reliability_table(probabilities: np.ndarray, labels: Sequence[int],
                      bins: int = CALIBRATION_BINS) -> list:
  """Per confidence bin: its range, count, mean confidence and accuracy (for the diagram)."""
  labels = np.asarray(labels)
  confidence = probabilities.max(axis=1)
  correct = probabilities.argmax(axis=1) == labels
  # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to bin 0.
  index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  table = []
  for number in range(bins):
    members = index == number
    count = int(members.sum())
    table.append({'low': number / bins, 'high': (number + 1) / bins, 'count': count,
                  'confidence': float(confidence[members].mean()) if count else float('nan'),
                  'accuracy': float(correct[members].mean()) if count else float('nan')})
  return table


def brier_score(probabilities: np.ndarray, labels: Sequence[int]) -> float:
  """Mean over examples of Σ over classes of (p − one-hot)²."""
  labels = np.asarray(labels)
  one_hot = np.eye(probabilities.shape[1])[labels]
  return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)))


def operating_point_summary(probabilities: np.ndarray, labels: Sequence[int],
                            threshold: float) -> Dict[str, float]:
  """Malignant-vs-rest sensitivity, specificity, PPV and NPV at the threshold."""
  labels = np.asarray(labels)
  predicted = operating_point_labels(probabilities, threshold) == features.MALIGNANT_LABEL
  actual = labels == features.MALIGNANT_LABEL
  true_positive = float(np.sum(predicted & actual))
  false_positive = float(np.sum(predicted & ~actual))
  false_negative = float(np.sum(~predicted & actual))
  true_negative = float(np.sum(~predicted & ~actual))

  def ratio(numerator, denominator):
    return numerator / denominator if denominator else float('nan')

  return {
      'sensitivity': ratio(true_positive, true_positive + false_negative),
      'specificity': ratio(true_negative, true_negative + false_positive),
      'ppv': ratio(true_positive, true_positive + false_positive),
      'npv': ratio(true_negative, true_negative + false_negative),
  }


OUT_OF_FOLD = 'out-of-fold'
HELD_OUT = 'held-out'


@dataclasses.dataclass
class OperatingPoint:
  """What the exported model applies, and the predictions it was chosen on: `chosen_on` is
  OUT_OF_FOLD (an ensemble's members' out-of-fold predictions of the training split) or HELD_OUT
  (one network's calibration set)."""
  temperature: float = 1.0
  # None when there were no predictions (or no malignant image among them): the arg-max decides.
  malignant_threshold: Optional[float] = None
  target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
  calibration_examples: int = 0
  calibration_malignant: int = 0
  chosen_on: str = HELD_OUT
  # Training images left out of the choice because the Tuner scored its trials on them.
  left_out_for_tuning: int = 0
  # Training images left out of the choice because a warm start's base model trained on them.
  seen_by_base_model: int = 0
  # Out-of-fold: how many cross-fitted networks' folds the predictions were pooled from.
  pooled_folds: int = 0
  calibration_sensitivity: Optional[float] = None
  calibration_ece_before: Optional[float] = None
  calibration_ece_after: Optional[float] = None
  # The review flag's band: the budget it was chosen for, and its half-width in log-odds around
  # the threshold (None: no band).
  review_fraction: float = 0.0
  review_half_width: Optional[float] = None


def choose_operating_point(probabilities: np.ndarray, labels: Sequence[int],
                           target_sensitivity: float, chosen_on: str = HELD_OUT,
                           review_fraction: float = 0.0) -> OperatingPoint:
  """Fits the temperature, then the malignant threshold and the review band on the calibrated
  probabilities."""
  labels = np.asarray(labels, dtype=np.int64)
  if len(labels) == 0:
    return OperatingPoint(target_sensitivity=target_sensitivity, chosen_on=chosen_on,
                          review_fraction=review_fraction)
  temperature = fit_temperature(probabilities, labels)
  calibrated = temperature_scale(probabilities, temperature)
  is_malignant = labels == features.MALIGNANT_LABEL
  threshold = (malignant_threshold(calibrated[:, features.MALIGNANT_LABEL], is_malignant,
                                   target_sensitivity) if is_malignant.any() else None)
  sensitivity = (operating_point_summary(calibrated, labels, threshold)['sensitivity']
                 if threshold is not None else None)
  return OperatingPoint(
      temperature=temperature, malignant_threshold=threshold,
      target_sensitivity=target_sensitivity, calibration_examples=int(len(labels)),
      calibration_malignant=int(is_malignant.sum()), chosen_on=chosen_on,
      calibration_sensitivity=sensitivity,
      calibration_ece_before=expected_calibration_error(probabilities, labels),
      calibration_ece_after=expected_calibration_error(calibrated, labels),
      review_fraction=review_fraction,
      review_half_width=review_half_width(calibrated[:, features.MALIGNANT_LABEL], threshold,
                                          review_fraction))
