"""Transfer learning for users who have pretrained weights: Keras Applications backbones.

`--model efficientnet_b0` or `--model mobilenet_v3_small` puts a Keras Applications network
(without its classifier) under the project's augmentation, dropout and softmax, and trains it in
two phases (models/training.py): the backbone frozen while the new head learns, then its top
layers unfrozen at a tenth of the learning rate.

Weights come from, in order: `--backbone-weights PATH` (a weights file of the same backbone, for
example one saved with `save_weights` after pretraining on your own archive), Keras's own cache
(`~/.keras/models/<file>`, where `keras.applications` keeps the ImageNet weights it downloads),
or, only when asked with `--backbone-weights random`, random initialisation. Nothing is downloaded:
with no weights, `missing_weights_message` says where to put them. This project's machines cannot
download ImageNet weights, so the gain of pretraining is not measured here.
"""

import dataclasses
import os
from typing import Callable, Dict, Optional

import tf_keras as keras

from models import augmentation

RANDOM_WEIGHTS = 'random'
BACKBONE_LAYER = 'backbone'


@dataclasses.dataclass(frozen=True)
class Backbone:
  application: Callable[..., keras.Model]
  cache_file: str  # the no-top ImageNet weights' name in Keras's cache
  extra_arguments: Dict[str, object] = dataclasses.field(default_factory=dict)


BACKBONES: Dict[str, Backbone] = {
    'efficientnet_b0': Backbone(keras.applications.EfficientNetB0, 'efficientnetb0_notop.h5'),
    'mobilenet_v3_small': Backbone(
        keras.applications.MobileNetV3Small,
        'weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5',
        {'include_preprocessing': True}),
}


def keras_cache_path(backbone: str) -> str:
  return os.path.join(os.path.expanduser('~'), '.keras', 'models', BACKBONES[backbone].cache_file)


def missing_weights_message(backbone: str) -> str:
  return (f'no pretrained weights for {backbone}: put {BACKBONES[backbone].cache_file} in '
          f'{os.path.dirname(keras_cache_path(backbone))} (Keras\'s cache, where '
          'keras.applications keeps ImageNet weights) or pass --backbone-weights PATH; '
          f'--backbone-weights {RANDOM_WEIGHTS} trains it from random weights')


def resolve_weights(backbone: str, backbone_weights: Optional[str]) -> Optional[str]:
  """What the backbone starts from: a weights file's path, 'imagenet' (Keras's cache), or None
  (random). Raises FileNotFoundError with `missing_weights_message` when there are none."""
  if backbone_weights == RANDOM_WEIGHTS:
    return None
  if backbone_weights:
    if not os.path.isfile(backbone_weights):
      raise FileNotFoundError(f'--backbone-weights {backbone_weights}: no such file')
    return backbone_weights
  if os.path.isfile(keras_cache_path(backbone)):
    return 'imagenet'
  raise FileNotFoundError(missing_weights_message(backbone))


def backbone_network(image_size: int, num_classes: int, backbone: str,
                     backbone_weights: Optional[str] = None, working_size: int = 160,
                     dropout: float = 0.3, augmentation_strength: float = 1.0) -> keras.Model:
  """The backbone (named `backbone`, global average pooled) under the project's ultrasound
  augmentation, a dropout and a softmax named `probabilities`. Inputs are [0, 1] pixels; the
  Keras Applications networks take [0, 255] and normalise inside."""
  # Hyperparameters read back from ML Metadata are JSON numbers: 128.0 for 128.
  working_size = int(working_size)
  weights = resolve_weights(backbone, backbone_weights)
  inputs = keras.Input(shape=(image_size, image_size, 3), name='image_pixels')
  x = inputs
  if image_size != working_size:
    x = keras.layers.Resizing(working_size, working_size, interpolation='area')(x)
  x = augmentation.ultrasound_augmentation(augmentation_strength)(x)
  x = keras.layers.Rescaling(255.0)(x)
  spec = BACKBONES[backbone]
  trunk = spec.application(include_top=False, pooling=None,
                           weights='imagenet' if weights == 'imagenet' else None,
                           input_shape=(working_size, working_size, 3), **spec.extra_arguments)
  if weights not in (None, 'imagenet'):
    trunk.load_weights(weights)
  trunk = keras.Model(trunk.inputs, trunk.outputs, name=BACKBONE_LAYER)
  x = trunk(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(dropout)(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax', name='probabilities')(x)
  return keras.Model(inputs, outputs, name=backbone)
