"""The Evaluator's metrics, computed by TFMA itself on predictions whose answers are known."""

import numpy as np
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma

from evaluation import classification_statistics, metric_names, results
from evaluation.classification_statistics import (bootstrap_intervals, paired_statistics,
                                                  probability_statistics)
from models import calibration, features
from pipeline import eval_config


def overall_metrics(labels, probabilities, decisions=None, uncalibrated=None,
                    gate_on_bounds=False) -> dict:
  """The pipeline's metrics of each model output, on data frames instead of a model (TFMA's
  raw-data analysis takes one output at a time, a Beam pipeline each) and without the gate (its
  "no regression" part needs a baseline model). The outputs at the operating point and before
  calibration only when `decisions` or `uncalibrated` are given."""
  outputs = {metric_names.PROBABILITIES_OUTPUT: probabilities}
  if decisions is not None:
    outputs[metric_names.OPERATING_POINT_OUTPUT] = np.eye(3)[np.asarray(decisions)]
  if uncalibrated is not None:
    outputs[metric_names.UNCALIBRATED_OUTPUT] = uncalibrated
  found = {}
  for output, predictions in outputs.items():
    config = eval_config.build_eval_config(min_accuracy=0.0, gate_on_bounds=gate_on_bounds)
    specs = [spec for spec in config.metrics_specs if list(spec.output_names) == [output]]
    del config.metrics_specs[:]
    for spec in specs:
      spec.ClearField('output_names')
      for metric in spec.metrics:
        metric.ClearField('per_slice_thresholds')
    config.metrics_specs.extend(specs)
    del config.model_specs[:]
    config.model_specs.add(label_key='label', prediction_key='prediction')
    frame = pd.DataFrame({'label': labels, 'prediction': [list(row) for row in predictions]})
    # Read back by the summary's own reader, as the summary, inspector and report do.
    found.update(results.overall_metrics(tfma.analyze_raw_data(frame, config)))
  return found


def test_the_gate_finds_its_metrics():
  # Threshold keys never carry top_k, so a gate on a top_k metric would fail as "not found".
  config = eval_config.build_eval_config(min_accuracy=0.5, min_malignant_recall=0.9,
                                         max_calibration_error=0.1)
  thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs)
  keys = {key.name: key for key in thresholds}
  # The same keys, without a sub-key, that the metrics report (see the tests below).
  assert keys[metric_names.MALIGNANT_SENSITIVITY].sub_key is None
  assert keys[metric_names.MALIGNANT_SENSITIVITY].output_name == 'operating_point'
  assert keys[metric_names.EXPECTED_CALIBRATION_ERROR].output_name == 'probabilities'
  # The non-inferiority gate reads the difference from the baseline, TFMA's diff key.
  versus_baseline = metric_names.ACCURACY_VERSUS_BASELINE + '_lower'
  assert keys[versus_baseline].is_diff
  assert set(keys) == {metric_names.MALIGNANT_SENSITIVITY, metric_names.ACCURACY,
                       metric_names.EXPECTED_CALIBRATION_ERROR, versus_baseline}
  # Without a baseline (the first run) TFMA drops change thresholds: only the absolute gates.
  first_run = tfma.utils.update_eval_config_with_defaults(config, has_baseline=False,
                                                        rubber_stamp=True)
  first_run_keys = tfma.metrics.metric_thresholds_from_metrics_specs(first_run.metrics_specs)
  assert versus_baseline not in {key.name for key in first_run_keys}


def test_the_gates_on_bounds_read_the_interval_ends_instead_of_the_estimates():
  config = eval_config.build_eval_config(min_accuracy=0.5, min_malignant_recall=0.9,
                                         max_calibration_error=0.1, gate_on_bounds=True)
  thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs)
  bounds = {key.name: threshold[0][1] for key, threshold in thresholds.items()
            if not key.is_diff}
  assert set(bounds) == {metric_names.ACCURACY + '_lower',
                         metric_names.MALIGNANT_SENSITIVITY + '_lower',
                         metric_names.EXPECTED_CALIBRATION_ERROR + '_upper'}
  assert bounds[metric_names.ACCURACY + '_lower'].lower_bound.value == 0.5
  assert bounds[metric_names.EXPECTED_CALIBRATION_ERROR + '_upper'].upper_bound.value == 0.1


