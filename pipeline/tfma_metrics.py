"""A TFMA metric TFMA lacks: macro-F1 where a class counts as predicted when it is the most
probable one (as the confusion matrix counts), the mean of the per-class F1 scores.

TFMA's own macro averaging cannot average metrics computed with `top_k`, so this metric builds
TFMA's F1Score for each class with `top_k=1` and derives the mean from them. The Evaluator finds
it by module path (`pipeline.tfma_metrics`), so Beam workers import it like the model code.
"""

from typing import List, Optional

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from models import features


def _macro_f1_computations(name: str, eval_config=None, model_names: Optional[List[str]] = None,
                           output_names: Optional[List[str]] = None,
                           example_weighted: bool = False):
  computations = []
  keys = []
  for model_name in model_names or ['']:
    for output_name in output_names or ['']:
      class_keys = []
      for class_id in range(len(features.LABEL_NAMES)):
        class_f1 = tfma.metrics.F1Score(top_k=1, class_id=class_id,
                                        name=f'_{name}_{features.LABEL_NAMES[class_id]}')
        class_computations = class_f1.computations(
            eval_config=eval_config, model_names=[model_name], output_names=[output_name],
            example_weighted=example_weighted)
        computations.extend(class_computations)
        class_keys.extend(key for computation in class_computations
                          for key in computation.keys if key.name == class_f1.name)
      key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                   example_weighted=example_weighted)
      keys.append((key, class_keys))

  def result(metrics):
    return {key: sum(float(metrics[class_key]) for class_key in class_keys) / len(class_keys)
            for key, class_keys in keys}

  computations.append(metric_types.DerivedMetricComputation(
      keys=[key for key, _ in keys], result=result))
  return computations


class MacroF1(tfma.metrics.Metric):
  """Mean over the classes of F1, each class predicted when it is the most probable."""

  def __init__(self, name: str = 'macro_f1'):
    super().__init__(_macro_f1_computations, name=name)
