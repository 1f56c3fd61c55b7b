"""TFX's Trainer executor (the GenericExecutor that calls `run_fn`), then the operating point the
run_fn chose recorded on the Model artifact, so ML Metadata, the summary, the inspector and the
report see it without loading the model.

Custom properties of the Model artifact: `malignant_threshold` (absent when there was no
calibration set: the arg-max decides), `temperature`, `target_malignant_sensitivity`, and
`operating_point` (all of `models/calibration.py`'s OperatingPoint, as JSON); and, when the
Tuner chose them (`--tune`), `hyperparameters` (the values trained with, as JSON).
"""

import json
import os

import tensorflow as tf
from tfx.components.trainer import executor as tfx_trainer_executor
from tfx.types import artifact_utils, standard_component_specs

from models import calibration, model as trainer_module


class Executor(tfx_trainer_executor.GenericExecutor):

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(output_dict[standard_component_specs.MODEL_KEY])
    hyperparameters_path = os.path.join(model.uri, trainer_module.HYPERPARAMETERS_FILE)
    if tf.io.gfile.exists(hyperparameters_path):
      with tf.io.gfile.GFile(hyperparameters_path) as handle:
        model.set_json_value_custom_property('hyperparameters', json.load(handle))
    path = os.path.join(model.uri, calibration.OPERATING_POINT_FILE)
    if not tf.io.gfile.exists(path):
      return
    with tf.io.gfile.GFile(path) as handle:
      operating_point = json.load(handle)
    model.set_json_value_custom_property('operating_point', operating_point)
    model.set_float_custom_property('temperature', operating_point['temperature'])
    model.set_float_custom_property('target_malignant_sensitivity',
                                    operating_point['target_sensitivity'])
    if operating_point['malignant_threshold'] is not None:
      model.set_float_custom_property('malignant_threshold',
                                      operating_point['malignant_threshold'])
