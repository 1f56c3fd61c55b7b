"""The Trainer's run_fn: datasets from the transformed examples, training, the operating point,
and the export.

A calibration set, `calibration_percent` % of the training split by near-duplicate group and
stratified by label, is set aside before training (the eval split is never used to choose
anything). On it the trained network gets a temperature that calibrates its probabilities and a
malignant threshold that reaches `target_malignant_sensitivity` (models/calibration.py), both
built into the exported model and written to `operating_point.json` in the Model artifact.

The exported SavedModel carries the Transform graph, so it takes what a user has (encoded image
bytes, or serialized raw tf.Examples) and applies the same preprocessing as training did:

- `serving_default`: `image_bytes` (encoded PNG/JPEG/BMP, any size) → `probabilities`
  (calibrated), `classes` (the class names, in probability order), `label` (malignant when its
  probability reaches the threshold, else the more probable of the others) and
  `malignant_threshold`;
- `from_examples`: serialized raw tf.Examples → `probabilities` (calibrated; what TFMA
  evaluates), `uncalibrated_probabilities` and `operating_point` (the decision, one-hot);
- `transform_features`: serialized raw tf.Examples → the transformed features;
- `from_pixels`: `image_pixels` (decoded, resized and scaled as Transform does, [batch, size,
  size, 3]) → `probabilities` (calibrated): what the on-device TFLite model is converted from
  (models/on_device.py);
- `explain`: `image_bytes` → `probabilities`, `label`, `heat_map` (Grad-CAM of the decided class,
  [batch, size, size] in [0, 1]) and `image_pixels` (what the network saw).

The network and how it is trained come from `models.training` and the network's recipe; a
recipe with test-time flips is exported averaging over the image and its mirror image, and an
ensemble (`ensemble_members` > 1, or the recipe's) is exported as one SavedModel averaging its
members' probabilities before calibration.
The SavedModel carries TF Serving's warmup requests (models/serving_warmup.py) for `serving_default`,
`explain` and `from_pixels`, so a server answers its first clients at full speed.
The Model artifact also gets the TFLite model (`tflite/model.tflite` and `tflite/metadata.json`).
Next to TensorBoard logs (one folder per member of an ensemble), the model-run directory gets
`training_curves.png` (accuracy and loss per epoch, training and validation, every member) and
`history.json` (a list: one history per member).
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import matplotlib

matplotlib.use('Agg')  # No display on training machines.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx_bsl.public import tfxio

from models import (calibration, explanation, features, group_split, networks, on_device,
                    serving_warmup, training)

# Keys of the Trainer's custom_config.
EPOCHS_KEY = 'epochs'
BATCH_SIZE_KEY = 'batch_size'
NETWORK_KEY = 'network'
SEED_KEY = 'seed'
CALIBRATION_PERCENT_KEY = 'calibration_percent'
TARGET_SENSITIVITY_KEY = 'target_malignant_sensitivity'
ENSEMBLE_MEMBERS_KEY = 'ensemble_members'
BACKBONE_WEIGHTS_KEY = 'backbone_weights'
TFLITE_WEIGHTS_KEY = 'tflite_weights'

DEFAULTS = {
    EPOCHS_KEY: None,  # the network's recipe decides
    BATCH_SIZE_KEY: 32,
    NETWORK_KEY: networks.DEFAULT_NETWORK,
    SEED_KEY: 42,
    CALIBRATION_PERCENT_KEY: 15,
    TARGET_SENSITIVITY_KEY: calibration.DEFAULT_TARGET_SENSITIVITY,
    ENSEMBLE_MEMBERS_KEY: None,  # the network's recipe decides
    BACKBONE_WEIGHTS_KEY: None,  # a pretrained backbone's weights (models/backbones.py)
    TFLITE_WEIGHTS_KEY: on_device.DEFAULT_WEIGHT_TYPE,
}
TRAINING_CURVES_FILE = 'training_curves.png'
HISTORY_FILE = 'history.json'
# Beside the SavedModel in the Model artifact, when the Tuner chose them (`--tune`).
HYPERPARAMETERS_FILE = 'hyperparameters.json'


def read_examples(file_pattern: List[str], data_accessor,
                  tf_transform_output: tft.TFTransformOutput) -> tf.data.Dataset:
  """Unbatched (pixels, label, group) from transformed examples, parsed once, cached in memory."""
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=64, shuffle=False, num_epochs=1,
                                     label_key=features.TRANSFORMED_LABEL_KEY),
      tf_transform_output.transformed_metadata.schema)
  dataset = dataset.map(lambda batch, label: (
      batch[features.TRANSFORMED_IMAGE_KEY], label,
      tf.reshape(batch[features.TRANSFORMED_GROUP_KEY], [-1])))
  return dataset.unbatch().cache()


def batches(examples: tf.data.Dataset, batch_size: int, shuffle_seed: Optional[int] = None):
  """(pixels, label) batches of (pixels, label, group) examples, shuffled when given a seed."""
  dataset = examples.map(lambda pixels, label, group: (pixels, label))
  if shuffle_seed is not None:
    dataset = dataset.shuffle(2048, seed=shuffle_seed, reshuffle_each_iteration=True)
  return training.prefetched(dataset.batch(batch_size))


def split_for_calibration(examples: tf.data.Dataset, percent: float):
  """(fitting examples, calibration examples): `percent` % of each label's training examples,
  whole near-duplicate groups (models/group_split.py), set aside to choose the operating point."""
  labels, groups = [], []
  for _, label, group in examples:
    labels.append(int(label))
    groups.append(group.numpy().decode())
  chosen = sorted({group for group, taken in zip(
      groups, group_split.calibration_mask(labels, groups, percent)) if taken})
  if not chosen:
    return examples, examples.take(0)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(chosen), tf.ones(len(chosen), tf.int64)),
      default_value=0)
  in_calibration = lambda pixels, label, group: tf.equal(table.lookup(group), 1)
  return (examples.filter(lambda *example: tf.logical_not(in_calibration(*example))),
          examples.filter(in_calibration))


def plot_training_curves(histories: Sequence[Dict[str, List[float]]], path: str) -> None:
  """The seed notebook's figure: accuracy and loss per epoch, training against validation, one
  pair of lines per ensemble member."""
  figure, (accuracy_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 4))
  for axes, metric, title in ((accuracy_axes, 'accuracy', 'Accuracy'),
                              (loss_axes, 'loss', 'Loss')):
    for member, history in enumerate(histories):
      epochs = range(1, len(history['loss']) + 1)
      suffix = f' (member {member + 1})' if len(histories) > 1 else ''
      axes.plot(epochs, history[metric], color='C0', alpha=1.0 / (1 + member),
                label=f'training{suffix}')
      if f'val_{metric}' in history:
        axes.plot(epochs, history[f'val_{metric}'], color='C1', alpha=1.0 / (1 + member),
                  label=f'validation{suffix}')
    axes.set_title(f'Training and validation {title.lower()}')
    axes.set_xlabel('epoch')
    axes.set_ylabel(title)
    axes.legend()
    axes.grid(alpha=0.3)
  figure.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as handle:
    figure.savefig(handle, format='png', dpi=100)
  plt.close(figure)


def calibrated(uncalibrated: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
  """Temperature-scaled probabilities (models/calibration.py's rule)."""
  return tf.nn.softmax(tf.math.log(tf.maximum(uncalibrated, 1e-7)) / temperature)


class ExportModule(tf.Module):
  """The trained network (or ensemble: the mean of its members' probabilities) plus the
  Transform layer and the operating point, with the serving signatures. Probabilities are
  temperature-scaled; `label` follows the malignant threshold (models/calibration.py's rule), or
  the arg-max when there is none."""

  def __init__(self, members: Sequence[keras.Model], tf_transform_output: tft.TFTransformOutput,
               test_time_flips: bool, operating_point: calibration.OperatingPoint):
    super().__init__()
    self.members = list(members)
    self._test_time_flips = test_time_flips
    self.transform_layer = tf_transform_output.transform_features_layer()
    self._raw_feature_spec = tf_transform_output.raw_feature_spec()
    self._class_names = tf.constant(features.LABEL_NAMES)
    self._explainers = [explanation.feature_model(member) for member in self.members]
    self._temperature = tf.constant(operating_point.temperature, tf.float32)
    threshold = operating_point.malignant_threshold
    # Above 1, no probability reaches it: the arg-max decides.
    self._threshold = tf.constant(2.0 if threshold is None else threshold, tf.float32)

  def _uncalibrated(self, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
    transformed = self.transform_layer(raw_features)
    return training.predict_probabilities(
        self.members, transformed[features.TRANSFORMED_IMAGE_KEY], self._test_time_flips)

  def _calibrated(self, uncalibrated: tf.Tensor) -> tf.Tensor:
    return calibrated(uncalibrated, self._temperature)

  def _decision(self, probabilities: tf.Tensor) -> tf.Tensor:
    """Class index per row by the operating point (as calibration.operating_point_labels)."""
    malignant = features.MALIGNANT_LABEL
    is_malignant = tf.equal(tf.range(len(features.LABEL_NAMES)), malignant)[tf.newaxis, :]
    others = tf.argmax(tf.where(is_malignant, -1.0, probabilities), axis=1)
    above = probabilities[:, malignant] >= self._threshold
    argmax = tf.argmax(probabilities, axis=1)
    return tf.where(self._threshold > 1.0, argmax,
                    tf.where(above, tf.cast(malignant, tf.int64), others))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve_image_bytes(self, image_bytes):
    probabilities = self._calibrated(
        self._uncalibrated({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])}))
    batch = tf.shape(probabilities)[0]
    return {
        'probabilities': probabilities,
        'classes': tf.tile(self._class_names[tf.newaxis, :], [batch, 1]),
        'label': tf.gather(self._class_names, self._decision(probabilities)),
        # A threshold above 1 means there is none: the label is the most probable class.
        'malignant_threshold': tf.fill([batch], self._threshold),
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def explain(self, image_bytes):
    """The decision with a Grad-CAM heat map of the decided class over the pixels it was made
    on (models/explanation.py)."""
    transformed = self.transform_layer({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})
    pixels = transformed[features.TRANSFORMED_IMAGE_KEY]
    probabilities = self._calibrated(
        training.predict_probabilities(self.members, pixels, self._test_time_flips))
    decision = self._decision(probabilities)
    return {
        'probabilities': probabilities,
        'label': tf.gather(self._class_names, decision),
        'heat_map': explanation.ensemble_grad_cam(self.members, self._explainers, pixels,
                                                  decision),
        'image_pixels': pixels,
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(self, examples):
    spec = {features.IMAGE_KEY: self._raw_feature_spec[features.IMAGE_KEY]}
    uncalibrated = self._uncalibrated(tf.io.parse_example(examples, spec))
    probabilities = self._calibrated(uncalibrated)
    return {
        'probabilities': probabilities,
        'uncalibrated_probabilities': uncalibrated,
        # One-hot of the decision at the operating point, for TFMA's metrics at that point.
        'operating_point': tf.one_hot(self._decision(probabilities), len(features.LABEL_NAMES)),
    }

  def pixels_signature(self, image_size: int, members: Optional[Sequence[keras.Model]] = None):
    """The `from_pixels` signature for pixels of `image_size` (Transform's output), on the
    module's members or on `members` (the on-device copies of them)."""
    members = self.members if members is None else members

    @tf.function(input_signature=[tf.TensorSpec(
        [None, image_size, image_size, features.IMAGE_CHANNELS], tf.float32,
        name=features.TRANSFORMED_IMAGE_KEY)])
    def from_pixels(image_pixels):
      return {'probabilities': self._calibrated(training.predict_probabilities(
          members, image_pixels, self._test_time_flips))}

    return from_pixels

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def transform_features(self, examples):
    return self.transform_layer(tf.io.parse_example(examples, self._raw_feature_spec))


def export_model(members: Sequence[keras.Model], tf_transform_output: tft.TFTransformOutput,
                 export_dir: str, test_time_flips: bool,
                 operating_point: calibration.OperatingPoint, image_size: int) -> ExportModule:
  """Saves the SavedModel with its signatures (the module docstring); returns its module."""
  module = ExportModule(members, tf_transform_output, test_time_flips, operating_point)
  tf.saved_model.save(module, export_dir, signatures={
      'serving_default': module.serve_image_bytes,
      'from_examples': module.serve_examples,
      'transform_features': module.transform_features,
      'explain': module.explain,
      on_device.PIXELS_SIGNATURE: module.pixels_signature(image_size),
  })
  blank_image = tf.io.encode_png(tf.zeros([image_size, image_size, 3], tf.uint8)).numpy()
  serving_warmup.write_requests(export_dir, [
      ('serving_default', {'image_bytes': np.array([blank_image])}),
      ('explain', {'image_bytes': np.array([blank_image])}),
      (on_device.PIXELS_SIGNATURE,
       {'image_pixels': np.zeros([1, image_size, image_size, 3], np.float32)}),
  ])
  return module


def export_on_device(module: ExportModule, model_dir: str, image_size: int,
                     operating_point: calibration.OperatingPoint, weight_type: str) -> None:
  """The TFLite model of `from_pixels` in `<model_dir>/tflite/`. A network TFLite cannot
  convert must not cost the trained model: the reason goes to `tflite/conversion_error.txt`
  (the Trainer's executor records it) and training goes on."""
  output_dir = os.path.join(model_dir, on_device.TFLITE_DIR)
  try:
    on_device.export_tflite(
        lambda members: module.pixels_signature(image_size, members), module.members,
        output_dir, image_size, operating_point.malignant_threshold, weight_type)
  except Exception as error:  # pylint: disable=broad-except  # the converter raises many kinds
    reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    logging.warning('No TFLite model: %s', reason)
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, on_device.TFLITE_ERROR_FILE), 'w') as handle:
      handle.write(reason)


