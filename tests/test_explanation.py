"""Grad-CAM from a trained network: on images whose only signal is a bright square, the heat map
of the class the square stands for peaks inside the square."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import explanation, features, networks

SIZE = 48
SQUARE = 12
MALIGNANT = features.MALIGNANT_LABEL


def squares(count: int, seed: int):
  """(pixels, labels, square corners): malignant images have a bright square at a random place
  on speckled dark tissue; benign ones have none."""
  rng = np.random.default_rng(seed)
  pixels = np.clip(rng.normal(0.25, 0.06, size=(count, SIZE, SIZE, 1)), 0, 1)
  labels, corners = [], []
  for index in range(count):
    if index % 2:
      row, column = rng.integers(2, SIZE - SQUARE - 2, size=2)
      pixels[index, row:row + SQUARE, column:column + SQUARE] = 0.9
      labels.append(MALIGNANT)
      corners.append((row, column))
    else:
      labels.append(0)
      corners.append(None)
  return np.repeat(pixels, 3, axis=3).astype(np.float32), np.array(labels), corners


def fine_grained_network() -> keras.Model:
  """Convolutions at full resolution, global average pooling, a softmax named like every
  network's: Grad-CAM's map is as fine as the image, so where it peaks can be checked."""
  inputs = keras.Input((SIZE, SIZE, 3))
  x = keras.layers.Conv2D(16, 5, padding='same', activation='relu')(inputs)
  x = keras.layers.Conv2D(16, 5, padding='same', activation='relu')(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(3, activation='softmax', name=explanation.FINAL_LAYER)(x)
  return keras.Model(inputs, outputs)


def test_grad_cam_of_a_bright_square_peaks_inside_it():
  keras.utils.set_random_seed(0)
  pixels, labels, _ = squares(160, seed=0)
  model = fine_grained_network()
  model.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss='sparse_categorical_crossentropy', metrics=['accuracy'])
  model.fit(pixels, labels, epochs=15, batch_size=16, verbose=0)
  test_pixels, test_labels, corners = squares(20, seed=1)
  assert (model.predict(test_pixels, verbose=0).argmax(axis=1) == test_labels).mean() >= 0.9
  malignant = [index for index, label in enumerate(test_labels) if label == MALIGNANT]
  maps = explanation.grad_cam(model, explanation.feature_model(model), test_pixels[malignant],
                              tf.fill([len(malignant)], MALIGNANT)).numpy()
  assert maps.shape == (len(malignant), SIZE, SIZE)
  # An ensemble of identical members looks where its member looks.
  twice = explanation.ensemble_grad_cam(
      [model, model], [explanation.feature_model(model)] * 2, test_pixels[malignant],
      tf.fill([len(malignant)], MALIGNANT)).numpy()
  np.testing.assert_allclose(twice, maps, atol=1e-5)
  # Each map is scaled to its own peak: 1 there, nothing below 0.
  assert maps.min() >= 0
  np.testing.assert_allclose(maps.max(axis=(1, 2)), 1, atol=1e-5)
  for heat, index in zip(maps, malignant):
    row, column = corners[index]
    peak_row, peak_column = np.unravel_index(heat.argmax(), heat.shape)
    assert row <= peak_row < row + SQUARE and column <= peak_column < column + SQUARE, (
        (row, column), (peak_row, peak_column))


def test_the_feature_layer_of_each_network_is_spatial():
  for name, recipe in networks.RECIPES.items():
    options = {'backbone_weights': 'random'} if recipe.pretrained_backbone else {}
    network = recipe.build(96, 3, **options)
    maps, penultimate = explanation.feature_model(network)(np.zeros((1, 96, 96, 3), np.float32))
    assert len(maps.shape) == 4 and maps.shape[1] > 1, name
    assert len(penultimate.shape) == 2, name
