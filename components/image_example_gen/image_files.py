"""What a file under the data root is, what it holds, and the tf.Example an image becomes.

The file policy of ImageExampleGen, apart from Beam: `classify_file` says from the path alone
whether a file is an image, a lesion mask of an image or something to skip (and why);
`open_image` decodes one fully or says why it cannot; `merge_masks` and `build_example` turn an
image and its masks into the example the pipeline reads.
"""

import io
import os
import re
from typing import Any, List, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image

from components import contracts
from models import features

_DECODABLE_FORMATS = {'PNG', 'JPEG', 'BMP'}
_MASK_STEM = re.compile(r'^(?P<image_stem>.+)' + contracts.MASK_SUFFIX + r'(?:_\d+)?$')


def relative_path(path: str, input_base: str) -> str:
  return os.path.relpath(path, input_base).replace(os.sep, '/')


def classify_file(path: str, input_base: str) -> Tuple[str, Any]:
  """Says what a matched file is.

  Returns ('image', (grouping key, path)), ('mask', (grouping key, path)) or
  ('skipped', {'file', 'reason'}). The grouping key joins an image with its masks:
  `benign/benign (1).png`, `benign/benign (1)_mask.png` and `benign/benign (1)_mask_1.png`
  all share the key `benign/benign (1)`.
  """
  relative = relative_path(path, input_base)
  folder, _, file_name = relative.rpartition('/')
  if folder not in features.LABEL_NAMES:
    expected = ', '.join(features.LABEL_NAMES)
    return 'skipped', {'file': relative, 'reason': f'not in a class folder ({expected})'}
  stem, extension = os.path.splitext(file_name)
  if extension.lower() not in contracts.IMAGE_EXTENSIONS:
    if tf.io.gfile.isdir(path):
      return 'skipped', {'file': relative, 'reason': 'a folder inside a class folder'}
    return 'skipped', {'file': relative, 'reason': f'not an image file ({extension or "no extension"})'}
  mask_match = _MASK_STEM.match(stem)
  if mask_match:
    return 'mask', (f'{folder}/{mask_match.group("image_stem")}', path)
  return 'image', (f'{folder}/{stem}', path)


def open_image(content: bytes) -> Image.Image:
  """Decodes fully (so truncated files fail here, not in training) or raises ValueError."""
  try:
    image = Image.open(io.BytesIO(content))
  except Exception as error:  # PIL raises many types for data it cannot identify.
    raise ValueError('unreadable image: not a PNG, JPEG or BMP file') from error
  try:
    image.load()
  except Exception as error:  # Truncated or corrupt pixel data.
    raise ValueError(f'unreadable image: {image.format} data is corrupt ({error})') from error
  if image.format not in _DECODABLE_FORMATS:
    raise ValueError(f'unsupported image format {image.format}')
  return image


def merge_masks(mask_images: List[Image.Image], size: Tuple[int, int]) -> bytes:
  """One PNG marking every pixel that any of the masks marks (BUSI has up to three per image)."""
  merged = np.zeros((size[1], size[0]), dtype=np.uint8)
  for mask in mask_images:
    mask = mask.convert('L')
    if mask.size != size:
      mask = mask.resize(size, Image.NEAREST)
    merged = np.maximum(merged, np.where(np.asarray(mask) > 127, 255, 0).astype(np.uint8))
  buffer = io.BytesIO()
  Image.fromarray(merged).save(buffer, format='PNG')
  return buffer.getvalue()


def _bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def build_example(image_bytes: bytes, image: Image.Image, label_name: str,
                  relative: str, mask_bytes: bytes, mask_count: int, image_hash: str,
                  duplicate_group: str) -> tf.train.Example:
  width, height = image.size
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: _bytes_feature(image_bytes),
      features.LABEL_KEY: _int_feature(features.LABEL_NAMES.index(label_name)),
      features.LABEL_NAME_KEY: _bytes_feature(label_name.encode()),
      features.FILENAME_KEY: _bytes_feature(relative.encode()),
      features.HEIGHT_KEY: _int_feature(height),
      features.WIDTH_KEY: _int_feature(width),
      features.MASK_KEY: _bytes_feature(mask_bytes),
      features.MASK_COUNT_KEY: _int_feature(mask_count),
      features.IMAGE_HASH_KEY: _bytes_feature(image_hash.encode()),
      features.DUPLICATE_GROUP_KEY: _bytes_feature(duplicate_group.encode()),
  }))


def label_of_key(key: str) -> str:
  """The class name of a grouping key such as 'benign/benign (1)'."""
  return key.split('/', 1)[0]


