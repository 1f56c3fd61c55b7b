"""The Evaluator's TFMA configuration: the metrics it reports and the blessing gate.

Reported: accuracy, macro-F1 and one-vs-rest macro AUC, per-class precision, recall and AUC,
malignant recall under its own name, and the confusion matrix; overall and sliced by true label.
Blessed when overall accuracy and malignant recall reach their minimums and accuracy is no worse
than the baseline model's. The thresholds are attached to the overall slice only: TFMA applies a
plain `threshold` to every slice, so a weak class slice would otherwise veto the blessing on its
own.
"""

import json

import tensorflow_model_analysis as tfma

from models import features

ACCURACY_METRIC = 'SparseCategoricalAccuracy'
MALIGNANT_RECALL = 'malignant_recall'  # names of the metrics in pipeline/tfma_metrics.py
MACRO_F1 = 'macro_f1'
MACRO_AUC = 'macro_auc'
CUSTOM_METRICS_MODULE = 'pipeline.tfma_metrics'  # imported by module path on Beam workers


def _minimum(value: float, overall: tfma.SlicingSpec) -> tfma.PerSliceMetricThreshold:
  return tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(lower_bound={'value': value})))


def _custom_metric(class_name: str, metrics_code_version: str, **kwargs) -> tfma.MetricConfig:
  """One of pipeline/tfma_metrics.py's metrics, its code's fingerprint in its config."""
  return tfma.MetricConfig(class_name=class_name, module=CUSTOM_METRICS_MODULE,
                           config=json.dumps({'code_version': metrics_code_version}), **kwargs)


def build_eval_config(min_accuracy: float, min_malignant_recall: float = 0.0,
                      max_accuracy_drop: float = 0.0,
                      metrics_code_version: str = '') -> tfma.EvalConfig:
  """Blessed when overall accuracy ≥ min_accuracy, malignant recall ≥ min_malignant_recall
  and accuracy is at most `max_accuracy_drop` below the baseline's (0: no regression).
  `metrics_code_version` is the fingerprint of the custom metrics' code (pipeline/code_version.py),
  so that a change to them changes this configuration and the Evaluator runs again."""
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
          # One-vs-rest AUC per class.
          tfma.MetricsSpec(
              metrics=[tfma.MetricConfig(class_name='AUC')],
              binarize=tfma.BinarizationOptions(class_ids={'values': class_ids})),
          # One-vs-rest AUC averaged over the classes.
          tfma.MetricsSpec(
              metrics=[tfma.MetricConfig(class_name='AUC', config=f'{{"name": "{MACRO_AUC}"}}')],
              binarize=tfma.BinarizationOptions(class_ids={'values': class_ids}),
              aggregate=tfma.AggregationOptions(
                  macro_average=True, class_weights={class_id: 1.0 for class_id in class_ids})),
          tfma.MetricsSpec(metrics=[
              # From the argmax confusion matrix: a class counts as predicted when it is the
              # most probable one, as the confusion matrix counts, not when p > 0.5.
              _custom_metric('ClassPrecisionRecall', metrics_code_version),
              _custom_metric('MacroF1', metrics_code_version),
              # The screening question on its own: of the malignant cases, how many are found.
              _custom_metric('MalignantRecall', metrics_code_version,
                             per_slice_thresholds=[_minimum(min_malignant_recall, overall)]),
          ]),
      ])
