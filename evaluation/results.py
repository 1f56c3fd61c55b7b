"""An evaluation read back: the overall slice of the Evaluator's TFMA result, its metrics keyed
readably, its array-valued metrics (reliability diagrams, ROC curve) and its confusion matrices.
The summary, the report, the inspector and the model card read an evaluation through it.
"""

import json
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma

from evaluation import metric_names
from models import features


def read_overall_evaluation(evaluation_uri: str) -> Tuple[Dict[str, float],
                                                         Dict[str, List[List[int]]]]:
  """Overall-slice metrics of the candidate, keyed readably (e.g. 'auc/malignant',
  'recall_malignant'), and its confusion matrices as counts[true class][predicted class], by
  model output ('probabilities': the most probable class; 'operating_point': the decision)."""
  result = tfma.load_eval_result(evaluation_uri, model_name=_candidate_name(evaluation_uri))
  return overall_metrics(result), _overall_confusion_matrices(result)


def read_overall_arrays(evaluation_uri: str) -> Dict[str, np.ndarray]:
  """The candidate's array-valued overall metrics (the reliability diagrams, the ROC curve),
  by name."""
  result = tfma.load_eval_result(evaluation_uri, model_name=_candidate_name(evaluation_uri))
  arrays = {}
  for slice_key, metrics_by_output in result.slicing_metrics:
    if slice_key:
      continue
    for sub_keys in metrics_by_output.values():
      for name, value in sub_keys.get('', {}).items():
        if 'arrayValue' in value:
          array = value['arrayValue']
          arrays[name] = np.array([float(number) for number in array.get('float64Values', [])],
                                  dtype=np.float64).reshape(array.get('shape', [0]))
  return arrays


def _candidate_name(evaluation_uri: str) -> Optional[str]:
  """The candidate's model name when a baseline was evaluated beside it (TFMA then finds no
  plots without it), else None."""
  with tf.io.gfile.GFile(os.path.join(evaluation_uri, 'eval_config.json')) as handle:
    model_specs = json.load(handle).get('evalConfig', {}).get('modelSpecs', [])
  names = [spec['name'] for spec in model_specs if 'name' in spec and not spec.get('isBaseline')]
  return names[0] if len(model_specs) > 1 and names else None


def _overall_confusion_matrices(result) -> Dict[str, List[List[int]]]:
  size = len(features.LABEL_NAMES)
  matrices = {}
  for slice_key, plots_by_output in result.plots:
    if slice_key:
      continue
    for output, sub_keys in plots_by_output.items():
      plot = sub_keys.get('', {}).get('multiClassConfusionMatrixAtThresholds')
      if not plot:
        continue
      counts = matrices.setdefault(output or metric_names.PROBABILITIES_OUTPUT,
                                   [[0] * size for _ in range(size)])
      # JSON from protos omits zero fields: a missing class id is class 0.
      for entry in plot['matrices'][0].get('entries', []):
        actual, predicted = entry.get('actualClassId', 0), entry.get('predictedClassId', 0)
        if 0 <= actual < size and 0 <= predicted < size:
          counts[actual][predicted] = int(entry.get('numWeightedExamples', 0))
  return matrices


def overall_metrics(result) -> Dict[str, float]:
  """The overall slice's metrics of a TFMA EvalResult, keyed readably: 'macro_f1',
  'auc/benign', 'recall_malignant', 'sparse_categorical_accuracy_diff', ..."""
  metrics: Dict[str, float] = {}
  for slice_key, metrics_by_output in result.slicing_metrics:
    if slice_key:
      continue
    for sub_keys in metrics_by_output.values():
      for sub_key, values in sub_keys.items():
        # Sub keys look like '', 'classId:1' or 'classId:1 topK:1'.
        class_id = re.search(r'classId:(\d+)', sub_key)
        for name, value in values.items():
          if 'doubleValue' not in value:
            continue
          # A macro average is keyed 'macro_average: true\n_<name>'.
          name = name.rsplit('\n', 1)[-1].lstrip('_')
          if class_id and name == metric_names.MACRO_AUC:
            continue  # the per-class inputs of the average, the same as auc/<class>
          if class_id and name != metric_names.MALIGNANT_RECALL:
            name += '/' + features.LABEL_NAMES[int(class_id.group(1))]
          metrics[name] = float(value['doubleValue'])  # 'NaN' arrives as text
  return metrics
