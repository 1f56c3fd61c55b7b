"""TFMA metrics computed from the argmax confusion matrix, the way a clinician reads a
classifier (each image gets its most probable class):

- `MacroF1`: the mean over the classes of F1;
- `MalignantRecall`: the share of malignant images whose most probable class is malignant;
- `ClassPrecisionRecall`: precision and recall of each class (`precision_benign`, ...).

Both are derived from TFMA's own multi-class confusion matrix (the one behind
MultiClassConfusionMatrixPlot), and both are keyed without a sub-key, so a blessing threshold
can be attached to them. TFMA's built-in per-class metrics with `top_k=1` are no substitute: a
threshold key never carries `top_k`, so a gate cannot find them, and for a class that is never
the most probable they report a recall of 1.0 (a model that never says "malignant" would pass).
The Evaluator finds these metrics by module path (`pipeline.tfma_metrics`), so Beam workers
import them like the model code. Each takes a `code_version` that it ignores: the pipeline sets it
to a fingerprint of this module, so that the eval config, and with it TFX's cache key, changes
when these metrics do.
"""

from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as matrices

from models import features
from pipeline.eval_config import MACRO_F1, MALIGNANT_RECALL

_MATRIX_NAME = '_argmax_confusion_matrix'


def confusion_counts(matrix_entries: Dict, num_classes: int) -> np.ndarray:
  """counts[true class][predicted class] from a TFMA matrix at one threshold."""
  counts = np.zeros((num_classes, num_classes))
  for entry, weight in matrix_entries.items():
    if 0 <= entry.actual_class_id < num_classes and 0 <= entry.predicted_class_id < num_classes:
      counts[entry.actual_class_id, entry.predicted_class_id] += weight
  return counts


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
