"""The training core the Trainer and the cross-validation benchmark share, and the networks."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import augmentation, backbones, efficientnet_lite, features, networks, training


def test_balanced_class_weights_average_one_and_favour_rare_classes():
  labels = [0] * 6 + [1] * 3 + [2] * 1
  weights = training.balanced_class_weights(labels, 3)
  assert weights[2] > weights[1] > weights[0]
  assert abs(sum(weights[label] for label in labels) / len(labels) - 1.0) < 1e-9
  assert training.balanced_class_weights([0, 0, 1], 3)[2] == 0.0  # absent class


FROM_SCRATCH = sorted(name for name, recipe in networks.RECIPES.items()
                      if not recipe.pretrained_backbone)


@pytest.mark.parametrize('network', FROM_SCRATCH)
def test_each_network_learns_a_separable_set_far_above_chance(network, separable_images):
  train_pixels, train_labels = separable_images(90, seed=0)
  test_pixels, test_labels = separable_images(45, seed=1)
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


def test_training_batches_are_prefetched_without_autotuning():
  """Autotuning's thread holds up the end of every fit (models/training.py): it is off, and the
  batches are the same."""
  batched = tf.data.Dataset.range(10).batch(4)
  prefetched = training.prefetched(batched)
  assert prefetched.options().autotune.enabled is False
  assert [batch.tolist() for batch in prefetched.as_numpy_iterator()] == [
      [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_autograph_leaves_keras_as_written_and_converts_our_layers():
  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  from tensorflow.python.autograph.core import config
  from tensorflow.python.autograph.impl import conversion
  training.leave_keras_to_run_as_written()  # again: no second rule
  assert sum(rule.matches('tf_keras') for rule in config.CONVERSION_RULES) == 1
  assert conversion.is_allowlisted(keras.layers.BatchNormalization.call)
  assert conversion.is_allowlisted(keras.Model.train_step)
  assert not conversion.is_allowlisted(augmentation.SpeckleNoise.call)


def test_speckle_noise_only_while_training():
  layer = augmentation.SpeckleNoise(0.2)
  images = tf.fill([2, 8, 8, 3], 0.5)
  assert np.array_equal(layer(images, training=False).numpy(), images.numpy())
  noisy = layer(images, training=True).numpy()
  assert not np.allclose(noisy, 0.5) and noisy.min() >= 0.0 and noisy.max() <= 1.0


def test_a_pretrained_backbone_is_fine_tuned_in_two_phases(separable_images):
  """With random weights (no ImageNet weights can be downloaded here): the head trains with the
  backbone frozen, then the backbone's top layers train too, its lower layers and batch
  normalisation never."""
  pixels, labels = separable_images(32, seed=0)
  dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(16)
  recipe = networks.RECIPES['mobilenet_v3_small']
  assert [phase[1] for phase in training.training_phases(recipe, 4)] == [
      0, recipe.unfrozen_layers]

  class InitialWeights(keras.callbacks.Callback):
    """The backbone's weights when training first begins (each phase begins anew)."""
    weights = None

    def on_train_begin(self, logs=None):
      if InitialWeights.weights is None:
        InitialWeights.weights = [layer.get_weights() for layer in
                                  self.model.get_layer(backbones.BACKBONE_LAYER).layers]

  model, history = training.train_network(
      'mobilenet_v3_small', 48, dataset, None, epochs=2, verbose=0, backbone_weights='random',
      hyperparameters={'working_size': 64}, callbacks=[InitialWeights()])
  assert len(history['loss']) == 2
  backbone = model.get_layer(backbones.BACKBONE_LAYER)
  trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
  assert trainable and len(trainable) <= recipe.unfrozen_layers
  assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
  # The bottom convolution never moved; the top one did, in the second phase.
  convolutions = [index for index, layer in enumerate(backbone.layers)
                  if isinstance(layer, keras.layers.Conv2D)]
  np.testing.assert_array_equal(backbone.layers[convolutions[0]].get_weights()[0],
                                InitialWeights.weights[convolutions[0]][0])
  assert np.abs(backbone.layers[convolutions[-1]].get_weights()[0]
                - InitialWeights.weights[convolutions[-1]][0]).max() > 0


def test_backbone_weights_come_from_a_file_or_keras_cache_or_nowhere(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))  # an empty Keras cache
  with pytest.raises(FileNotFoundError, match='put efficientnetb0_notop.h5 in'):
    backbones.resolve_weights('efficientnet_b0', None)
  cache = tmp_path / '.keras' / 'models'
  cache.mkdir(parents=True)
  (cache / backbones.BACKBONES['efficientnet_b0'].cache_file).write_bytes(b'weights')
  assert backbones.resolve_weights('efficientnet_b0', None) == backbones.KERAS_CACHE_WEIGHTS
  # EfficientNet-Lite0's come with its package, whatever the Keras cache holds.
  assert backbones.resolve_weights('efficientnet_lite0', None) == backbones.PACKAGED_WEIGHTS


@pytest.mark.parametrize('network', ['mobilenet_v3_small', 'efficientnet_lite0'])
def test_a_users_own_backbone_weights_are_loaded(network, tmp_path):
  """A backbone saved with `save_weights` (after pretraining on one's own archive, say) is what
  `--backbone-weights PATH` starts from, instead of ImageNet's or random weights."""
  keras.utils.set_random_seed(1)
  saved = networks.RECIPES[network].build(48, 3, backbone_weights='random', working_size=64)
  path = str(tmp_path / 'my_backbone.h5')
  saved.get_layer(backbones.BACKBONE_LAYER).save_weights(path)
  keras.utils.set_random_seed(2)
  loaded = networks.RECIPES[network].build(48, 3, backbone_weights=path, working_size=64)
  for mine, theirs in zip(loaded.get_layer(backbones.BACKBONE_LAYER).get_weights(),
                          saved.get_layer(backbones.BACKBONE_LAYER).get_weights()):
    np.testing.assert_array_equal(mine, theirs)


