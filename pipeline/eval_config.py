"""The Evaluator's TFMA configuration: the metrics it reports and the blessing gate.

The model's `from_examples` signature has three outputs, each evaluated against the label:
`probabilities` (calibrated): accuracy, macro-F1, one-vs-rest AUC per class and their macro
average, per-class precision and recall, malignant recall, the confusion matrix, expected
calibration error and Brier score; `operating_point` (the decision at the malignant threshold,
one-hot): accuracy, malignant sensitivity, specificity, PPV, NPV and the confusion matrix at the
operating point, and with the model's `review` flag the specificity regret, the share flagged
for review and the unflagged decisions' sensitivity and specificity, with intervals; `uncalibrated_probabilities`: calibration error and Brier score before
calibration. Overall and sliced by true label; overall, 95 % bootstrap intervals of accuracy,
macro-F1, macro AUC, and of sensitivity and specificity at the operating point.

Blessed when overall accuracy ≥ `min_accuracy`, malignant sensitivity at the operating point ≥
`min_malignant_recall`, expected calibration error ≤ `max_calibration_error`, and, once a model
has been blessed, the candidate is not worse than it by more than `non_inferiority_margin`: both
models score the same eval images, and the lower end of the 95 % bootstrap interval of (candidate
accuracy − baseline accuracy) must be at least −margin (a paired non-inferiority test). With
`gate_on_bounds`, the three absolute gates read the end of the 95 % bootstrap interval that
favours the model least (the lower end of accuracy and sensitivity, the upper end of the
calibration error) instead of the estimate. The thresholds are attached to the overall slice
only: TFMA applies a plain `threshold` to every slice, so a weak class slice would otherwise veto
the blessing on its own.

The default margin (pipeline/configs.py), 0.10: on BUSI's eval split (122 images) two equally good
models that disagree on one image in ten have a paired difference with a standard error of about
0.029, so the lower end of its interval sits about 0.056 below the difference. With a margin of 0.10
such a retrain is blessed with P ≈ 0.94 (0.05 would bless it less than half the time), and a
candidate 0.10 worse (disagreeing on more images) passes with P ≈ 0.03. docs/pipeline.md shows the
arithmetic; a larger eval split affords a smaller margin.
"""

import json

import tensorflow_model_analysis as tfma

from evaluation.metric_names import (ACCURACY, ACCURACY_AT_OPERATING_POINT, ACCURACY_METRIC,
                                     ACCURACY_VERSUS_BASELINE, BRIER_SCORE,
                                     EXPECTED_CALIBRATION_ERROR, LOWER, MACRO_AUC,
                                     MALIGNANT_SENSITIVITY, OPERATING_POINT_OUTPUT,
                                     PROBABILITIES_OUTPUT, UNCALIBRATED, UNCALIBRATED_OUTPUT,
                                     UPPER)
from models import features

CUSTOM_METRICS_MODULE = 'evaluation.tfma_metrics'  # imported by module path on Beam workers


def _minimum(value: float, overall: tfma.SlicingSpec) -> tfma.PerSliceMetricThreshold:
  return tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(lower_bound={'value': value})))


def _custom_metric(class_name: str, metrics_code_version: str, name: str = '',
                   statistics: str = '', **kwargs) -> tfma.MetricConfig:
  """One of evaluation/tfma_metrics.py's metrics, its code's fingerprint in its config."""
  config = {'code_version': metrics_code_version, **({'name': name} if name else {}),
            **({'statistics': statistics} if statistics else {})}
  return tfma.MetricConfig(class_name=class_name, module=CUSTOM_METRICS_MODULE,
                           config=json.dumps(config), **kwargs)


def _maximum(value: float, overall: tfma.SlicingSpec) -> tfma.PerSliceMetricThreshold:
  return tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(upper_bound={'value': value})))


def _no_worse_than_baseline(margin: float, overall: tfma.SlicingSpec
                            ) -> tfma.PerSliceMetricThreshold:
  """A change threshold: TFMA drops it on the first run, when there is no baseline to compare."""
  return tfma.PerSliceMetricThreshold(
      slicing_specs=[overall],
      threshold=tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={'value': -margin})))


def build_eval_config(min_accuracy: float, min_malignant_recall: float = 0.0,
                      non_inferiority_margin: float = 0.10,
                      max_calibration_error: float = 1.0, gate_on_bounds: bool = False,
                      metrics_code_version: str = '') -> tfma.EvalConfig:
  """The metrics and the gate of the module docstring. `metrics_code_version` is the fingerprint
  of the custom metrics' code (pipeline/code_version.py), so that a change to them changes this
  configuration and the Evaluator runs again."""
  overall = tfma.SlicingSpec()
  accuracy_gate = [_minimum(min_accuracy, overall)]
  sensitivity_gate = [_minimum(min_malignant_recall, overall)]
  calibration_gate = [_maximum(max_calibration_error, overall)]

  def custom(class_name: str, **kwargs) -> tfma.MetricConfig:
    return _custom_metric(class_name, metrics_code_version, **kwargs)

  def gate_of_estimate(gate):
    return {} if gate_on_bounds else {'per_slice_thresholds': gate}

  def bound_gates(statistics: str, *gated):
    """With `gate_on_bounds`: one metric per gate, the end of its interval that is gated."""
    return [custom('BootstrapBound', name=name + end, statistics=statistics,
                   per_slice_thresholds=gate)
            for name, end, gate in gated] if gate_on_bounds else []

  class_ids = list(range(len(features.LABEL_NAMES)))
  outputs = (PROBABILITIES_OUTPUT, OPERATING_POINT_OUTPUT, UNCALIBRATED_OUTPUT)

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
              tfma.MetricConfig(class_name=ACCURACY_METRIC, **gate_of_estimate(accuracy_gate)),
              tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
              # From the argmax confusion matrix: a class counts as predicted when it is the
              # most probable one, as the confusion matrix counts, not when p > 0.5.
              custom('ClassPrecisionRecall'),
              custom('MacroF1'),
              custom('MalignantRecall'),
              custom('ExpectedCalibrationError', **gate_of_estimate(calibration_gate)),
              custom('BrierScore'),
              custom('BootstrapIntervals', name='intervals_of_probabilities'),
              *bound_gates('probabilities', (ACCURACY, LOWER, accuracy_gate),
                           (EXPECTED_CALIBRATION_ERROR, UPPER, calibration_gate)),
              # Against the baseline, on the same images: gated on the interval's lower end.
              custom('AccuracyVersusBaseline', name=ACCURACY_VERSUS_BASELINE + LOWER,
                     per_slice_thresholds=[_no_worse_than_baseline(non_inferiority_margin,
                                                                   overall)]),
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
                     **gate_of_estimate(sensitivity_gate)),
              custom('MalignantVersusRest'),
              custom('BootstrapIntervals', name='intervals_of_decisions',
                     statistics='decisions'),
              # The specificity regret and the review flag, with their intervals.
              custom('DecisionReview'),
              *bound_gates('decisions', (MALIGNANT_SENSITIVITY, LOWER, sensitivity_gate)),
          ]),
          tfma.MetricsSpec(output_names=[UNCALIBRATED_OUTPUT], metrics=[
              custom('ExpectedCalibrationError', name=EXPECTED_CALIBRATION_ERROR + UNCALIBRATED),
              custom('BrierScore', name=BRIER_SCORE + UNCALIBRATED),
              custom('ReliabilityDiagram', name='reliability_diagram' + UNCALIBRATED),
          ]),
      ])
