"""The Evaluator's TFMA configuration: the metrics it reports and the blessing gate.

The model's `from_examples` signature has three outputs, each evaluated against the label:
`probabilities` (calibrated): accuracy, macro-F1, one-vs-rest AUC per class and their macro
average, per-class precision and recall, malignant recall, the confusion matrix, expected
calibration error and Brier score; `operating_point` (the decision at the malignant threshold,
one-hot): accuracy, malignant sensitivity, specificity, PPV, NPV and the confusion matrix at the
operating point; `uncalibrated_probabilities`: calibration error and Brier score before
calibration. Overall and sliced by true label; overall, 95 % bootstrap intervals of accuracy,
macro-F1, macro AUC, and of sensitivity and specificity at the operating point.

Blessed when overall accuracy ≥ `min_accuracy`, malignant sensitivity at the operating point ≥
`min_malignant_recall`, expected calibration error ≤ `max_calibration_error`, and accuracy is at
most `max_accuracy_drop` below the baseline model's. The thresholds are attached to the overall
slice only: TFMA applies a plain `threshold` to every slice, so a weak class slice would
otherwise veto the blessing on its own.
"""

import json

import tensorflow_model_analysis as tfma

from models import features

ACCURACY_METRIC = 'SparseCategoricalAccuracy'
ACCURACY = 'sparse_categorical_accuracy'
# Names of the metrics in pipeline/tfma_metrics.py.
MALIGNANT_RECALL = 'malignant_recall'
MALIGNANT_SENSITIVITY = 'malignant_sensitivity'  # malignant recall at the operating point
MACRO_F1 = 'macro_f1'
MACRO_AUC = 'macro_auc'
EXPECTED_CALIBRATION_ERROR = 'expected_calibration_error'
BRIER_SCORE = 'brier_score'
UNCALIBRATED = '_uncalibrated'  # suffix of the metrics of the uncalibrated probabilities
ACCURACY_AT_OPERATING_POINT = 'accuracy_at_operating_point'
CUSTOM_METRICS_MODULE = 'pipeline.tfma_metrics'  # imported by module path on Beam workers
# The outputs of the model's from_examples signature that are evaluated.
PROBABILITIES_OUTPUT = 'probabilities'
OPERATING_POINT_OUTPUT = 'operating_point'
UNCALIBRATED_OUTPUT = 'uncalibrated_probabilities'


def _minimum(value: float, overall: tfma.SlicingSpec) -> tfma.PerSliceMetricThreshold:
  return tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(lower_bound={'value': value})))


def _custom_metric(class_name: str, metrics_code_version: str, name: str = '',
                   statistics: str = '', **kwargs) -> tfma.MetricConfig:
  """One of pipeline/tfma_metrics.py's metrics, its code's fingerprint in its config."""
  config = {'code_version': metrics_code_version, **({'name': name} if name else {}),
            **({'statistics': statistics} if statistics else {})}
  return tfma.MetricConfig(class_name=class_name, module=CUSTOM_METRICS_MODULE,
                           config=json.dumps(config), **kwargs)


def _maximum(value: float, overall: tfma.SlicingSpec) -> tfma.PerSliceMetricThreshold:
  return tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(upper_bound={'value': value})))


def build_eval_config(min_accuracy: float, min_malignant_recall: float = 0.0,
                      max_accuracy_drop: float = 0.0,
                      max_calibration_error: float = 1.0,
                      metrics_code_version: str = '') -> tfma.EvalConfig:
  """The metrics and the gate of the module docstring. `metrics_code_version` is the fingerprint
  of the custom metrics' code (pipeline/code_version.py), so that a change to them changes this
  configuration and the Evaluator runs again."""
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
  outputs = (PROBABILITIES_OUTPUT, OPERATING_POINT_OUTPUT, UNCALIBRATED_OUTPUT)

  def custom(class_name: str, **kwargs) -> tfma.MetricConfig:
    return _custom_metric(class_name, metrics_code_version, **kwargs)

  return tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(signature_name='from_examples',
                         label_keys={output: features.LABEL_KEY for output in outputs},
                         prediction_keys={output: output for output in outputs},
                         preprocessing_function_names=['transform_features']),
      ],
      slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])],
      metrics_specs=[
          tfma.MetricsSpec(output_names=[PROBABILITIES_OUTPUT], metrics=[
              tfma.MetricConfig(class_name='ExampleCount'),
              tfma.MetricConfig(class_name=ACCURACY_METRIC,
                                per_slice_thresholds=[accuracy_gate]),
              tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
              # From the argmax confusion matrix: a class counts as predicted when it is the
              # most probable one, as the confusion matrix counts, not when p > 0.5.
              custom('ClassPrecisionRecall'),
              custom('MacroF1'),
              custom('MalignantRecall'),
              custom('ExpectedCalibrationError',
                     per_slice_thresholds=[_maximum(max_calibration_error, overall)]),
              custom('BrierScore'),
              custom('BootstrapIntervals', name='intervals_of_probabilities'),
              custom('ReliabilityDiagram'),
              custom('MalignantRoc'),
          ]),
          # One-vs-rest AUC per class.
          tfma.MetricsSpec(
              output_names=[PROBABILITIES_OUTPUT],
              metrics=[tfma.MetricConfig(class_name='AUC')],
              binarize=tfma.BinarizationOptions(class_ids={'values': class_ids})),
          # One-vs-rest AUC averaged over the classes.
          tfma.MetricsSpec(
              output_names=[PROBABILITIES_OUTPUT],
              metrics=[tfma.MetricConfig(class_name='AUC', config=f'{{"name": "{MACRO_AUC}"}}')],
              binarize=tfma.BinarizationOptions(class_ids={'values': class_ids}),
              aggregate=tfma.AggregationOptions(
                  macro_average=True, class_weights={class_id: 1.0 for class_id in class_ids})),
          # The decisions the served model makes, at its operating point.
          tfma.MetricsSpec(output_names=[OPERATING_POINT_OUTPUT], metrics=[
              tfma.MetricConfig(class_name=ACCURACY_METRIC,
                                config=f'{{"name": "{ACCURACY_AT_OPERATING_POINT}"}}'),
              tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
              # The screening question: of the malignant cases, how many are called malignant.
              custom('MalignantRecall', name=MALIGNANT_SENSITIVITY,
                     per_slice_thresholds=[_minimum(min_malignant_recall, overall)]),
              custom('MalignantVersusRest'),
              custom('BootstrapIntervals', name='intervals_of_decisions',
                     statistics='decisions'),
          ]),
          tfma.MetricsSpec(output_names=[UNCALIBRATED_OUTPUT], metrics=[
              custom('ExpectedCalibrationError', name=EXPECTED_CALIBRATION_ERROR + UNCALIBRATED),
              custom('BrierScore', name=BRIER_SCORE + UNCALIBRATED),
              custom('ReliabilityDiagram', name='reliability_diagram' + UNCALIBRATED),
          ]),
      ])
