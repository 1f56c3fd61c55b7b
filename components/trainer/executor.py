"""TFX's Trainer executor (the GenericExecutor that calls `run_fn`), then the operating point the
run_fn chose recorded on the Model artifact, so ML Metadata, the summary, the inspector and the
report see it without loading the model.

Custom properties of the Model artifact: `malignant_threshold` (absent when there were no
out-of-sample malignant predictions: the arg-max decides), `temperature`,
`target_malignant_sensitivity`, and `operating_point` (all of `models/calibration.py`'s OperatingPoint, as JSON); and, when the
Tuner chose them (`--tune`), `hyperparameters` (the values trained with, as JSON); and
`tflite_model` (the on-device model's path inside the artifact) with `tflite_bytes`; and, when a
warm start was asked for (`--warm-start`), `warm_start`: the base model and the epochs, or why
the run started cold.
"""

import json
import os

import tensorflow as tf
from tfx.components.trainer import executor as tfx_trainer_executor
from tfx.types import artifact_utils, standard_component_specs

from components import contracts
from models import calibration, model as trainer_module, on_device, warm_start

# {'base_model': its directory, 'epochs': n}, or {'cold_start': why} when one was asked for.
WARM_START_PROPERTY = 'warm_start'


class Executor(tfx_trainer_executor.GenericExecutor):

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(output_dict[standard_component_specs.MODEL_KEY])
    tflite_model = os.path.join(on_device.TFLITE_DIR, on_device.TFLITE_MODEL_FILE)
    tflite_error = os.path.join(model.uri, on_device.TFLITE_DIR, on_device.TFLITE_ERROR_FILE)
    if tf.io.gfile.exists(os.path.join(model.uri, tflite_model)):
      model.set_string_custom_property(contracts.TFLITE_MODEL_PROPERTY, tflite_model)
      model.set_int_custom_property(contracts.TFLITE_BYTES_PROPERTY, tf.io.gfile.stat(
          os.path.join(model.uri, tflite_model)).length)
    elif tf.io.gfile.exists(tflite_error):
      with tf.io.gfile.GFile(tflite_error) as handle:
        model.set_string_custom_property(contracts.TFLITE_ERROR_PROPERTY, handle.read())
    warm_start_path = os.path.join(model.uri, warm_start.WARM_START_FILE)
    if tf.io.gfile.exists(warm_start_path):
      with tf.io.gfile.GFile(warm_start_path) as handle:
        model.set_json_value_custom_property(WARM_START_PROPERTY, json.load(handle))
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
