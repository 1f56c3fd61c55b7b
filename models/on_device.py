"""The on-device export: the model on decoded pixels as TensorFlow Lite, for tablets and phones.

Point-of-care ultrasound runs on devices that have TFLite, not TensorFlow: there is no Transform
graph and no PNG decoder in the model, so the device decodes, resizes and scales the image itself
(the steps `metadata.json` spells out) and feeds the pixels. The TFLite model is the function of
the exported SavedModel's `from_pixels` signature (the same network, ensemble, test-time flips
and temperature as `serving_default`), with float16 weights by default (half the size; the
serving check measures what that costs in agreement, components/serving_check/).

TFLite has no area resize (`ResizeArea`, which the networks use to bring 180 px down to their
working size), not even through its TensorFlow-ops fallback, so the members are converted as
copies whose `Resizing(interpolation='area')` layers are `AreaResize`: the same averaging written
as two matrix products, which TFLite has.

Files, in `<Model artifact>/tflite/`: `model.tflite` and `metadata.json`.
"""

import json
import os
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import features

TFLITE_DIR = 'tflite'
TFLITE_MODEL_FILE = 'model.tflite'
TFLITE_METADATA_FILE = 'metadata.json'
TFLITE_ERROR_FILE = 'conversion_error.txt'  # instead of the model, when conversion failed
PIXELS_SIGNATURE = 'from_pixels'
WEIGHT_TYPES = ('float16', 'float32')
NO_TFLITE = 'none'  # `--tflite-weights none`: the Trainer makes no on-device model
DEFAULT_WEIGHT_TYPE = 'float16'


def area_matrix(out_size: int, in_size: int) -> np.ndarray:
  """[out_size, in_size]: each output pixel's share of each input pixel in an area resize (the
  input pixels its interval covers, weighted by overlap), as TensorFlow's ResizeArea."""
  scale = in_size / out_size
  matrix = np.zeros((out_size, in_size), np.float32)
  for out in range(out_size):
    start, end = out * scale, (out + 1) * scale
    for pixel in range(int(np.floor(start)), min(in_size, int(np.ceil(end)))):
      matrix[out, pixel] = (min(end, pixel + 1) - max(start, pixel)) / scale
  return matrix


class AreaResize(keras.layers.Layer):
  """`keras.layers.Resizing(height, width, interpolation='area')` as matrix products."""

  def __init__(self, height: int, width: int, **kwargs):
    super().__init__(**kwargs)
    self.height, self.width = height, width

  def build(self, input_shape):
    self._rows = tf.constant(area_matrix(self.height, int(input_shape[1])))
    self._columns = tf.constant(area_matrix(self.width, int(input_shape[2])))
    super().build(input_shape)

  def call(self, images):
    rows = tf.einsum('hk,bkwc->bhwc', self._rows, images)
    return tf.einsum('wl,bhlc->bhwc', self._columns, rows)

  def get_config(self):
    return {**super().get_config(), 'height': self.height, 'width': self.width}


def _without_area_resizing(layer: keras.layers.Layer) -> keras.layers.Layer:
  if isinstance(layer, keras.layers.Resizing) and layer.interpolation == 'area':
    return AreaResize(layer.height, layer.width, name=layer.name)
  return layer  # the trained layer itself: its weights are shared, not copied


def tflite_ready(model: keras.Model) -> keras.Model:
  """The trained network, its layers shared, with AreaResize for area resizing: what TFLite
  can convert."""
  return keras.models.clone_model(model, clone_function=_without_area_resizing)


def tflite_metadata(image_size: int, weight_type: str,
                    malignant_threshold: Optional[float]) -> Dict[str, Any]:
  """What a device needs to use `model.tflite`: its input, the preprocessing, the labels and the
  decision rule."""
  return {
      'input': {
          'name': features.TRANSFORMED_IMAGE_KEY,
          'shape': [-1, image_size, image_size, features.IMAGE_CHANNELS],
          'dtype': 'float32',
          'preprocessing': (
              f'decode to RGB (a grey image repeated on 3 channels), resize to {image_size}×'
              f'{image_size} with bilinear antialiased resampling, divide by 255 and clip to '
              '[0, 1]'),
      },
      'output': {
          'name': 'probabilities',
          'shape': [-1, len(features.LABEL_NAMES)],
          'meaning': 'calibrated class probabilities, in the order of labels',
      },
      'labels': list(features.LABEL_NAMES),
      # The operating point: as serving_default's label.
      'malignant_threshold': malignant_threshold,
      'decision': ('malignant when its probability reaches malignant_threshold, else the more '
                   'probable other class' if malignant_threshold is not None
                   else 'the most probable class'),
      'weights': weight_type,
  }


def export_tflite(pixels_function: Callable[[Sequence[keras.Model]], Any],
                  members: Sequence[keras.Model], output_dir: str, image_size: int,
                  malignant_threshold: Optional[float],
                  weight_type: str = DEFAULT_WEIGHT_TYPE) -> str:
  """Converts `pixels_function(members)` (the `from_pixels` tf.function, built on TFLite-ready
  copies of the members) into `<output_dir>/model.tflite` and writes `metadata.json` beside it;
  returns the model file's path."""
  if weight_type not in WEIGHT_TYPES:
    raise ValueError(f'weight type {weight_type!r}: use one of {", ".join(WEIGHT_TYPES)}')
  ready = [tflite_ready(member) for member in members]
  # The converter saves what it converts first: only the variables, as export.ExportModule
  # does, not the Keras networks with every layer's traced functions.
  holder = tf.Module()
  holder.member_variables = [list(member.variables) for member in ready]
  function = pixels_function(ready)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()], holder)
  if weight_type == 'float16':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  model = converter.convert()
  tf.io.gfile.makedirs(output_dir)
  path = os.path.join(output_dir, TFLITE_MODEL_FILE)
  with tf.io.gfile.GFile(path, 'wb') as handle:
    handle.write(model)
  with tf.io.gfile.GFile(os.path.join(output_dir, TFLITE_METADATA_FILE), 'w') as handle:
    json.dump(tflite_metadata(image_size, weight_type, malignant_threshold), handle, indent=1)
  return path