def test_macro_f1_malignant_recall_and_macro_auc():
  labels = [0, 0, 1, 1, 2, 2]
  probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.2, 0.7, 0.1],
                            [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]])
  metrics = overall_metrics(labels, probabilities)
  # Argmax predictions 0,1,1,0,2,2: F1 is 0.5 for classes 0 and 1, 1.0 for class 2.
  assert abs(metrics[metric_names.MACRO_F1] - 2 / 3) < 1e-6
  assert abs(metrics[metric_names.MALIGNANT_RECALL] - 0.5) < 1e-6
  assert abs(metrics['precision_benign'] - 0.5) < 1e-6
  assert metrics['recall_normal'] == 1.0
  aucs = [metrics[f'auc/{name}'] for name in features.LABEL_NAMES]
  assert abs(metrics[metric_names.MACRO_AUC] - np.mean(aucs)) < 1e-6
  assert abs(metrics['sparse_categorical_accuracy'] - 4 / 6) < 1e-6


def test_a_class_never_predicted_has_recall_zero():
  # Every image called normal: TFMA's own top_k recall reports 1.0 for all three classes here.
  probabilities = np.tile([0.28, 0.22, 0.50], (6, 1))
  metrics = overall_metrics([0, 0, 1, 1, 2, 2], probabilities)
  assert metrics[metric_names.MALIGNANT_RECALL] == 0.0
  assert metrics['recall_benign'] == 0.0 and metrics['recall_normal'] == 1.0
  assert abs(metrics['precision_normal'] - 1 / 3) < 1e-6
  assert abs(metrics[metric_names.MACRO_F1] - (0 + 0 + 0.5) / 3) < 1e-6


def test_metrics_at_the_operating_point_and_of_calibration():
  labels = [1, 1, 1, 1, 0, 0, 2, 2]
  probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1],
                            [0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.1, 0.2, 0.7],
                            [0.3, 0.3, 0.4]])
  # At threshold 0.35: malignant for rows 0, 1, 3 and 4.
  decisions = calibration.operating_point_labels(probabilities, 0.35)
  metrics = overall_metrics(labels, probabilities, decisions, uncalibrated=probabilities ** 3)
  assert metrics[metric_names.MALIGNANT_SENSITIVITY] == pytest.approx(3 / 4)
  assert metrics['malignant_specificity'] == pytest.approx(3 / 4)  # row 4 is a false alarm
  assert metrics['malignant_ppv'] == pytest.approx(3 / 4)
  assert metrics['malignant_npv'] == pytest.approx(3 / 4)
  assert metrics['accuracy_at_operating_point'] == pytest.approx(6 / 8)
  assert metrics[metric_names.MALIGNANT_RECALL] == pytest.approx(2 / 4)  # the arg-max's
  assert metrics[metric_names.EXPECTED_CALIBRATION_ERROR] == pytest.approx(
      calibration.expected_calibration_error(probabilities, labels))
  assert metrics[metric_names.BRIER_SCORE] == pytest.approx(
      calibration.brier_score(probabilities, labels))
  unscaled = probabilities ** 3
  assert metrics[metric_names.EXPECTED_CALIBRATION_ERROR + metric_names.UNCALIBRATED] == (
      pytest.approx(calibration.expected_calibration_error(unscaled, labels)))


def test_bootstrap_interval_holds_the_estimate_and_narrows_as_the_eval_set_grows():
  rng = np.random.default_rng(0)

  def data(count):
    labels = rng.integers(0, 3, size=count)
    probabilities = rng.dirichlet([1, 1, 1], size=count)
    probabilities[np.arange(count), labels] += 0.6  # a decent model
    return labels, probabilities / probabilities.sum(axis=1, keepdims=True)

  widths = []
  for count in (60, 600):
    labels, probabilities = data(count)
    groups = [f'image {index}' for index in range(count)]
    intervals = bootstrap_intervals(probability_statistics, labels, probabilities, groups,
                                    draws=300, seed=1)
    estimate = probability_statistics(labels, probabilities)
    for name, (lower, upper) in intervals.items():
      assert lower <= estimate[name] <= upper, (name, lower, estimate[name], upper)
    widths.append(intervals[metric_names.ACCURACY][1] - intervals[metric_names.ACCURACY][0])
  assert widths[1] < widths[0] / 2  # ten times the images: about a third of the width
  # Seeded: the same draws give the same interval.
  assert bootstrap_intervals(probability_statistics, labels, probabilities, groups, draws=50,
                             seed=3) == (
      bootstrap_intervals(probability_statistics, labels, probabilities, groups, draws=50, seed=3))


def test_bootstrap_resamples_whole_groups_when_a_group_has_several_images():
  # Twenty copies of one misclassified image: resampled as one unit, they move together.
  labels = np.array([0] * 20 + [1] * 20)
  probabilities = np.array([[0.1, 0.9, 0.0]] * 20 + [[0.1, 0.9, 0.0]] * 20)
  by_image = bootstrap_intervals(
      probability_statistics, labels, probabilities,
      [f'image {index}' for index in range(40)], draws=300)
  by_group = bootstrap_intervals(
      probability_statistics, labels, probabilities,
      ['copies'] * 20 + [f'image {index}' for index in range(20)], draws=300)
  width = lambda found: found[metric_names.ACCURACY][1] - found[metric_names.ACCURACY][0]
  assert width(by_group) > width(by_image)


