"""EfficientNet-Lite0 and its ImageNet weights: read from the pinned package without torch, and
the real ones."""

import collections
import io
import os
import pickle
import struct
import sys
import types

import matplotlib
import numpy as np
from PIL import Image
import pytest

from models import backbones, efficientnet_lite, torch_checkpoint

MILITARY_UNIFORM = 652  # ImageNet class index (0-based, 1,000 classes)


def _imagenet_input(path: str, size: int) -> np.ndarray:
  with Image.open(path) as image:
    resized = image.convert('RGB').resize((size, size), Image.BICUBIC)
  return np.asarray(resized, np.float32)[np.newaxis] / 255.0


@pytest.mark.parametrize('variant, parameters, blocks', [
    ('efficientnet_lite0', 4_694_024, 16),
    ('efficientnet_lite1', 5_470_344, 21),
    ('efficientnet_lite2', 6_150_168, 21),
])
def test_the_packaged_weights_classify_a_photograph_as_imagenet_does(variant, parameters, blocks):
  """Grace Hopper's portrait, which ships with matplotlib, is TensorFlow's own label_image
  example: an ImageNet classifier calls it a military uniform. Random weights give each of the
  1,000 classes about 0.001 and rank it first one time in a thousand. Each variant at its own
  native size."""
  portrait = os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'sample_data',
                          'grace_hopper.jpg')
  classifier = efficientnet_lite.imagenet_classifier(variant)
  size = efficientnet_lite.VARIANTS[variant].native_size
  probabilities = classifier.predict(_imagenet_input(portrait, size), verbose=0)[0]
  assert probabilities.argmax() == MILITARY_UNIFORM
  assert probabilities[MILITARY_UNIFORM] > 0.15
  # Every layer with weights but the new top got them from the checkpoint, which had no layer
  # left over (batch-norm step counters aside, which Keras does not keep).
  assert classifier.count_params() == parameters
  assert len(list(efficientnet_lite._blocks(variant))) == blocks  # pylint: disable=protected-access


