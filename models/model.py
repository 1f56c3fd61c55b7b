"""The Trainer's run_fn: datasets from the transformed examples, training, and the export.

The exported SavedModel carries the Transform graph, so it takes what a user has (encoded image
bytes, or serialized raw tf.Examples) and applies the same preprocessing as training did:

- `serving_default`: `image_bytes` (encoded PNG/JPEG/BMP, any size) → `probabilities`,
  `classes` (the class names, in probability order) and `label` (the most probable class name);
- `from_examples`: serialized raw tf.Examples → `probabilities` (what TFMA evaluates);
- `transform_features`: serialized raw tf.Examples → the transformed features.

The network and how it is trained come from `models.training` and the network's recipe; a
recipe with test-time flips is exported averaging over the image and its mirror image.
Next to TensorBoard logs, the model-run directory gets `training_curves.png` (accuracy and loss
per epoch, training and validation) and `history.json`.
"""

import json
import os
from typing import Any, Dict, List

import matplotlib

matplotlib.use('Agg')  # No display on training machines.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx_bsl.public import tfxio

from models import features, networks, training

# Keys of the Trainer's custom_config.
EPOCHS_KEY = 'epochs'
BATCH_SIZE_KEY = 'batch_size'
NETWORK_KEY = 'network'
SEED_KEY = 'seed'

DEFAULTS = {
    EPOCHS_KEY: None,  # the network's recipe decides
    BATCH_SIZE_KEY: 32,
    NETWORK_KEY: networks.DEFAULT_NETWORK,
    SEED_KEY: 42,
}
TRAINING_CURVES_FILE = 'training_curves.png'
HISTORY_FILE = 'history.json'


def read_dataset(file_pattern: List[str], data_accessor, tf_transform_output: tft.TFTransformOutput,
                 batch_size: int, shuffle_seed: int, training: bool) -> tf.data.Dataset:
  """(pixels, label) batches from transformed examples, parsed once and cached in memory."""
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=False, num_epochs=1,
                                     label_key=features.TRANSFORMED_LABEL_KEY),
      tf_transform_output.transformed_metadata.schema)
  dataset = dataset.map(lambda batch, label: (batch[features.TRANSFORMED_IMAGE_KEY], label))
  dataset = dataset.unbatch().cache()
  if training:
    dataset = dataset.shuffle(2048, seed=shuffle_seed, reshuffle_each_iteration=True)
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def plot_training_curves(history: Dict[str, List[float]], path: str) -> None:
  """The seed notebook's figure: accuracy and loss per epoch, training against validation."""
  figure, (accuracy_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 4))
  epochs = range(1, len(history['loss']) + 1)
  for axes, metric, title in ((accuracy_axes, 'accuracy', 'Accuracy'),
                              (loss_axes, 'loss', 'Loss')):
    axes.plot(epochs, history[metric], label='training')
    if f'val_{metric}' in history:
      axes.plot(epochs, history[f'val_{metric}'], label='validation')
    axes.set_title(f'Training and validation {title.lower()}')
    axes.set_xlabel('epoch')
    axes.set_ylabel(title)
    axes.legend()
    axes.grid(alpha=0.3)
  figure.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as handle:
    figure.savefig(handle, format='png', dpi=100)
  plt.close(figure)


class ExportModule(tf.Module):
  """The trained network plus the Transform layer, with the three serving signatures."""

  def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput,
               test_time_flips: bool):
    super().__init__()
    self.model = model
    self._test_time_flips = test_time_flips
    self.transform_layer = tf_transform_output.transform_features_layer()
    self._raw_feature_spec = tf_transform_output.raw_feature_spec()
    self._class_names = tf.constant(features.LABEL_NAMES)

  def _probabilities(self, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
    transformed = self.transform_layer(raw_features)
    return training.predict_probabilities(self.model, transformed[features.TRANSFORMED_IMAGE_KEY],
                                          self._test_time_flips)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve_image_bytes(self, image_bytes):
    probabilities = self._probabilities({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})
    batch = tf.shape(probabilities)[0]
    return {
        'probabilities': probabilities,
        'classes': tf.tile(self._class_names[tf.newaxis, :], [batch, 1]),
        'label': tf.gather(self._class_names, tf.argmax(probabilities, axis=1)),
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(self, examples):
    spec = {features.IMAGE_KEY: self._raw_feature_spec[features.IMAGE_KEY]}
    return {'probabilities': self._probabilities(tf.io.parse_example(examples, spec))}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def transform_features(self, examples):
    return self.transform_layer(tf.io.parse_example(examples, self._raw_feature_spec))


def export_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                 export_dir: str, test_time_flips: bool) -> None:
  module = ExportModule(model, tf_transform_output, test_time_flips)
  tf.saved_model.save(module, export_dir, signatures={
      'serving_default': module.serve_image_bytes,
      'from_examples': module.serve_examples,
      'transform_features': module.transform_features,
  })


def train_config(custom_config: Dict[str, Any]) -> Dict[str, Any]:
  config = dict(DEFAULTS)
  config.update({key: value for key, value in (custom_config or {}).items() if key in DEFAULTS})
  return config


def run_fn(fn_args) -> None:
  """TFX Trainer entry point (tfx.components.trainer.fn_args_utils.FnArgs)."""
  config = train_config(fn_args.custom_config)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  train_dataset = read_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                               config[BATCH_SIZE_KEY], config[SEED_KEY], training=True)
  eval_dataset = read_dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                              config[BATCH_SIZE_KEY], config[SEED_KEY], training=False)
  image_size = tf_transform_output.transformed_feature_spec()[
      features.TRANSFORMED_IMAGE_KEY].shape[0]

  network = config[NETWORK_KEY]
  model, history = training.train_network(
      network, image_size, train_dataset, eval_dataset, epochs=config[EPOCHS_KEY],
      seed=config[SEED_KEY],
      callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])

  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), 'w') as handle:
    json.dump(history, handle, indent=1)
  plot_training_curves(history, os.path.join(fn_args.model_run_dir, TRAINING_CURVES_FILE))
  export_model(model, tf_transform_output, fn_args.serving_model_dir,
               test_time_flips=networks.RECIPES[network].test_time_flips)
