"""The diverse augmentation policy keeps what makes a lesion what it is: on synthetic malignant
lesions, every operation at its strongest, either way, leaves the lesion in the picture, darker
than the tissue around it, as elongated as it was, and its acoustic shadow below it. Operations
that break one of those (a vertical flip, inversion, a stretch along one axis) are caught."""

import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from data import synthetic
from models import augmentation, backbones, networks

SIZE = 128


def _lesion(seed: int):
  image, mask = synthetic.synthesize_image('malignant', np.random.default_rng(seed), SIZE)
  return image.astype(np.float32) / 255.0, mask > 0


def _properties(image: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> dict:
  """The lesion's area, its darkness against the tissue around it, its elongation (principal
  axes' ratio, whatever its angle), and its acoustic shadow: how much darker the tissue below
  it is than the tissue at the same depth beside it."""
  ring = ndimage.binary_dilation(mask, iterations=8) & ~ndimage.binary_dilation(mask, iterations=2)
  ring &= valid
  rows, columns = np.nonzero(mask)
  spread = np.linalg.eigvalsh(np.cov(np.stack([rows, columns]).astype(float)))
  depth = slice(rows.max() + 3, rows.max() + 30)
  left, right = np.percentile(columns, 25).astype(int), np.percentile(columns, 75).astype(int)
  width = right - left + 1
  below = image[depth, left:right + 1][valid[depth, left:right + 1]]
  beside = np.concatenate([
      image[depth, max(left - 2 * width, 0):max(left - width, 0)][
          valid[depth, max(left - 2 * width, 0):max(left - width, 0)]],
      image[depth, right + width:right + 2 * width][valid[depth, right + width:right + 2 * width]]])
  return {'area': mask.sum(), 'darker_by': image[ring].mean() - image[mask].mean(),
          'elongation': np.sqrt(spread[1] / spread[0]),
          'shadow': beside.mean() - below.mean() if below.size and beside.size else np.nan}


def _broken(before: dict, after: dict) -> list:
  """What of the lesion an operation did not keep."""
  broken = []
  if after['area'] < 0.5 * before['area']:
    broken.append('area')
  if not after['darker_by'] > 0.4 * before['darker_by']:
    broken.append('darker')
  if abs(after['elongation'] / before['elongation'] - 1) > 0.1:
    broken.append('elongation')
  if not after['shadow'] > 0.25 * before['shadow']:
    broken.append('shadow')
  return broken


def _apply(operation, image, mask, sign):
  """The image after `operation`; the mask and the picture's extent after the same geometry."""
  tf.random.set_seed(7)

  def run(pixels, name=operation):
    return augmentation.apply_operation(tf.constant(pixels[np.newaxis, ..., np.newaxis]), name,
                                        1.0, sign).numpy()[0, ..., 0]

  if operation in augmentation.GEOMETRIC_OPERATIONS:
    return (run(image), run(mask.astype(np.float32)) > 0.5,
            run(np.ones_like(image)) > 0.5)
  return run(image), mask, np.ones_like(mask)


LESIONS = (0, 1, 4)  # lesions of 1.2 to 1.7 times as long as wide, each with its shadow


@pytest.mark.parametrize('operation', augmentation.DIVERSE_OPERATIONS)
def test_every_operation_at_its_strongest_keeps_the_lesion(operation):
  for seed in LESIONS:
    image, mask = _lesion(seed)
    before = _properties(image, mask, np.ones_like(mask))
    assert before['darker_by'] > 0.1 and before['shadow'] > 0.05
    for sign in (-1.0, 1.0):
      after = _properties(*_apply(operation, image, mask, sign))
      assert _broken(before, after) == [], (seed, sign, before, after)


def test_the_checks_catch_what_the_policy_leaves_out():
  image, mask = _lesion(LESIONS[0])
  valid = np.ones_like(mask)
  before = _properties(image, mask, valid)
  flipped = _properties(image[::-1], mask[::-1], valid)
  assert 'shadow' in _broken(before, flipped)
  assert 'darker' in _broken(before, _properties(1.0 - image, mask, valid))
  # Stretched along the depth by a quarter: the lesion's shape changes.
  stretch = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.constant(np.stack([image, mask.astype(np.float32), valid.astype(np.float32)],
                                  -1)[np.newaxis]),
      transforms=tf.constant([[1.0, 0.0, 0.0, 0.0, 0.8, 0.1 * SIZE, 0.0, 0.0]]),
      output_shape=tf.constant([SIZE, SIZE]), fill_value=0.0, interpolation='BILINEAR',
      fill_mode='CONSTANT').numpy()[0]
  assert 'elongation' in _broken(before, _properties(stretch[..., 0], stretch[..., 1] > 0.5,
                                                     stretch[..., 2] > 0.5))


def test_the_layer_changes_training_images_only():
  images = tf.constant(np.stack([_lesion(seed)[0] for seed in range(8)])[..., np.newaxis]
                       .repeat(3, axis=-1))
  layer = augmentation.DiverseAugmentation(1.0)
  assert np.array_equal(layer(images, training=False).numpy(), images.numpy())
  tf.random.set_seed(3)
  changed = layer(images, training=True).numpy()
  assert changed.shape == images.shape and changed.min() >= 0.0 and changed.max() <= 1.0
  # Most images changed; a few may not be (identity, or a tiny magnitude).
  unchanged = [np.allclose(changed[index], images[index], atol=1e-3) for index in range(8)]
  assert sum(unchanged) < 6


def test_a_network_trains_under_either_policy_and_refuses_another():
  network = backbones.backbone_network(64, 3, 'efficientnet_lite0', backbones.RANDOM_WEIGHTS,
                                       working_size=64, augmentation_policy='diverse')
  assert isinstance(network.get_layer('augmentation'), augmentation.DiverseAugmentation)
  with pytest.raises(ValueError, match=r"unknown augmentation policy 'randaugment' \(one of: "
                     r'ultrasound, diverse\)'):
    backbones.backbone_network(64, 3, 'efficientnet_lite0', backbones.RANDOM_WEIGHTS,
                               working_size=64, augmentation_policy='randaugment')


def _without_names(config):
  """A layer's config without what differs between instances (the names Keras numbers) or
  comes from being built on an input (the input layer and shape)."""
  if isinstance(config, dict):
    return {key: _without_names(value) for key, value in config.items()
            if key not in ('name', 'build_input_shape', 'build_config')}
  if isinstance(config, list):
    return [_without_names(value) for value in config
            if not (isinstance(value, dict) and value.get('class_name') == 'InputLayer')]
  return config


@pytest.mark.parametrize('network, hyperparameters', [
    ('seed', {}), ('sepconv_residual', {'augmentation_strength': 1.5}),
    ('efficientnet_lite0', {}), ('efficientnet_lite0', {'augmentation_policy': 'diverse'})])
def test_the_augmentation_built_alone_is_the_one_the_network_trains_with(network,
                                                                         hyperparameters):
  """The report draws `training_augmentation` without building the network: it must be the
  network's own layer, with the recipe's options."""
  recipe = networks.with_hyperparameters(networks.RECIPES[network], hyperparameters)
  options = {**recipe.options, **({'backbone_weights': backbones.RANDOM_WEIGHTS}
                                  if recipe.pretrained_backbone else {})}
  trained_with = recipe.build(64, 3, **options).get_layer('augmentation')
  alone = networks.training_augmentation(recipe)
  assert type(alone) is type(trained_with)
  assert _without_names(alone.get_config()) == _without_names(trained_with.get_config())