def test_the_paired_interval_of_the_difference_is_narrower_than_the_two_intervals_apart():
  # Two models that disagree on 12 of 120 images: the baseline right on 8 of them.
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, size=120)
  candidate = np.eye(3)[labels] * 0.8 + 0.1 / 1.5
  wrong = np.eye(3)[(labels + 1) % 3] * 0.8 + 0.1 / 1.5
  candidate[:20] = wrong[:20]  # both wrong on the first 20
  baseline = candidate.copy()
  candidate[20:28], baseline[28:32] = wrong[20:28], wrong[28:32]
  groups = [f'image {index}' for index in range(120)]
  both = np.concatenate([candidate, baseline], axis=1)
  estimate = paired_statistics(labels, both)[metric_names.ACCURACY_VERSUS_BASELINE]
  assert estimate == pytest.approx((92 - 96) / 120)
  lower, upper = bootstrap_intervals(paired_statistics, labels, both, groups, draws=500,
                                     seed=2)[metric_names.ACCURACY_VERSUS_BASELINE]
  assert lower < estimate < upper
  apart = [bootstrap_intervals(probability_statistics, labels, probabilities, groups, draws=500,
                               seed=2)[metric_names.ACCURACY]
           for probabilities in (candidate, baseline)]
  # Unpaired (two independent estimates), the difference's interval would be about
  # √(w₁² + w₂²) wide.
  unpaired = np.hypot(apart[0][1] - apart[0][0], apart[1][1] - apart[1][0])
  assert upper - lower < 0.7 * unpaired


def test_a_gate_on_a_bound_reads_the_end_of_the_interval_the_report_shows():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, size=60)
  probabilities = rng.dirichlet([1, 1, 1], size=60)
  probabilities[np.arange(60), labels] += 0.5
  probabilities /= probabilities.sum(axis=1, keepdims=True)
  metrics = overall_metrics(labels, probabilities, gate_on_bounds=True)
  for name in (metric_names.ACCURACY + metric_names.LOWER,
               metric_names.EXPECTED_CALIBRATION_ERROR + metric_names.UPPER):
    assert 0 < metrics[name] < 1
  # BootstrapBound draws as BootstrapIntervals does: the same end.
  intervals = bootstrap_intervals(probability_statistics, labels, probabilities,
                                  [str(index) for index in range(60)])
  assert metrics[metric_names.ACCURACY + '_lower'] == pytest.approx(
      intervals[metric_names.ACCURACY][0])
  assert metrics[metric_names.ACCURACY + '_lower'] < metrics[metric_names.ACCURACY]


def test_the_specificity_regret_is_what_the_best_threshold_for_the_same_cancers_would_gain():
  # Malignant 0.9, 0.6, 0.2; the others 0.8, 0.5, 0.4, 0.3, 0.1, 0.05.
  labels = np.array([1, 1, 1, 0, 0, 2, 0, 2, 0])
  scores = np.array([0.9, 0.6, 0.2, 0.8, 0.5, 0.4, 0.3, 0.1, 0.05])
  # Threshold 0.25: finds two cancers, calls 4 of 6 others malignant (specificity 2/6). Set
  # just below 0.6, the same two cancers would cost one (specificity 5/6).
  decided = scores >= 0.25
  assert np.isclose(classification_statistics.specificity_regret(labels, scores, decided), 0.5)
  # At the best threshold for what it finds, no regret.
  assert classification_statistics.specificity_regret(labels, scores, scores >= 0.55) == 0.0
  assert classification_statistics.specificity_regret(labels, scores, scores >= 0.15) == 0.0


def test_the_unflagged_decisions_are_scored_without_the_flagged_ones():
  labels = np.array([1, 1, 1, 1, 0, 0, 0, 2])
  decided = np.array([1, 1, 0, 0, 0, 1, 0, 2])
  flagged = np.array([0, 0, 1, 0, 0, 1, 0, 0])
  probabilities = np.full((8, 3), 1 / 3)
  combined = np.concatenate([np.eye(3)[decided], probabilities, flagged[:, None]], axis=1)
  found = classification_statistics.decision_review_statistics(labels, combined)
  assert found[classification_statistics.REVIEW_FRACTION] == 0.25
  # Unflagged: malignant 1, 2 found, 4 missed; others 5, 7, 8 all right.
  assert np.isclose(found[classification_statistics.UNFLAGGED_SENSITIVITY], 2 / 3)
  assert found[classification_statistics.UNFLAGGED_SPECIFICITY] == 1.0
