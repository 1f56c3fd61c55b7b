"""Perceptual hashes of images and the groups of near-duplicates they form.

A library: ImageExampleGen groups images with it, DataQualityCheck looks for leaks with it and
the benchmarks measure it; it knows nothing of TFX.

The hash is a 128-bit DCT hash: the image is turned grey, its outer 6% margin is cut off (where
scanners burn in text and scales), it is median-filtered (which wipes out thin overlays such as
caliper crosses and dotted lines), shrunk to 32×32 and transformed with a 2-D DCT; each of the 128 lowest-frequency coefficients (zig-zag order, the DC term left out) gives one
bit, set when it exceeds the median coefficient. Re-encoding, resizing and brightness or gain
changes move few bits; different images differ in about half of them.

Images whose hashes differ in at most `max_distance` bits are near-duplicates, and groups are
closed transitively (connected components). Pairs are found by multi-index hashing, not by
comparing all pairs: 126 of the bits are cut into 7 bands of 18; two hashes within
`max_distance` differ in at most `max_distance // 7` bits on at least one band (pigeonhole), so
only images whose band lies that close are compared. The cost grows with the number of images
times the number of candidates each has, which stays small (a fraction of a percent of the data
set at the default distance), so it grows close to linearly.
"""

import itertools
from typing import List, Sequence

import numpy as np
from PIL import Image, ImageFilter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_BITS = 128
HASH_HEX_LENGTH = HASH_BITS // 4
# Chosen on BUSI and on synthetic copies; see docs/pipeline.md (Near-duplicates and label conflicts).
DEFAULT_MAX_DISTANCE = 20

_THUMBNAIL_SIZE = 32
_MEDIAN_FILTER_SIZE = 3
_MARGIN = 0.06
_BAND_BITS = 18
_BANDS = 7


def _dct_matrix(size: int) -> np.ndarray:
  """Orthonormal DCT-II basis: row k is the k-th cosine."""
  positions = np.arange(size)
  basis = np.cos(np.pi * (2 * positions[None, :] + 1) * positions[:, None] / (2 * size))
  basis[0] *= np.sqrt(1.0 / size)
  basis[1:] *= np.sqrt(2.0 / size)
  return basis


def _lowest_frequencies(count: int) -> np.ndarray:
  """Flat indices into a 32×32 DCT of the `count` lowest frequencies after DC, zig-zag order."""
  cells = sorted(itertools.product(range(_THUMBNAIL_SIZE), repeat=2),
                 key=lambda cell: (cell[0] + cell[1], cell[0]))
  return np.array([row * _THUMBNAIL_SIZE + column for row, column in cells[1:count + 1]])


_DCT = _dct_matrix(_THUMBNAIL_SIZE)
_HASHED_COEFFICIENTS = _lowest_frequencies(HASH_BITS)


def perceptual_hash(image: Image.Image) -> str:
  """The image's 128-bit hash as 32 hex digits."""
  grey = image.convert('L')
  width, height = grey.size
  left, top = round(width * _MARGIN), round(height * _MARGIN)
  grey = grey.crop((left, top, width - left, height - top)).filter(
      ImageFilter.MedianFilter(_MEDIAN_FILTER_SIZE))
  thumbnail = np.asarray(grey.resize((_THUMBNAIL_SIZE, _THUMBNAIL_SIZE), Image.LANCZOS),
                         dtype=np.float64)
  coefficients = (_DCT @ thumbnail @ _DCT.T).ravel()[_HASHED_COEFFICIENTS]
  bits = coefficients > np.median(coefficients)
  return np.packbits(bits).tobytes().hex()


def hashes_to_words(hex_hashes: Sequence[str]) -> np.ndarray:
  """[n] hex hashes → [n, 2] uint64 words (big-endian halves)."""
  if not hex_hashes:
    return np.zeros((0, 2), dtype=np.uint64)
  raw = b''.join(bytes.fromhex(value) for value in hex_hashes)
  return np.frombuffer(raw, dtype='>u8').astype(np.uint64).reshape(-1, 2)


_BYTE_POPCOUNT = np.array([bin(value).count('1') for value in range(256)], dtype=np.uint8)


def _popcount(words: np.ndarray) -> np.ndarray:
  """Set bits per row of a [n, k] uint64 array."""
  as_bytes = np.ascontiguousarray(words).view(np.uint8)  # [n, 8k]
  return _BYTE_POPCOUNT[as_bytes].sum(axis=1, dtype=np.int32)


def hash_distance(first: str, second: str) -> int:
  """Number of differing bits between two hex hashes."""
  words = hashes_to_words([first, second])
  return int(_popcount(words[:1] ^ words[1:])[0])


def _flips_within(radius: int, width: int) -> np.ndarray:
  """Every `width`-bit mask with at most `radius` bits set."""
  masks = [0]
  for bit_count in range(1, radius + 1):
    for bits in itertools.combinations(range(width), bit_count):
      masks.append(sum(1 << bit for bit in bits))
  return np.array(masks, dtype=np.int64)


def _bands(words: np.ndarray) -> np.ndarray:
  """[n, 7] band values: bits 0-17, 18-35, ... of each hash as integers."""
  bits = np.unpackbits(words.astype('>u8').view(np.uint8).reshape(len(words), -1), axis=1)
  weights = np.uint64(1) << np.arange(_BAND_BITS, dtype=np.uint64)
  return np.stack([bits[:, band * _BAND_BITS:(band + 1) * _BAND_BITS].astype(np.uint64) @ weights
                   for band in range(_BANDS)], axis=1)


def find_near_pairs(words: np.ndarray, max_distance: int) -> np.ndarray:
  """[k, 2] index pairs (i < j) whose hashes differ in at most `max_distance` bits."""
  if not 0 <= max_distance < HASH_BITS // 2:
    raise ValueError(f'max_distance must be between 0 and {HASH_BITS // 2 - 1}, '
                     f'got {max_distance}')
  count = len(words)
  flips = _flips_within(max_distance // _BANDS, _BAND_BITS)
  found = []
  bands = _bands(words).astype(np.int64)
  for band in range(_BANDS):
    values = bands[:, band]
    # A counting sort: images ordered by band value, and where each value's run starts; a probe
    # is then two array lookups instead of a binary search.
    order = np.argsort(values, kind='stable')
    count_of_value = np.bincount(values, minlength=1 << _BAND_BITS)
    start_of_value = np.cumsum(count_of_value) - count_of_value
    for flip in flips:
      probes = values ^ flip
      matches = count_of_value[probes]
      if not matches.any():
        continue
      starts = start_of_value[probes]
      first = np.repeat(np.arange(count), matches)
      # Positions starts[i] .. starts[i] + matches[i] - 1 of every probe, laid end to end.
      offsets = np.arange(matches.sum()) - np.repeat(np.cumsum(matches) - matches, matches)
      second = order[np.repeat(starts, matches) + offsets]
      keep = first < second
      first, second = first[keep], second[keep]
      close = _popcount(words[first] ^ words[second]) <= max_distance
      found.append(first[close] * count + second[close])
  # A pair close on several bands is found once per band.
  unique = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
  return np.stack([unique // count, unique % count], axis=1)


def group_near_duplicates(words: np.ndarray, max_distance: int) -> List[int]:
  """A group number per image: images joined by a chain of near pairs share one."""
  count = len(words)
  if count == 0:
    return []
  pairs = find_near_pairs(words, max_distance)
  graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                     shape=(count, count))
  _, labels = connected_components(graph, directed=False)
  return labels.tolist()
