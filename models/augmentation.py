"""Augmentation suited to ultrasound, shared by every network trained from scratch or fine-tuned:
changes a probe, a gain knob or a hand would make, and speckle, all at once (the default), or
one of them at a random strength per image (`augmentation_policy='diverse'`); and mixing pairs
of training images (mixup, CutMix) with their labels."""

import math

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


# One operation of random strength per image (TrivialAugment: Müller and Hutter, 2021), from
# what a B-mode image can undergo without changing what it shows: the probe's side, angle, depth
# of field and position; the gain, contrast and depth gain (time-gain compensation) knobs;
# speckle and a lower resolution. Left out, and why: a vertical flip (depth has a direction: a
# shadow falls below a lesion), inverting, solarising or posterising (they change which tissue
# is darker than which, and echogenicity is diagnostic), colour (B-mode is grey), shear or a
# stretch along one axis (a lesion taller than wide is a sign of malignancy), cut-out (it may
# cut the lesion out).
AUGMENTATION_POLICIES = ('ultrasound', 'diverse')
DIVERSE_OPERATIONS = ('identity', 'mirror', 'rotate', 'zoom', 'shift', 'contrast', 'gain',
                      'gamma', 'depth_gain', 'speckle', 'blur')
GEOMETRIC_OPERATIONS = ('mirror', 'rotate', 'zoom', 'shift')
# Each operation at magnitude 1 (the strongest), in either direction where it has two.
MAX_ROTATION_DEGREES = 10.0  # more tilts a shadow off the beam enough to lose it below its lesion
MAX_ZOOM = 0.25  # scale 0.75 to 1.25
MAX_SHIFT = 0.15  # of the side
MAX_CONTRAST = 0.5  # factor 0.5 to 1.5 about the mean
MAX_GAIN = 0.4  # factor 0.6 to 1.4
MAX_GAMMA_OCTAVES = 0.5  # exponent 2^±0.5
MAX_DEPTH_GAIN = 0.6  # factor 0.7 to 1.3 from top to bottom, or the reverse
MAX_SPECKLE = 0.2  # σ of multiplicative noise
MAX_BLUR = 0.008  # Gaussian σ as a share of the side (1.4 px at 180 px)


def _affine(images: tf.Tensor, angle, scale, shift_x, shift_y) -> tf.Tensor:
  """Rotated by `angle` radians and scaled by `scale` about the centre, shifted by shares of the
  side; outside the picture is black, as outside a scan."""
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
  # The transform maps each output pixel to the input pixel it is read from.
  cos = tf.cos(tf.cast(angle, tf.float32)) / scale
  sin = tf.sin(tf.cast(angle, tf.float32)) / scale
  a0, a1, b0, b1 = cos, sin, -sin, cos
  a2 = centre_x - a0 * centre_x - a1 * centre_y - shift_x * width
  b2 = centre_y - b0 * centre_x - b1 * centre_y - shift_y * height
  transform = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])
  batch = tf.shape(images)[0]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=tf.tile(transform[tf.newaxis], [batch, 1]),
      output_shape=tf.shape(images)[1:3], fill_value=0.0, interpolation='BILINEAR',
      fill_mode='CONSTANT')


def _blur(images: tf.Tensor, sigma) -> tf.Tensor:
  radius = 4
  offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-offsets ** 2 / (2 * tf.maximum(sigma, 0.05) ** 2))
  kernel /= tf.reduce_sum(kernel)
  channels = tf.shape(images)[-1]
  rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  columns = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
  padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], 'SYMMETRIC')
  blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], 'VALID')
  return tf.nn.depthwise_conv2d(blurred, columns, [1, 1, 1, 1], 'VALID')


def apply_operation(images: tf.Tensor, operation: str, magnitude, sign=1.0) -> tf.Tensor:
  """`images` [batch, h, w, c] in [0, 1] after one of DIVERSE_OPERATIONS at `magnitude` in [0, 1]
  (1 the strongest) in the direction `sign` (±1), clipped to [0, 1]."""
  magnitude = tf.cast(magnitude, tf.float32)
  signed = tf.cast(sign, tf.float32) * magnitude
  if operation == 'identity':
    return images
  if operation == 'mirror':
    return tf.reverse(images, axis=[2])
  if operation == 'rotate':
    return _affine(images, signed * MAX_ROTATION_DEGREES * math.pi / 180, 1.0, 0.0, 0.0)
  if operation == 'zoom':
    return _affine(images, 0.0, 1.0 + signed * MAX_ZOOM, 0.0, 0.0)
  if operation == 'shift':
    # Diagonally, both ways at once: the strongest shift in both directions.
    return _affine(images, 0.0, 1.0, signed * MAX_SHIFT, signed * MAX_SHIFT)
  if operation == 'contrast':
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    changed = (images - mean) * (1.0 + signed * MAX_CONTRAST) + mean
  elif operation == 'gain':
    changed = images * (1.0 + signed * MAX_GAIN)
  elif operation == 'gamma':
    changed = tf.pow(tf.maximum(images, 1e-6), tf.pow(2.0, signed * MAX_GAMMA_OCTAVES))
  elif operation == 'depth_gain':
    height = tf.shape(images)[1]
    depth = tf.linspace(-0.5, 0.5, height)[tf.newaxis, :, tf.newaxis, tf.newaxis]
    changed = images * (1.0 + signed * MAX_DEPTH_GAIN * depth)
  elif operation == 'speckle':
    changed = images * (1.0 + tf.random.normal(tf.shape(images)) * magnitude * MAX_SPECKLE)
  elif operation == 'blur':
    changed = _blur(images, magnitude * MAX_BLUR * tf.cast(tf.shape(images)[2], tf.float32))
  else:
    raise ValueError(f'unknown operation {operation!r} (one of: {", ".join(DIVERSE_OPERATIONS)})')
  return tf.clip_by_value(changed, 0.0, 1.0)


class DiverseAugmentation(keras.layers.Layer):
  """Per image, one of DIVERSE_OPERATIONS, chosen uniformly, at a uniform random magnitude up to
  `strength` and a random direction; training only."""

  def __init__(self, strength: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self.strength = strength

  def _augment(self, image):
    choice = tf.random.uniform([], 0, len(DIVERSE_OPERATIONS), dtype=tf.int32)
    magnitude = tf.random.uniform([]) * self.strength
    sign = tf.where(tf.random.uniform([]) < 0.5, -1.0, 1.0)
    batch = image[tf.newaxis]
    return tf.switch_case(choice, [
        (lambda operation=operation: apply_operation(batch, operation, magnitude, sign)[0])
        for operation in DIVERSE_OPERATIONS])

  def call(self, inputs, training=None):
    if not training:
      return inputs
    return tf.map_fn(self._augment, inputs)

  def get_config(self):
    return {**super().get_config(), 'strength': self.strength}


def augmentation_layers(policy: str, strength: float = 1.0) -> keras.layers.Layer:
  """The training augmentation of AUGMENTATION_POLICIES' `policy`."""
  if policy == 'ultrasound':
    return ultrasound_augmentation(strength)
  if policy == 'diverse':
    return DiverseAugmentation(strength, name='augmentation')
  raise ValueError(f'unknown augmentation policy {policy!r} (one of: '
                   f'{", ".join(AUGMENTATION_POLICIES)})')


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
