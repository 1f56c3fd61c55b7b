"""The Evaluator's own TFMA metrics.

From the argmax confusion matrix, the way a clinician reads a classifier (each image gets its
most probable class; on the model's `operating_point` output, its decision at the operating
point):

- `MacroF1`: the mean over the classes of F1;
- `MalignantRecall`: the share of malignant images called malignant (named
  `malignant_sensitivity` on the `operating_point` output, where the gate reads it);
- `ClassPrecisionRecall`: precision and recall of each class (`precision_benign`, ...);
- `MalignantVersusRest`: specificity, positive and negative predictive value of "malignant"
  against the other two classes.

From the probabilities themselves: `ExpectedCalibrationError` (10 equal-width bins of the top
class's probability) and `BrierScore`, by the same formulas as models/calibration.py.

For the report's pictures, as arrays: `ReliabilityDiagram` (per confidence bin: its bounds,
images, mean confidence, accuracy) and `MalignantRoc` (malignant against the rest: threshold,
false-positive rate, true-positive rate at every distinct probability).

Of the decisions with the review flag: `DecisionReview`, the specificity regret, the share of
eval images flagged, and the sensitivity and specificity of the unflagged decisions, each with
its interval.

And their uncertainty: `BootstrapIntervals`, 95 % percentile intervals from 1,000 seeded
resamples of the eval images (of whole near-duplicate groups when a group has several eval
images; evaluation/classification_statistics.py computes the statistics and the intervals, this
module is their TFMA plumbing): of accuracy, macro-F1, macro AUC and calibration error on the
probabilities, of malignant sensitivity and specificity on the decision at the operating point
(`<metric>_lower`, `<metric>_upper`). `BootstrapBound` is one end of one of those intervals as a
metric of its own, for a gate on the bound.

Against the baseline model: `AccuracyVersusBaseline`, the candidate's accuracy less the
baseline's on the same images with its paired bootstrap interval, keyed as TFMA's differences
from the baseline (it reads both models' predictions of each example, as TFMA's
ModelCosineSimilarity does).

Both are derived from TFMA's own multi-class confusion matrix (the one behind
MultiClassConfusionMatrixPlot), and both are keyed without a sub-key, so a blessing threshold
can be attached to them. TFMA's built-in per-class metrics with `top_k=1` are no substitute: a
threshold key never carries `top_k`, so a gate cannot find them, and for a class that is never
the most probable they report a recall of 1.0 (a model that never says "malignant" would pass).
The Evaluator finds these metrics by module path (`evaluation.tfma_metrics`), so Beam workers
import them like the model code. Each takes a `code_version` that it ignores: the pipeline sets it
to a fingerprint of this module, so that the eval config, and with it TFX's cache key, changes
when these metrics do.
"""

from typing import Callable, Dict, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as matrices
from tensorflow_model_analysis.utils import model_util

from evaluation.classification_statistics import (REVIEW_STATISTICS, STATISTICS,
                                                  bootstrap_intervals, class_precision_recall,
                                                  macro_f1, malignant_recall, malignant_versus_rest)
from evaluation.metric_names import (ACCURACY, ACCURACY_VERSUS_BASELINE, BRIER_SCORE,
                                     EXPECTED_CALIBRATION_ERROR, LOWER, MACRO_AUC, MACRO_F1,
                                     MALIGNANT_RECALL, MALIGNANT_SENSITIVITY, PROBABILITIES_OUTPUT,
                                     REVIEW_OUTPUT, UPPER)
from models import calibration, features

_MATRIX_NAME = '_argmax_confusion_matrix'


def confusion_counts(matrix_entries: Dict, num_classes: int) -> np.ndarray:
  """counts[true class][predicted class] from a TFMA matrix at one threshold."""
  counts = np.zeros((num_classes, num_classes))
  for entry, weight in matrix_entries.items():
    if 0 <= entry.actual_class_id < num_classes and 0 <= entry.predicted_class_id < num_classes:
      counts[entry.actual_class_id, entry.predicted_class_id] += weight
  return counts


