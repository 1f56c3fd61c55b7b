"""Self-supervised contrastive pretraining of a network's trunk (models/self_supervised.py)."""

import numpy as np
import tensorflow as tf

from models import explanation, networks, self_supervised, training


def test_the_contrastive_loss_rewards_views_that_match_their_partner():
  rng = np.random.default_rng(0)
  first = tf.constant(rng.normal(size=(8, 16)), tf.float32)
  matching = self_supervised.contrastive_loss(first, first + 0.01, temperature=0.2)
  shuffled = self_supervised.contrastive_loss(first, tf.roll(first, 1, axis=0), temperature=0.2)
  assert float(matching) < float(shuffled)


def test_pretraining_moves_the_trunk_and_leaves_the_classifier(separable_images):
  pixels, labels = separable_images(32, seed=0)
  dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(16)
  model = networks.RECIPES['sepconv_residual'].build(48, 3)
  first_convolution = next(layer for layer in model.layers if layer.weights
                           and 'conv' in layer.name)
  before = first_convolution.get_weights()[0].copy()
  classifier = model.get_layer(explanation.FINAL_LAYER).get_weights()[0].copy()
  losses = self_supervised.pretrain(model, dataset, epochs=2, verbose=0)
  assert len(losses) == 2 and np.isfinite(losses).all()
  assert np.abs(first_convolution.get_weights()[0] - before).max() > 0
  np.testing.assert_array_equal(model.get_layer(explanation.FINAL_LAYER).get_weights()[0],
                                classifier)


def test_a_recipe_with_pretraining_records_its_losses(separable_images):
  pixels, labels = separable_images(32, seed=0)
  dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(16)
  _, history = training.train_network('seed', 48, dataset, None, epochs=1, verbose=0,
                                      hyperparameters={'contrastive_epochs': 2})
  assert len(history['contrastive_loss']) == 2 and len(history['loss']) == 1
