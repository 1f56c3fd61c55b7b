"""The training core the Trainer and the cross-validation benchmark share, and the networks."""

import numpy as np
import pytest
import tensorflow as tf

from models import features, networks, training


def test_balanced_class_weights_average_one_and_favour_rare_classes():
  labels = [0] * 6 + [1] * 3 + [2] * 1
  weights = training.balanced_class_weights(labels, 3)
  assert weights[2] > weights[1] > weights[0]
  assert abs(sum(weights[label] for label in labels) / len(labels) - 1.0) < 1e-9
  assert training.balanced_class_weights([0, 0, 1], 3)[2] == 0.0  # absent class


def stripes(count: int, seed: int, size: int = 48):
  """A separable set: horizontal stripes (benign), vertical stripes (malignant), none (normal),
  each at a random grey level, period, phase and noise. Mirroring and small rotations, which the
  augmentation applies, keep the stripes' direction."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for index in range(count):
    label = index % 3
    image = np.full((size, size), rng.uniform(0.3, 0.6), dtype=np.float32)
    period = rng.integers(8, 14)
    bars = ((np.arange(size) + rng.integers(0, period)) % period < period // 2) * 0.35
    if label == 0:
      image += bars[:, None]
    elif label == 1:
      image += bars[None, :]
    image += rng.normal(0, 0.05, image.shape)
    images.append(np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2))
    labels.append(label)
  return np.stack(images).astype(np.float32), np.array(labels)


@pytest.mark.parametrize('network', sorted(networks.RECIPES))
def test_each_network_learns_a_separable_set_far_above_chance(network):
  train_pixels, train_labels = stripes(90, seed=0)
  test_pixels, test_labels = stripes(45, seed=1)
  train = tf.data.Dataset.from_tensor_slices((train_pixels, train_labels)).shuffle(
      90, seed=0).batch(16)
  test = tf.data.Dataset.from_tensor_slices((test_pixels, test_labels)).batch(16)
  model, history = training.train_network(network, 48, train, test, epochs=12, verbose=0)
  assert len(history['loss']) == 12 and 'val_accuracy' in history
  flips = networks.RECIPES[network].test_time_flips
  probabilities = training.predict_probabilities(model, test_pixels, flips).numpy()
  assert probabilities.shape == (45, len(features.LABEL_NAMES))
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
  # Chance is 1/3; both networks reach 1.0 here (three seeds tried for the default).
  assert (probabilities.argmax(axis=1) == test_labels).mean() >= 0.9


def test_test_time_flips_make_a_prediction_mirror_invariant():
  rng = np.random.default_rng(1)
  pixels = rng.random((3, 32, 32, 3)).astype(np.float32)
  model = networks.RECIPES[networks.DEFAULT_NETWORK].build(32, 3)
  direct = training.predict_probabilities(model, pixels, True).numpy()
  mirrored = training.predict_probabilities(model, pixels[:, :, ::-1, :], True).numpy()
  np.testing.assert_allclose(direct, mirrored, atol=1e-5)
  # Without the flips the network alone is not mirror-invariant.
  single = training.predict_probabilities(model, pixels, False).numpy()
  single_mirrored = training.predict_probabilities(model, pixels[:, :, ::-1, :], False).numpy()
  assert np.abs(single - single_mirrored).max() > 0


def test_speckle_noise_only_while_training():
  layer = networks.SpeckleNoise(0.2)
  images = tf.fill([2, 8, 8, 3], 0.5)
  assert np.array_equal(layer(images, training=False).numpy(), images.numpy())
  noisy = layer(images, training=True).numpy()
  assert not np.allclose(noisy, 0.5) and noisy.min() >= 0.0 and noisy.max() <= 1.0