def test_another_variants_weights_are_refused_not_partly_loaded():
  lite1 = torch_checkpoint.read_state_dict(
      efficientnet_lite.packaged_weights_path('efficientnet_lite1'))
  with pytest.raises(ValueError, match=r'layer blocks_3_depthwise_conv: the checkpoint gives '
                     r'shapes \[\(3, 3, 144, 1\)\], the network has \[\(5, 5, 144, 1\)\]'):
    efficientnet_lite.load_weights(efficientnet_lite.trunk(64), lite1)
  # A checkpoint with a block more than the network: every layer of the network would fit.
  state = torch_checkpoint.read_state_dict(efficientnet_lite.packaged_weights_path())
  state['_blocks.16._project_conv.weight'] = np.zeros((320, 1920, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r'the checkpoint has 1 layer\(s\) efficientnet_lite0 '
                     r'lacks \(from _blocks\.16\._project_conv\): the weights of another variant'):
    efficientnet_lite.load_weights(efficientnet_lite.trunk(64), state)


def _legacy_checkpoint(state_pickle: bytes, keys=(), storages=(), magic=None) -> bytes:
  """A file laid out as torch's legacy `torch.save`: three header pickles, the state dict's
  pickle, the storage keys, then each storage's element count and bytes."""
  header = b''.join(pickle.dumps(value, protocol=2) for value in (
      torch_checkpoint.LEGACY_MAGIC_NUMBER if magic is None else magic, 1001,
      {'protocol_version': 1001, 'little_endian': True}))
  body = b''.join(struct.pack('<q', len(values)) + np.asarray(values, '<f4').tobytes()
                  for values in storages)
  return header + state_pickle + pickle.dumps(list(keys), protocol=2) + body


class _RunsACommand:
  """What a malicious checkpoint holds: unpickling it calls os.system."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_a_checkpoint_naming_another_class_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / 'ran'
  path = tmp_path / 'evil.pth'
  path.write_bytes(_legacy_checkpoint(pickle.dumps(
      collections.OrderedDict(weight=_RunsACommand(marker)), protocol=2)))
  with pytest.raises(torch_checkpoint.CheckpointError, match=r'refusing to load (posix|os)\.system'):
    torch_checkpoint.read_state_dict(str(path))
  assert not marker.exists()


def test_a_header_naming_a_class_is_refused_too(tmp_path):
  marker = tmp_path / 'ran'
  path = tmp_path / 'evil_header.pth'
  path.write_bytes(_legacy_checkpoint(pickle.dumps({}, protocol=2),
                                      magic=_RunsACommand(marker)))
  with pytest.raises(torch_checkpoint.CheckpointError, match='refusing to load'):
    torch_checkpoint.read_state_dict(str(path))
  assert not marker.exists()


def _torch_names(monkeypatch):
  """Stand-ins registered under the names torch's classes have, so that pickle writes what
  torch.save writes: (the tensor rebuilder, the float storage type)."""
  torch_module, utils_module = types.ModuleType('torch'), types.ModuleType('torch._utils')

  def rebuild(*unused):
    raise AssertionError('never called: the reader has its own')

  class FloatStorage:
    pass

  rebuild.__module__, rebuild.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
  FloatStorage.__module__, FloatStorage.__qualname__ = 'torch', 'FloatStorage'
  utils_module._rebuild_tensor_v2 = rebuild  # pylint: disable=protected-access
  torch_module.FloatStorage = FloatStorage
  monkeypatch.setitem(sys.modules, 'torch', torch_module)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils_module)
  return rebuild, FloatStorage


def _state_dict_pickle(monkeypatch, tensors) -> bytes:
  """The pickle torch.save writes for {name: (storage key, storage size, shape, stride)}."""
  rebuild, float_storage = _torch_names(monkeypatch)

  class Storage:
    def __init__(self, key, size):
      self.key, self.size = key, size

  class Tensor:
    def __init__(self, storage, shape, stride):
      self.storage, self.shape, self.stride = storage, shape, stride

    def __reduce__(self):
      return rebuild, (self.storage, 0, self.shape, self.stride, False,
                       collections.OrderedDict())

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, Storage):
        return ('storage', float_storage, obj.key, 'cpu', obj.size, None)
      return None

  stream = io.BytesIO()
  Pickler(stream, protocol=2).dump(collections.OrderedDict(
      (name, Tensor(Storage(key, size), shape, stride))
      for name, (key, size, shape, stride) in tensors.items()))
  return stream.getvalue()


def test_a_state_dict_is_read_with_its_shapes_and_strides(tmp_path, monkeypatch):
  """A hand-made checkpoint of two tensors on one storage, the second a transposed view."""
  state = _state_dict_pickle(monkeypatch, {'matrix': ('7', 6, (2, 3), (3, 1)),
                                           'transposed': ('7', 6, (3, 2), (1, 3))})
  path = tmp_path / 'small.pth'
  path.write_bytes(_legacy_checkpoint(state, keys=['7'], storages=[[0, 1, 2, 3, 4, 5]]))
  read = torch_checkpoint.read_state_dict(str(path))
  np.testing.assert_array_equal(read['matrix'], [[0, 1, 2], [3, 4, 5]])
  np.testing.assert_array_equal(read['transposed'], [[0, 3], [1, 4], [2, 5]])
  assert read['matrix'].dtype == np.float32
  # Cut short, the file is refused rather than read as zeros.
  path.write_bytes(path.read_bytes()[:-8])
  with pytest.raises(torch_checkpoint.CheckpointError, match='truncated'):
    torch_checkpoint.read_state_dict(str(path))


def test_weights_of_another_shape_are_refused():
  network = efficientnet_lite.trunk(64)
  state = torch_checkpoint.read_state_dict(efficientnet_lite.packaged_weights_path())
  state['_conv_head.weight'] = np.zeros((1280, 100, 1, 1), np.float32)
  with pytest.raises(ValueError, match='conv_head'):
    efficientnet_lite.load_weights(network, state)
  del state['_conv_head.weight']
  with pytest.raises(ValueError, match='no .*_conv_head.weight'):
    efficientnet_lite.load_weights(network, state)


def test_without_the_package_the_message_says_what_to_install(monkeypatch):
  def missing(variant):
    raise FileNotFoundError(f'{variant} not installed')
  monkeypatch.setattr(efficientnet_lite, 'packaged_weights_path', missing)
  package = efficientnet_lite.VARIANTS['efficientnet_lite0'].package
  with pytest.raises(FileNotFoundError, match=package):
    backbones.resolve_weights('efficientnet_lite0', None)
  assert backbones.resolve_weights('efficientnet_lite0', backbones.RANDOM_WEIGHTS) is None
