"""The networks, as plain Keras (tf_keras, the Keras 2 that TFT and TFMA 1.16 use).

Each builder takes the image size and class count and returns an uncompiled model whose input
is [batch, size, size, 3] floats in [0, 1] and whose output is class probabilities.
"""

from typing import Callable, Dict

import tf_keras as keras


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


NETWORKS: Dict[str, Callable[[int, int], keras.Model]] = {
    'seed': seed_cnn,
}
