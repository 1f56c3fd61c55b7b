"""The Evaluator's metrics, computed by TFMA itself on predictions whose answers are known."""

import numpy as np
import pandas as pd
import tensorflow_model_analysis as tfma

from models import features
from pipeline import eval_config
from runs import summary


def overall_metrics(labels, probabilities) -> dict:
  config = eval_config.build_eval_config(min_accuracy=0.0)
  # The pipeline's metrics and slicing, on a data frame instead of a model, and without the
  # gate (its "no regression" part needs a baseline model).
  for spec in config.metrics_specs:
    for metric in spec.metrics:
      metric.ClearField('per_slice_thresholds')
  del config.model_specs[:]
  config.model_specs.add(label_key='label', prediction_key='prediction')
  frame = pd.DataFrame({'label': labels, 'prediction': [list(row) for row in probabilities]})
  # Read back by the summary's own reader, as the pipeline's summary, inspector and report do.
  return summary.overall_metrics(tfma.analyze_raw_data(frame, config))


def test_malignant_recall_gate_finds_its_metric():
  # Threshold keys never carry top_k, so a gate on a top_k metric would fail as "not found".
  config = eval_config.build_eval_config(min_accuracy=0.5, min_malignant_recall=0.9)
  thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs)
  keys = {key.name: key for key in thresholds}
  # The same key, without a sub-key, that the metric reports (see the test below).
  assert keys[eval_config.MALIGNANT_RECALL].sub_key is None
  assert set(keys) == {eval_config.MALIGNANT_RECALL, 'sparse_categorical_accuracy'}


def test_macro_f1_malignant_recall_and_macro_auc():
  labels = [0, 0, 1, 1, 2, 2]
  probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.2, 0.7, 0.1],
                            [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]])
  metrics = overall_metrics(labels, probabilities)
  # Argmax predictions 0,1,1,0,2,2: F1 is 0.5 for classes 0 and 1, 1.0 for class 2.
  assert abs(metrics[eval_config.MACRO_F1] - 2 / 3) < 1e-6
  assert abs(metrics[eval_config.MALIGNANT_RECALL] - 0.5) < 1e-6
  assert abs(metrics['precision_benign'] - 0.5) < 1e-6
  assert metrics['recall_normal'] == 1.0
  aucs = [metrics[f'auc/{name}'] for name in features.LABEL_NAMES]
  assert abs(metrics[eval_config.MACRO_AUC] - np.mean(aucs)) < 1e-6
  assert abs(metrics['sparse_categorical_accuracy'] - 4 / 6) < 1e-6


def test_a_class_never_predicted_has_recall_zero():
  # Every image called normal: TFMA's own top_k recall reports 1.0 for all three classes here.
  probabilities = np.tile([0.28, 0.22, 0.50], (6, 1))
  metrics = overall_metrics([0, 0, 1, 1, 2, 2], probabilities)
  assert metrics[eval_config.MALIGNANT_RECALL] == 0.0
  assert metrics['recall_benign'] == 0.0 and metrics['recall_normal'] == 1.0
  assert abs(metrics['precision_normal'] - 1 / 3) < 1e-6
  assert abs(metrics[eval_config.MACRO_F1] - (0 + 0 + 0.5) / 3) < 1e-6