def _from_confusion_matrix(name: str, statistic: Callable[[np.ndarray], object],
                           eval_config=None, model_names: Optional[List[str]] = None,
                           output_names: Optional[List[str]] = None,
                           example_weighted: bool = False):
  """TFMA's argmax confusion matrix (threshold 0) and `statistic` of it keyed as `name`; a
  statistic that returns a dict gives one key per entry instead."""
  computations = []
  for model_name in model_names or ['']:
    for output_name in output_names or ['']:
      matrix_computations = matrices.multi_class_confusion_matrices(
          thresholds=[0.0], name=_MATRIX_NAME, eval_config=eval_config,
          model_name=model_name, output_name=output_name, example_weighted=example_weighted)
      matrix_key = matrix_computations[0].keys[0]
      # The names a statistic returns do not depend on the counts: ask it once with zeros.
      probe = statistic(np.zeros((len(features.LABEL_NAMES),) * 2))
      keys = {entry: metric_types.MetricKey(name=entry, model_name=model_name,
                                            output_name=output_name,
                                            example_weighted=example_weighted)
              for entry in (probe if isinstance(probe, dict) else [name])}

      def result(metrics, keys=keys, matrix_key=matrix_key):
        counts = confusion_counts(metrics[matrix_key][0.0], len(features.LABEL_NAMES))
        values = statistic(counts)
        if not isinstance(values, dict):
          values = {name: values}
        return {keys[entry]: value for entry, value in values.items()}

      computations.extend(matrix_computations)
      computations.append(metric_types.DerivedMetricComputation(keys=list(keys.values()),
                                                                result=result))
  return computations


def _macro_f1_computations(name: str, eval_config=None, model_names=None, output_names=None,
                           example_weighted: bool = False):
  return _from_confusion_matrix(name, macro_f1, eval_config, model_names, output_names,
                                example_weighted)


def _malignant_recall_computations(name: str, eval_config=None, model_names=None,
                                   output_names=None, example_weighted: bool = False):
  return _from_confusion_matrix(name, malignant_recall, eval_config, model_names,
                                output_names, example_weighted)


def _malignant_versus_rest_computations(name: str, eval_config=None, model_names=None,
                                        output_names=None, example_weighted: bool = False):
  return _from_confusion_matrix(name, malignant_versus_rest, eval_config, model_names,
                                output_names, example_weighted)


def _model_output(element, model_name: str, output_name: str, width: int) -> np.ndarray:
  """[examples, width]: one output of a model's predictions, read without a label (NaN where
  the model has no such output: a baseline exported before it)."""
  predictions = element.predictions
  if model_name and isinstance(predictions, dict) and isinstance(predictions.get(model_name),
                                                                 dict):
    predictions = predictions[model_name]
  found = predictions.get(output_name) if isinstance(predictions, dict) else None
  if found is None:
    return np.full((1, width), np.nan)
  return np.asarray(found, np.float64).reshape([-1, width])


class _ProbabilitiesCombiner(beam.CombineFn):
  """Gathers (label, probabilities, near-duplicate group) of every example, for the calibration
  metrics and the bootstrap; with several models, each example's probabilities of every model
  side by side, then the `extra_outputs` ({output name: width}) of the first model. An eval split
  is at most tens of thousands of images: a few floats and a short name each."""

  def __init__(self, key, eval_config, example_weighted: bool,
               model_names: Optional[List[str]] = None,
               extra_outputs: Optional[Dict[str, int]] = None):
    self._key = key
    self._eval_config = eval_config
    self._example_weighted = example_weighted
    self._model_names = model_names or [key.model_name]
    self._extra_outputs = dict(extra_outputs or {})

  def create_accumulator(self):
    return [], [], []

  def add_input(self, accumulator, element):
    features_of_example = element.features or {}
    group = features_of_example.get(features.DUPLICATE_GROUP_KEY)
    group = (np.ravel(group)[0] if group is not None and np.size(group)
             else str(len(accumulator[0])).encode())  # no group: each image on its own
    by_model = [metric_util.to_label_prediction_example_weight(
        element, eval_config=self._eval_config, model_name=model_name,
        output_name=self._key.output_name, example_weighted=self._example_weighted,
        flatten=False, require_single_example_weight=True) for model_name in self._model_names]
    extra = [_model_output(element, self._model_names[0], name, width)
             for name, width in self._extra_outputs.items()]
    for index, predictions in enumerate(zip(*by_model)):
      label = predictions[0][0]
      accumulator[0].append(int(np.argmax(label)) if np.size(label) > 1 else int(label))
      accumulator[1].append(np.concatenate(
          [np.ravel(np.asarray(probabilities, np.float64)) for _, probabilities, _ in predictions]
          + [rows[min(index, len(rows) - 1)] for rows in extra]))
      accumulator[2].append(group.decode() if isinstance(group, bytes) else str(group))
    return accumulator

  def merge_accumulators(self, accumulators):
    labels, probabilities, groups = [], [], []
    for more_labels, more_probabilities, more_groups in accumulators:
      labels += more_labels
      probabilities += more_probabilities
      groups += more_groups
    return labels, probabilities, groups

  def extract_output(self, accumulator):
    return {self._key: accumulator}


