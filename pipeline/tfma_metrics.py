"""TFMA metrics TFMA lacks in a form it can gate on, where a class counts as predicted when it is
the most probable one (as the confusion matrix counts):

- `MacroF1`: the mean of the per-class F1 scores;
- `MalignantRecall`: the recall of the malignant class, under a key without a sub-key.

TFMA computes F1 and recall with `top_k=1` per class, but it can neither macro-average such
metrics nor attach a threshold to them (threshold keys never carry `top_k`). These metrics build
TFMA's own per-class metrics and derive one plain-keyed value from them. The Evaluator finds them
by module path (`pipeline.tfma_metrics`), so Beam workers import them like the model code.
"""

from typing import Callable, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from models import features


def _mean_of_top_class_metrics(name: str, metric_class: Callable[..., tfma.metrics.Metric],
                               class_ids: Sequence[int], eval_config=None,
                               model_names: Optional[List[str]] = None,
                               output_names: Optional[List[str]] = None,
                               example_weighted: bool = False):
  """TFMA's `metric_class(top_k=1, class_id=c)` for each class id, and their mean as `name`."""
  computations = []
  keys = []
  for model_name in model_names or ['']:
    for output_name in output_names or ['']:
      class_keys = []
      for class_id in class_ids:
        per_class = metric_class(top_k=1, class_id=class_id,
                                 name=f'_{name}_{features.LABEL_NAMES[class_id]}')
        class_computations = per_class.computations(
            eval_config=eval_config, model_names=[model_name], output_names=[output_name],
            example_weighted=example_weighted)
        computations.extend(class_computations)
        class_keys.extend(key for computation in class_computations
                          for key in computation.keys if key.name == per_class.name)
      key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                   example_weighted=example_weighted)
      keys.append((key, class_keys))

  def result(metrics):
    return {key: sum(float(metrics[class_key]) for class_key in class_keys) / len(class_keys)
            for key, class_keys in keys}

  computations.append(metric_types.DerivedMetricComputation(
      keys=[key for key, _ in keys], result=result))
  return computations


def _macro_f1_computations(name: str, eval_config=None, model_names=None, output_names=None,
                           example_weighted: bool = False):
  return _mean_of_top_class_metrics(name, tfma.metrics.F1Score,
                                    range(len(features.LABEL_NAMES)), eval_config,
                                    model_names, output_names, example_weighted)


def _malignant_recall_computations(name: str, eval_config=None, model_names=None,
                                   output_names=None, example_weighted: bool = False):
  return _mean_of_top_class_metrics(name, tfma.metrics.Recall, [features.MALIGNANT_LABEL],
                                    eval_config, model_names, output_names, example_weighted)


class MacroF1(tfma.metrics.Metric):
  """Mean over the classes of F1, each class predicted when it is the most probable."""

  def __init__(self, name: str = 'macro_f1'):
    super().__init__(_macro_f1_computations, name=name)


class MalignantRecall(tfma.metrics.Metric):
  """Share of malignant examples whose most probable class is malignant."""

  def __init__(self, name: str = 'malignant_recall'):
    super().__init__(_malignant_recall_computations, name=name)