def test_efficientnet_lite0_starts_from_imagenet_and_fine_tunes_all_but_batch_norm(
    separable_images):
  """The default's recipe: the head alone first, then every convolution of the backbone, from
  the packaged ImageNet weights; batch normalisation keeps ImageNet's statistics throughout."""
  recipe = networks.RECIPES['efficientnet_lite0']
  assert [phase[1] for phase in training.training_phases(recipe, 20)] == [0, networks.WHOLE_BACKBONE]
  pixels, labels = separable_images(32, seed=0)
  dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(16)
  imagenet = efficientnet_lite.trunk(64)
  efficientnet_lite.load_weights(imagenet)
  start = {layer.name: layer.get_weights() for layer in imagenet.layers if layer.weights}
  model, history = training.train_network('efficientnet_lite0', 48, dataset, None, epochs=2,
                                          verbose=0, hyperparameters={'working_size': 64})
  assert len(history['loss']) == 2
  backbone = model.get_layer(backbones.BACKBONE_LAYER)
  moved = {layer.name for layer in backbone.layers if layer.weights and any(
      np.abs(now - then).max() > 0 for now, then in zip(layer.get_weights(), start[layer.name]))}
  convolutions = {layer.name for layer in backbone.layers if isinstance(
      layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))}
  normalisations = {layer.name for layer in backbone.layers
                    if isinstance(layer, keras.layers.BatchNormalization)}
  assert moved == convolutions and not moved & normalisations


@pytest.mark.parametrize('method', ['mixup', 'cutmix'])
def test_mixing_gives_each_label_the_share_of_its_image(method):
  """Image i is all i/10 and its own class: a mixed image's mean says how much of which image it
  holds, and its label must say the same."""
  tf.random.set_seed(0)
  count = 8
  values = np.arange(count, dtype=np.float32) / 10
  pixels = tf.constant(values[:, None, None, None] * np.ones((count, 20, 20, 3), np.float32))
  mixed, labels = augmentation.mix_batch(pixels, tf.eye(count), method, alpha=0.4)
  mixed, labels = mixed.numpy(), labels.numpy()
  np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
  assert ((labels > 0.01) & (labels < 0.99)).any()  # something was mixed
  np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), labels @ values, atol=1e-5)
  for image, label in zip(mixed, labels):
    if method == 'mixup':  # a blend: the same mixture everywhere
      assert np.ptp(image) < 1e-6
    else:  # a pasted box: only the two images' own values
      assert set(np.round(np.unique(image), 5)) <= set(np.round(values[label > 0], 5))


def test_a_recipe_with_mixing_trains_on_soft_labels(separable_images):
  pixels, labels = separable_images(32, seed=0)
  dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(16)
  model, history = training.train_network('seed', 48, dataset, dataset, epochs=2, verbose=0,
                                          hyperparameters={'mixing': 'cutmix'})
  assert len(history['loss']) == 2 and np.isfinite(history['val_loss']).all()
  assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)


def test_a_distilled_label_mixes_the_class_with_the_teachers_probabilities_of_that_image(
    separable_images):
  pixels, labels = separable_images(20, seed=0, size=16)
  teacher = networks.RECIPES['seed'].build(16, len(features.LABEL_NAMES))  # untrained: not one-hot
  dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(8)
  distilled = training.distilled_dataset(dataset, teacher, True, 0.3, seed=0)
  seen, batch_sizes = [], []
  for batch_pixels, mixed in distilled:
    batch_sizes.append(len(batch_pixels))
    taught = training.predict_probabilities(teacher, batch_pixels, True).numpy()
    for image, row, probabilities in zip(batch_pixels.numpy(), mixed.numpy(), taught):
      index = int(np.flatnonzero([np.array_equal(image, known) for known in pixels])[0])
      seen.append(index)
      expected = 0.7 * np.eye(3)[labels[index]] + 0.3 * probabilities
      np.testing.assert_allclose(row, expected, atol=1e-5)
  assert sorted(seen) == list(range(20)) and batch_sizes == [8, 8, 4]
  assert len(np.unique(taught.round(4), axis=0)) > 1  # the teacher's own view of each image


def test_a_recipe_with_a_teacher_trains_it_once_per_distinct_dataset_and_distils(
    separable_images, monkeypatch):
  trained = []
  train_network = training.train_network

  def recorded(network, *args, teacher=None, **kwargs):
    trained.append((network, teacher))
    return train_network(network, *args, teacher=teacher, **kwargs)

  monkeypatch.setattr(training, 'train_network', recorded)
  pixels, labels = separable_images(24, seed=0, size=16)
  whole = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(8)
  part = tf.data.Dataset.from_tensor_slices((pixels[:16], labels[:16])).batch(8)
  members, _ = training.train_ensemble(
      'seed', 16, [whole, whole, part], None, epochs=1, verbose=0,
      hyperparameters={'teacher': 'seed', 'distillation_weight': 0.5})
  # Two teachers (one for the two members sharing `whole`, one for `part`), then three students.
  assert [network for network, _ in trained] == ['seed'] * 5
  first_teacher, second_teacher = trained[0][1], trained[1][1]
  assert first_teacher is None and second_teacher is None  # a teacher learns from the labels
  taught = [teacher for _, teacher in trained[2:]]
  assert taught[0] is taught[1] and taught[2] is not taught[0] and taught[0] is not None
  assert all(isinstance(member.loss, keras.losses.CategoricalCrossentropy) for member in members)