def _from_probabilities(name: str, statistic, eval_config=None, model_names=None,
                        output_names=None, example_weighted: bool = False,
                        result_names: Optional[List[str]] = None, paired: bool = False,
                        extra_outputs: Optional[Dict[str, int]] = None):
  """`statistic(probabilities [n, classes], labels [n], groups [n])` keyed as `name`, or, for a
  statistic that returns a dict, keyed by its `result_names`. `paired`: each candidate model
  against the baseline, their probabilities side by side ([n, 2 × classes]), keyed as TFMA's
  differences from the baseline; nothing when there is no baseline. `extra_outputs` ({name:
  width}): the model's other outputs, appended to each row."""
  baseline_spec = model_util.get_baseline_model_spec(eval_config) if eval_config else None
  if paired and baseline_spec is None:
    return []
  computations = []
  for model_name in model_names or ['']:
    if paired and model_name == baseline_spec.name:
      continue
    for output_name in output_names or ['']:
      gathered = metric_types.MetricKey(name='_gathered_' + name, model_name=model_name,
                                        output_name=output_name,
                                        example_weighted=example_weighted, is_diff=paired)
      keys = {entry: metric_types.MetricKey(name=entry, model_name=model_name,
                                            output_name=output_name,
                                            example_weighted=example_weighted, is_diff=paired)
              for entry in result_names or [name]}
      computations.append(metric_types.MetricComputation(
          keys=[gathered],
          preprocessors=[metric_types.FeaturePreprocessor(
              feature_keys=[features.DUPLICATE_GROUP_KEY])],
          combiner=_ProbabilitiesCombiner(
              gathered, eval_config, example_weighted,
              [model_name, baseline_spec.name] if paired else None, extra_outputs)))

      def result(metrics, keys=keys, gathered=gathered):
        labels, probabilities, groups = metrics[gathered]
        values = (statistic(np.stack(probabilities), np.asarray(labels), groups) if labels
                  else {})
        if not isinstance(values, dict):
          values = {name: values}
        return {key: values.get(entry, float('nan')) for entry, key in keys.items()}

      computations.append(metric_types.DerivedMetricComputation(keys=list(keys.values()),
                                                                result=result))
  return computations


def _expected_calibration_error_computations(name: str, eval_config=None, model_names=None,
                                             output_names=None, example_weighted: bool = False):
  return _from_probabilities(
      name, lambda probabilities, labels, _: calibration.expected_calibration_error(
          probabilities, labels), eval_config, model_names, output_names, example_weighted)


def _brier_score_computations(name: str, eval_config=None, model_names=None, output_names=None,
                              example_weighted: bool = False):
  return _from_probabilities(
      name, lambda probabilities, labels, _: calibration.brier_score(probabilities, labels),
      eval_config, model_names, output_names, example_weighted)


def _class_precision_recall_computations(name: str, eval_config=None, model_names=None,
                                         output_names=None, example_weighted: bool = False):
  return _from_confusion_matrix(name, class_precision_recall, eval_config, model_names,
                                output_names, example_weighted)


class MacroF1(tfma.metrics.Metric):
  """Mean over the classes of F1, each image predicted as its most probable class."""

  def __init__(self, name: str = MACRO_F1, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_macro_f1_computations, name=name)


class MalignantRecall(tfma.metrics.Metric):
  """Share of malignant images whose most probable class is malignant."""

  def __init__(self, name: str = MALIGNANT_RECALL, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_malignant_recall_computations, name=name)


class ClassPrecisionRecall(tfma.metrics.Metric):
  """Precision and recall of each class, each image predicted as its most probable class."""

  def __init__(self, name: str = 'class_precision_recall', code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_class_precision_recall_computations, name=name)


