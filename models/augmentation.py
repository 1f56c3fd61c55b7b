"""Augmentation suited to ultrasound, shared by every network trained from scratch or fine-tuned:
changes a probe, a gain knob or a hand would make, and speckle."""

import tensorflow as tf
import tf_keras as keras


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


def ultrasound_augmentation(strength: float = 1.0) -> keras.Sequential:
  """Changes a probe, a gain knob or a hand would make; no vertical flip (depth has a direction).
  `strength` scales every range (1: the default recipe's)."""
  return keras.Sequential([
      keras.layers.RandomFlip('horizontal'),
      keras.layers.RandomRotation(0.04 * strength),
      keras.layers.RandomZoom((-0.15 * strength, 0.1 * strength)),
      keras.layers.RandomTranslation(0.08 * strength, 0.08 * strength),
      keras.layers.RandomContrast(0.25 * strength),
      keras.layers.RandomBrightness(0.15 * strength, value_range=(0.0, 1.0)),
      SpeckleNoise(0.08 * strength),
  ], name='augmentation')
