"""Augmentation suited to ultrasound, shared by every network trained from scratch or fine-tuned:
changes a probe, a gain knob or a hand would make, and speckle; and mixing pairs of training
images (mixup, CutMix) with their labels."""

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


MIXING_METHODS = ('none', 'mixup', 'cutmix')


def _beta(shape, alpha: float) -> tf.Tensor:
  first = tf.random.gamma(shape, alpha)
  return first / (first + tf.random.gamma(shape, alpha))


def mix_batch(pixels: tf.Tensor, one_hot: tf.Tensor, method: str, alpha: float):
  """Each image mixed with another of its batch, the labels in the same proportion λ ~
  Beta(α, α). mixup (Zhang et al., 2018) blends the pixels; CutMix (Yun et al., 2019) pastes a box
  of the other image, λ being the share of the image left."""
  batch = tf.shape(pixels)[0]
  partner = tf.random.shuffle(tf.range(batch))
  other_pixels, other_labels = tf.gather(pixels, partner), tf.gather(one_hot, partner)
  share = _beta([batch], alpha)
  if method == 'mixup':
    weight = share[:, tf.newaxis, tf.newaxis, tf.newaxis]
    mixed = weight * pixels + (1.0 - weight) * other_pixels
  elif method == 'cutmix':
    height, width = tf.shape(pixels)[1], tf.shape(pixels)[2]
    side = tf.sqrt(1.0 - share)  # the box's side as a share of the image's
    box_height = tf.cast(side * tf.cast(height, tf.float32), tf.int32)
    box_width = tf.cast(side * tf.cast(width, tf.float32), tf.int32)
    top = tf.cast(tf.random.uniform([batch]) * tf.cast(height - box_height + 1, tf.float32),
                  tf.int32)
    left = tf.cast(tf.random.uniform([batch]) * tf.cast(width - box_width + 1, tf.float32),
                   tf.int32)
    rows = tf.range(height)[tf.newaxis, :, tf.newaxis]
    columns = tf.range(width)[tf.newaxis, tf.newaxis, :]
    inside = ((rows >= top[:, tf.newaxis, tf.newaxis])
              & (rows < (top + box_height)[:, tf.newaxis, tf.newaxis])
              & (columns >= left[:, tf.newaxis, tf.newaxis])
              & (columns < (left + box_width)[:, tf.newaxis, tf.newaxis]))
    mixed = tf.where(inside[..., tf.newaxis], other_pixels, pixels)
    # The share actually left after rounding the box to whole pixels.
    share = 1.0 - tf.cast(box_height * box_width, tf.float32) / tf.cast(height * width,
                                                                        tf.float32)
  else:
    raise ValueError(f'unknown mixing {method!r} (choose from {", ".join(MIXING_METHODS)})')
  labels = share[:, tf.newaxis] * one_hot + (1.0 - share[:, tf.newaxis]) * other_labels
  return mixed, labels