class MalignantVersusRest(tfma.metrics.Metric):
  """Specificity, PPV and NPV of the malignant decision against the other two classes."""

  def __init__(self, name: str = 'malignant_versus_rest', code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_malignant_versus_rest_computations, name=name)


class ExpectedCalibrationError(tfma.metrics.Metric):
  """Σ over 10 confidence bins of |accuracy − mean confidence| × the bin's share of images."""

  def __init__(self, name: str = EXPECTED_CALIBRATION_ERROR, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_expected_calibration_error_computations, name=name)


class BrierScore(tfma.metrics.Metric):
  """Mean over images of Σ over classes of (probability − one-hot label)²."""

  def __init__(self, name: str = BRIER_SCORE, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_brier_score_computations, name=name)


class BootstrapIntervals(tfma.metrics.Metric):
  """95 % bootstrap intervals (see the module docstring) of the `statistics` of this output:
  'probabilities' (accuracy, macro-F1, macro AUC) or 'decisions' (malignant sensitivity and
  specificity at the operating point)."""

  def __init__(self, name: str = 'bootstrap_intervals', statistics: str = 'probabilities',
               draws: int = 1000, seed: int = 0, confidence: float = 0.95,
               code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_bootstrap_computations, name=name, statistics=statistics, draws=draws,
                     seed=seed, confidence=confidence)


_INTERVAL_STATISTICS = {
    'probabilities': (ACCURACY, MACRO_F1, MACRO_AUC, EXPECTED_CALIBRATION_ERROR),
    'decisions': (MALIGNANT_SENSITIVITY, 'malignant_specificity'),
    'paired': (ACCURACY_VERSUS_BASELINE,),
    'review': REVIEW_STATISTICS,
}
# Statistics whose metric gives the estimate beside its interval's ends.
_WITH_ESTIMATE = ('paired', 'review')


def _interval_ends(statistics: str, draws: int, seed: int, confidence: float):
  """statistic(probabilities, labels, groups) → {'<statistic>_lower': ..., '_upper': ...}; for
  'paired', the estimate too."""

  def ends(probabilities, labels, groups):
    found = bootstrap_intervals(STATISTICS[statistics], labels, probabilities, groups, draws,
                                seed, confidence)
    values = (dict(STATISTICS[statistics](labels, probabilities)) if statistics in _WITH_ESTIMATE
              else {})
    for statistic, (lower, upper) in found.items():
      values[statistic + LOWER], values[statistic + UPPER] = lower, upper
    return values

  return ends


def _bootstrap_computations(name: str, statistics: str = 'probabilities', draws: int = 1000,
                            seed: int = 0, confidence: float = 0.95, eval_config=None,
                            model_names=None, output_names=None, example_weighted: bool = False):
  return _from_probabilities(name, _interval_ends(statistics, draws, seed, confidence),
                             eval_config, model_names, output_names, example_weighted,
                             result_names=[entry + end for entry in _INTERVAL_STATISTICS[statistics]
                                           for end in (LOWER, UPPER)])


class BootstrapBound(tfma.metrics.Metric):
  """One end of a 95 % bootstrap interval, as a metric of its own so that a gate can read it:
  `name` is the statistic and the end ('sparse_categorical_accuracy_lower',
  'expected_calibration_error_upper', 'malignant_sensitivity_lower'), `statistics` as
  BootstrapIntervals'. The same seeded draws give the same ends as BootstrapIntervals."""

  def __init__(self, name: str, statistics: str = 'probabilities', draws: int = 1000,
               seed: int = 0, confidence: float = 0.95, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_bound_computations, name=name, statistics=statistics, draws=draws,
                     seed=seed, confidence=confidence)


def _bound_computations(name: str, statistics: str = 'probabilities', draws: int = 1000,
                        seed: int = 0, confidence: float = 0.95, eval_config=None,
                        model_names=None, output_names=None, example_weighted: bool = False):
  ends = _interval_ends(statistics, draws, seed, confidence)
  # NaN where the statistic has no interval: in a slice without malignant images, sensitivity.
  return _from_probabilities(
      name, lambda probabilities, labels, groups: ends(probabilities, labels, groups).get(
          name, float('nan')),
      eval_config, model_names, output_names, example_weighted)