def train_config(custom_config: Dict[str, Any]) -> Dict[str, Any]:
  config = dict(DEFAULTS)
  config.update({key: value for key, value in (custom_config or {}).items() if key in DEFAULTS})
  return config


def run_fn(fn_args) -> None:
  """TFX Trainer entry point (tfx.components.trainer.fn_args_utils.FnArgs)."""
  config = train_config(fn_args.custom_config)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  training_examples = read_examples(fn_args.train_files, fn_args.data_accessor,
                                    tf_transform_output)
  fitting, calibration_set = split_for_calibration(training_examples,
                                                   config[CALIBRATION_PERCENT_KEY])
  eval_examples = read_examples(fn_args.eval_files, fn_args.data_accessor, tf_transform_output)
  batch_size = config[BATCH_SIZE_KEY]
  image_size = tf_transform_output.transformed_feature_spec()[
      features.TRANSFORMED_IMAGE_KEY].shape[0]

  network = config[NETWORK_KEY]
  test_time_flips = networks.RECIPES[network].test_time_flips
  members = config[ENSEMBLE_MEMBERS_KEY] or networks.RECIPES[network].members
  # The Tuner's best (keras_tuner.HyperParameters config), when the pipeline tuned.
  hyperparameters = dict((fn_args.hyperparameters or {}).get('values', {}))
  trained, histories = training.train_ensemble(
      network, image_size, batches(fitting, batch_size, shuffle_seed=config[SEED_KEY]),
      batches(eval_examples, batch_size), members=members, epochs=config[EPOCHS_KEY],
      seed=config[SEED_KEY], hyperparameters=hyperparameters,
      backbone_weights=config[BACKBONE_WEIGHTS_KEY],
      callbacks_of_member=lambda member: [keras.callbacks.TensorBoard(
          log_dir=(os.path.join(fn_args.model_run_dir, f'member_{member}') if members > 1
                   else fn_args.model_run_dir))])
  # The eval split is only reported on; the operating point comes from the calibration set.
  operating_point = calibration.choose_operating_point(
      *training.predict_dataset(trained, batches(calibration_set, batch_size), test_time_flips),
      target_sensitivity=config[TARGET_SENSITIVITY_KEY])

  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), 'w') as handle:
    json.dump(histories, handle, indent=1)
  plot_training_curves(histories, os.path.join(fn_args.model_run_dir, TRAINING_CURVES_FILE))
  module = export_model(trained, tf_transform_output, fn_args.serving_model_dir,
                        test_time_flips, operating_point, image_size)
  # Beside the SavedModel, in the Model artifact: the Trainer's executor records it in ML
  # Metadata (components/trainer/executor.py).
  model_dir = os.path.dirname(fn_args.serving_model_dir)
  export_on_device(module, model_dir, image_size, operating_point, config[TFLITE_WEIGHTS_KEY])
  with tf.io.gfile.GFile(os.path.join(model_dir, calibration.OPERATING_POINT_FILE), 'w') as handle:
    json.dump(dataclasses.asdict(operating_point), handle, indent=1)
  if hyperparameters:
    with tf.io.gfile.GFile(os.path.join(model_dir, HYPERPARAMETERS_FILE), 'w') as handle:
      json.dump(hyperparameters, handle, indent=1)
