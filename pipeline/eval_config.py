"""The Evaluator's TFMA configuration: the metrics it reports and the blessing gate.

Metrics are computed overall and sliced by true label. The thresholds are attached to the
overall slice only: TFMA applies a plain `threshold` to every slice, so a weak class slice would
otherwise veto the blessing on its own.
"""

import tensorflow_model_analysis as tfma

from models import features

ACCURACY_METRIC = 'SparseCategoricalAccuracy'


def build_eval_config(min_accuracy: float, max_accuracy_drop: float = 0.0) -> tfma.EvalConfig:
  """Blessed when overall accuracy ≥ min_accuracy and it is no worse than the baseline's."""
  overall = tfma.SlicingSpec()
  accuracy_gate = tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(lower_bound={'value': min_accuracy}),
          # A tiny epsilon: TFMA's comparison is strict, "no regression" is not.
          change_threshold=tfma.GenericChangeThreshold(
              direction=tfma.MetricDirection.HIGHER_IS_BETTER,
              absolute={'value': -max_accuracy_drop - 1e-10})))
  class_ids = list(range(len(features.LABEL_NAMES)))
  return tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(signature_name='from_examples',
                         label_key=features.LABEL_KEY,
                         prediction_key='probabilities',
                         preprocessing_function_names=['transform_features']),
      ],
      slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name='ExampleCount'),
              tfma.MetricConfig(class_name=ACCURACY_METRIC,
                                per_slice_thresholds=[accuracy_gate]),
              tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
          ]),
          # One-vs-rest, per class. Precision and recall count a class as predicted when it is
          # the most probable one (top 1), as the confusion matrix does, not when p > 0.5.
          tfma.MetricsSpec(
              metrics=[tfma.MetricConfig(class_name='Precision', config='{"top_k": 1}'),
                       tfma.MetricConfig(class_name='Recall', config='{"top_k": 1}'),
                       tfma.MetricConfig(class_name='AUC')],
              binarize=tfma.BinarizationOptions(class_ids={'values': class_ids})),
      ])