class AccuracyVersusBaseline(tfma.metrics.Metric):
  """The candidate's accuracy less the baseline's on the same eval images, with its 95 % paired
  bootstrap interval (each image's two predictions resampled together, whole near-duplicate
  groups): TFMA differences from the baseline ('accuracy_versus_baseline', '_lower', '_upper'),
  computed only when the Evaluator has a baseline. The non-inferiority gate reads '_lower', the
  metric's name."""

  def __init__(self, name: str = ACCURACY_VERSUS_BASELINE + LOWER, draws: int = 1000,
               seed: int = 0, confidence: float = 0.95, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_versus_baseline_computations, name=name, draws=draws, seed=seed,
                     confidence=confidence)


def _versus_baseline_computations(name: str, draws: int = 1000, seed: int = 0,
                                  confidence: float = 0.95, eval_config=None, model_names=None,
                                  output_names=None, example_weighted: bool = False):
  return _from_probabilities(
      name, _interval_ends('paired', draws, seed, confidence), eval_config, model_names,
      output_names, example_weighted,
      result_names=[ACCURACY_VERSUS_BASELINE + end for end in ('', LOWER, UPPER)], paired=True)


class DecisionReview(tfma.metrics.Metric):
  """On the `operating_point` output, beside the model's probabilities and review flag: the
  decisions' specificity regret, the share of eval images flagged for review, and the malignant
  sensitivity and specificity of the decisions not flagged
  (evaluation/classification_statistics.py), each with its 95 % bootstrap interval
  ('<statistic>', '_lower', '_upper')."""

  def __init__(self, name: str = 'decision_review', draws: int = 1000, seed: int = 0,
               confidence: float = 0.95, code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_decision_review_computations, name=name, draws=draws, seed=seed,
                     confidence=confidence)


def _decision_review_computations(name: str, draws: int = 1000, seed: int = 0,
                                  confidence: float = 0.95, eval_config=None, model_names=None,
                                  output_names=None, example_weighted: bool = False):
  return _from_probabilities(
      name, _interval_ends('review', draws, seed, confidence), eval_config, model_names,
      output_names, example_weighted,
      result_names=[statistic + end for statistic in REVIEW_STATISTICS
                    for end in ('', LOWER, UPPER)],
      extra_outputs={PROBABILITIES_OUTPUT: len(features.LABEL_NAMES), REVIEW_OUTPUT: 1})


class ReliabilityDiagram(tfma.metrics.Metric):
  """[bins, 5] array: low, high, images, mean confidence, accuracy of each confidence bin."""

  def __init__(self, name: str = 'reliability_diagram', code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_reliability_computations, name=name)


def _reliability_computations(name: str, eval_config=None, model_names=None, output_names=None,
                              example_weighted: bool = False):

  def table(probabilities, labels, _):
    return np.array([[row['low'], row['high'], row['count'], row['confidence'], row['accuracy']]
                     for row in calibration.reliability_table(probabilities, labels)])

  return _from_probabilities(name, table, eval_config, model_names, output_names,
                             example_weighted)


ROC_THRESHOLDS = np.linspace(1.0, 0.0, 201)


class MalignantRoc(tfma.metrics.Metric):
  """[201, 3] array: threshold, false-positive rate, true-positive rate of malignant against the
  other classes, at thresholds 1, 0.995, ..., 0. A fixed grid, so that TFMA can subtract a
  baseline model's curve from the candidate's as it does for every metric."""

  def __init__(self, name: str = 'malignant_roc', code_version: str = ''):
    del code_version  # see the module docstring
    super().__init__(_roc_computations, name=name)


def _roc_computations(name: str, eval_config=None, model_names=None, output_names=None,
                      example_weighted: bool = False):

  def curve(probabilities, labels, _):
    is_malignant = labels == features.MALIGNANT_LABEL
    called = probabilities[:, features.MALIGNANT_LABEL][None, :] >= ROC_THRESHOLDS[:, None]
    with np.errstate(invalid='ignore', divide='ignore'):
      true_positive = called[:, is_malignant].sum(axis=1) / is_malignant.sum()
      false_positive = called[:, ~is_malignant].sum(axis=1) / (~is_malignant).sum()
    return np.stack([ROC_THRESHOLDS, false_positive, true_positive], axis=1)

  return _from_probabilities(name, curve, eval_config, model_names, output_names,
                             example_weighted)
