"""Benchmark: perceptual hashing and near-duplicate grouping on up to 20,000 synthetic images.

    python -m benchmarks.near_duplicate_grouping [--images 20000] [--cache-dir DIR]

Writes distinct synthetic 256-px images (5% of them copied once more: exact, JPEG, resized,
with calipers and text, brighter or darker) into a cache folder the first time, then measures
what ImageExampleGen does per image (read, decode, hash) and the grouping of all hashes at
several data-set sizes. The grouping is a banded (multi-index) search, not an all-pairs
comparison; the table shows how its cost grows. It also counts planted copies missed and
distinct images wrongly merged.
"""

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

from components import near_duplicates
from data import synthetic
from models import features

COPY_EVERY = 20  # one planted copy per 20 distinct images


def build_image_set(directory: str, images: int) -> dict:
  """Writes the images (once) and returns {copy file: source file}."""
  os.makedirs(directory, exist_ok=True)
  distinct = images * COPY_EVERY // (COPY_EVERY + 1)
  sources = {}
  for number in range(distinct):
    path = os.path.join(directory, f'image ({number}).png')
    if not os.path.exists(path):
      rng = np.random.default_rng([11, number])
      image, _ = synthetic.synthesize_image(features.LABEL_NAMES[number % 3], rng)
      Image.fromarray(image).save(path)
    if number % COPY_EVERY == 0:
      kind = synthetic.NEAR_DUPLICATE_KINDS[(number // COPY_EVERY)
                                            % len(synthetic.NEAR_DUPLICATE_KINDS)]
      stem = os.path.join(directory, f'copy {kind} ({number})')
      existing = [stem + extension for extension in ('.png', '.jpg')
                  if os.path.exists(stem + extension)]
      copy = existing[0] if existing else synthetic.save_near_duplicate(path, stem, kind)
      sources[os.path.basename(copy)] = os.path.basename(path)
  return sources


def grouping_errors(names, groups, sources):
  """(planted copies not grouped with their source, groups merging distinct images)."""
  group_of = dict(zip(names, groups))
  missed = sum(1 for copy, source in sources.items()
               if copy in group_of and source in group_of
               and group_of[copy] != group_of[source])
  distinct_per_group = {}
  for name, group in group_of.items():
    distinct_per_group.setdefault(group, set()).add(sources.get(name, name))
  false_merges = sum(1 for members in distinct_per_group.values() if len(members) > 1)
  return missed, false_merges


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=20000)
  parser.add_argument('--cache-dir', default='/tmp/near_duplicate_benchmark')
  parser.add_argument('--max-distance', type=int, default=near_duplicates.DEFAULT_MAX_DISTANCE)
  args = parser.parse_args(argv)

  directory = os.path.join(args.cache_dir, str(args.images))
  started = time.time()
  sources = build_image_set(directory, args.images)
  names = sorted(os.listdir(directory))
  print(f'{len(names)} images ({len(sources)} planted copies) in {directory} '
        f'(ready in {time.time() - started:.0f} s)')

  started = time.perf_counter()
  hashes = []
  for name in names:
    with open(os.path.join(directory, name), 'rb') as handle:
      image = Image.open(handle)
      image.load()
    hashes.append(near_duplicates.perceptual_hash(image))
  hashing_seconds = time.perf_counter() - started
  print(f'read + decode + hash: {len(names) / hashing_seconds:.0f} images/s '
        f'({hashing_seconds:.1f} s, one core)\n')

  print(f'{"images":>8} {"grouping s":>11} {"images/s":>10} {"µs/image":>9} {"pairs":>7} '
        f'{"groups":>7} {"missed copies":>14} {"false merges":>13}')
  words = near_duplicates.hashes_to_words(hashes)
  for size in sorted({size for size in (2500, 5000, 10000, len(names)) if size <= len(names)}):
    started = time.perf_counter()
    groups = near_duplicates.group_near_duplicates(words[:size], args.max_distance)
    seconds = time.perf_counter() - started
    pairs = near_duplicates.find_near_pairs(words[:size], args.max_distance)
    missed, false_merges = grouping_errors(names[:size], groups, sources)
    print(f'{size:>8} {seconds:>11.2f} {size / seconds:>10.0f} {seconds / size * 1e6:>9.0f} '
          f'{len(pairs):>7} {len(set(groups)):>7} {missed:>14} {false_merges:>13}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
