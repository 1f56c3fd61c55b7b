"""What a prediction says about one image, the same in every output: the predict CLI's JSON
lines, batch inference's CSV and JSON lines (and, from the SavedModel's own outputs, REST and
gRPC answers).

Two answers, kept apart under names that say which is which:

- `most_probable_class` and `most_probable_probability`: the class the model finds most probable
  and its calibrated probability;
- `decision`: the decision at the model's operating point, the one the pipeline's gates measured
  — malignant when `malignant_probability` reaches `malignant_threshold`, otherwise the more
  probable of the other two classes. Where the threshold lies below the most probable class's
  probability, the decision can be malignant while benign is the most probable class: that is
  what a screening threshold chosen for sensitivity does. A model without an operating point
  (`malignant_threshold` null) decides by the most probable class.

And beside the decision, `review`: whether the image should go to a person first, because the
decision is uncertain, with `review_reason` saying why ('near the threshold': the malignant
probability lies in the review band around the threshold; 'members disagree': one of the
ensemble's networks puts it above the band, another below; or both; '' when not flagged). A model exported before the flag
answers `review` null.
"""

from typing import Dict, Mapping, Optional

from models import features

MALIGNANT = features.LABEL_NAMES[features.MALIGNANT_LABEL]
# Columns of a table of answers, before the class scores.
FIELDS = ('most_probable_class', 'most_probable_probability', 'decision',
          'malignant_probability', 'malignant_threshold', 'review', 'review_reason')


def answer_of(scores: Mapping[str, float], decision: Optional[str] = None,
              threshold: Optional[float] = None, review: Optional[bool] = None,
              review_reason: Optional[str] = None) -> Dict:
  """The answer (FIELDS and `scores`, rounded to 6 decimals) from the calibrated probability of
  each class, the model's decision (None: the most probable class), its malignant threshold
  (None, or above 1, for none) and its review flag with the reason (None: a model without
  one)."""
  scores = {name: round(float(value), 6) for name, value in scores.items()}
  most_probable = max(scores, key=scores.get)
  has_threshold = threshold is not None and float(threshold) <= 1.0
  return {'most_probable_class': most_probable,
          'most_probable_probability': scores[most_probable],
          'decision': decision or most_probable,
          'malignant_probability': scores.get(MALIGNANT),
          'malignant_threshold': round(float(threshold), 6) if has_threshold else None,
          'review': None if review is None else bool(review),
          'review_reason': None if review is None else (review_reason or ''),
          'scores': scores}
