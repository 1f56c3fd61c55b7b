"""The networks, as plain Keras (tf_keras, the Keras 2 that TFT and TFMA 1.16 use), each with
the recipe it is trained by.

Each builder takes the image size and class count and returns an uncompiled model whose input
is [batch, size, size, 3] floats in [0, 1] and whose output is class probabilities.

- `seed`: the seed notebook's CNN and its training (Adam 1e-3, 15 epochs), kept for comparison.
- `sepconv_residual` (the default): a small Xception-style network trained from scratch on CPU:
  a strided stem, residual blocks of depthwise-separable convolutions with batch normalisation,
  global average pooling, augmentation suited to ultrasound (mirror, small rotation, zoom and
  shift, gain and contrast, multiplicative speckle), class-balanced loss, AdamW with warm-up and
  cosine decay, and test-time averaging over the image and its mirror image.
"""

import dataclasses
from typing import Callable, Dict

import tensorflow as tf
import tf_keras as keras


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a network is built and trained."""
  build: Callable[[int, int], keras.Model]
  epochs: int
  learning_rate: float
  cosine_decay: bool = False  # warm-up, then cosine decay over the epochs
  weight_decay: float = 0.0  # AdamW when > 0, else Adam
  balanced_class_weights: bool = False
  test_time_flips: bool = False  # average the prediction over the image and its mirror


class SpeckleNoise(keras.layers.Layer):
  """Multiplicative noise, x · (1 + N(0, σ)), as ultrasound speckle varies; training only."""

  def __init__(self, stddev: float, **kwargs):
    super().__init__(**kwargs)
    self.stddev = stddev

  def call(self, inputs, training=None):
    if not training:
      return inputs
    noise = tf.random.normal(tf.shape(inputs), stddev=self.stddev)
    return tf.clip_by_value(inputs * (1.0 + noise), 0.0, 1.0)

  def get_config(self):
    return {**super().get_config(), 'stddev': self.stddev}


def seed_cnn(image_size: int, num_classes: int) -> keras.Model:
  """The seed notebook's network: flip/rotation/zoom augmentation, three conv blocks, dropout."""
  augmentation = keras.Sequential([
      keras.layers.RandomFlip('horizontal'),
      keras.layers.RandomRotation(0.1),
      keras.layers.RandomZoom(0.1),
  ], name='augmentation')
  inputs = keras.Input(shape=(image_size, image_size, 3), name='image_pixels')
  x = augmentation(inputs)
  for filters in (16, 32, 64):
    x = keras.layers.Conv2D(filters, 3, padding='same', activation='relu')(x)
    x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Dropout(0.2)(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(128, activation='relu')(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax', name='probabilities')(x)
  return keras.Model(inputs, outputs, name='seed_cnn')


def ultrasound_augmentation() -> keras.Sequential:
  """Changes a probe, a gain knob or a hand would make; no vertical flip (depth has a direction)."""
  return keras.Sequential([
      keras.layers.RandomFlip('horizontal'),
      keras.layers.RandomRotation(0.04),
      keras.layers.RandomZoom((-0.15, 0.1)),
      keras.layers.RandomTranslation(0.08, 0.08),
      keras.layers.RandomContrast(0.25),
      keras.layers.RandomBrightness(0.15, value_range=(0.0, 1.0)),
      SpeckleNoise(0.08),
  ], name='augmentation')


def _batch_norm() -> keras.layers.Layer:
  # A few hundred steps per training run: the default momentum (0.99) would leave the moving
  # statistics, which inference uses, far from the data's.
  return keras.layers.BatchNormalization(momentum=0.9)


def _conv_bn_relu(x, filters: int, strides: int = 1):
  x = keras.layers.Conv2D(filters, 3, strides=strides, padding='same', use_bias=False)(x)
  x = _batch_norm()(x)
  return keras.layers.Activation('relu')(x)


WORKING_SIZE = 160


def sepconv_residual(image_size: int, num_classes: int) -> keras.Model:
  """Strided stem, three residual separable-conv blocks, global average pooling."""
  inputs = keras.Input(shape=(image_size, image_size, 3), name='image_pixels')
  x = inputs
  if image_size > WORKING_SIZE:
    # Lesions span tens of pixels at 180 px; 160 keeps them and cuts the work by a fifth, and
    # found more malignant cases than 128 px at the same accuracy (docs/experiments.md).
    x = keras.layers.Resizing(WORKING_SIZE, WORKING_SIZE, interpolation='area')(x)
  x = ultrasound_augmentation()(x)
  # Two strided convolutions first: full-resolution layers are where a CPU spends its time.
  x = _conv_bn_relu(x, 24, strides=2)
  x = _conv_bn_relu(x, 48, strides=2)
  previous = x
  for filters in (96, 160, 256):
    for _ in range(2):
      x = keras.layers.Activation('relu')(x)
      x = keras.layers.SeparableConv2D(filters, 3, padding='same', use_bias=False)(x)
      x = _batch_norm()(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding='same')(x)
    shortcut = keras.layers.Conv2D(filters, 1, strides=2, padding='same')(previous)
    x = keras.layers.add([x, shortcut])
    previous = x
  x = keras.layers.SeparableConv2D(320, 3, padding='same', use_bias=False)(x)
  x = _batch_norm()(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(0.4)(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax', name='probabilities')(x)
  return keras.Model(inputs, outputs, name='sepconv_residual')


RECIPES: Dict[str, Recipe] = {
    'seed': Recipe(build=seed_cnn, epochs=15, learning_rate=1e-3),
    'sepconv_residual': Recipe(build=sepconv_residual, epochs=40, learning_rate=2e-3,
                               cosine_decay=True, weight_decay=1e-4,
                               balanced_class_weights=True, test_time_flips=True),
}
DEFAULT_NETWORK = 'sepconv_residual'
