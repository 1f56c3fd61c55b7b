"""Near-duplicates: the perceptual hash, the grouping, the group-aware split and the report.

The data set is made here: distinct synthetic images at BUSI's size (256 px), plus copies of
some of them of every kind public ultrasound sets contain (exact, re-encoded as JPEG, resized,
with calipers and text drawn on, brighter, darker), and copies filed under another label.
"""

import collections
import itertools
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import contracts, near_duplicates
from components.artifact_types import DataQualityReport
from components.data_quality import contact_sheet, report
from components.data_quality.component import DataQualityCheck
from components.data_validation_gate.component import DataAnomaliesError, check_data_quality
from components.image_example_gen import component
from data import synthetic
from models import features

IMAGES_PER_CLASS = 12
SIZE = 256


def hash_file(path) -> str:
  return near_duplicates.perceptual_hash(Image.open(path))


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
  """A data set with known near-duplicate groups: returns (root, expected groups)."""
  root = tmp_path_factory.mktemp('planted') / 'images'
  synthetic.generate_dataset(str(root), images_per_class=IMAGES_PER_CLASS, image_size=SIZE,
                             seed=21)
  groups = {}  # source file → the files that must share its group
  number = IMAGES_PER_CLASS
  for index, kind in enumerate(synthetic.NEAR_DUPLICATE_KINDS):
    for class_name in features.LABEL_NAMES:
      source = f'{class_name}/{class_name} ({index + 1}).png'
      stem = os.path.join(root, class_name, f'{class_name} ({number + 1})')
      copy = synthetic.save_near_duplicate(os.path.join(root, source), stem, kind)
      groups.setdefault(source, [source]).append(os.path.relpath(copy, root))
    number += 1
  # Label conflicts: a benign image re-encoded into malignant/, a normal one copied to benign/.
  for source, target_class, kind in (('benign/benign (11).png', 'malignant', 'jpeg'),
                                     ('normal/normal (12).png', 'benign', 'exact')):
    number += 1
    stem = os.path.join(root, target_class, f'{target_class} ({number})')
    copy = synthetic.save_near_duplicate(os.path.join(root, source), stem, kind)
    groups[source] = [source, os.path.relpath(copy, root)]
  return root, groups


def expected_partition(root, groups):
  """Every image's expected group as a frozenset of files (unique images: groups of one)."""
  files = sorted(os.path.relpath(os.path.join(folder, name), root)
                 for folder, _, names in os.walk(root) for name in names if '_mask' not in name)
  in_group = {member: frozenset(members) for members in groups.values() for member in members}
  return {file: in_group.get(file, frozenset([file])) for file in files}


def test_every_kind_of_copy_is_within_the_default_distance(planted):
  root, groups = planted
  for members in groups.values():
    source_hash = hash_file(root / members[0])
    for copy in members[1:]:
      distance = near_duplicates.hash_distance(source_hash, hash_file(root / copy))
      assert distance <= near_duplicates.DEFAULT_MAX_DISTANCE, (copy, distance)


@pytest.mark.parametrize('seed', [4, 5, 6, 7])
def test_distinct_images_are_never_within_the_default_distance(tmp_path, seed):
  # Four independent sets of 120, 28,560 pairs in all. The near-duplicate benchmark measured 27
  # chance pairs within 20 bits in 2×10⁸ pairs of such images (about one in 7×10⁶), so no false
  # merge is expected here; a hash that merges distinct images more often fails.
  synthetic.generate_dataset(str(tmp_path), images_per_class=40, image_size=SIZE, seed=seed)
  paths = sorted(tmp_path.glob('*/*).png'))
  hashes = [hash_file(path) for path in paths]
  distances = [near_duplicates.hash_distance(a, b) for a, b in itertools.combinations(hashes, 2)]
  assert len(distances) == 120 * 119 // 2
  assert min(distances) > near_duplicates.DEFAULT_MAX_DISTANCE


def test_banded_search_finds_exactly_the_pairs_all_pairs_comparison_finds():
  rng = np.random.default_rng(0)
  words = rng.integers(0, 2**63, size=(400, 2), dtype=np.int64).astype(np.uint64)
  # Plant neighbours at every distance from 0 to 30 bits.
  for offset, distance in enumerate(range(31)):
    flipped = words[offset].copy()
    for bit in rng.choice(128, size=distance, replace=False):
      flipped[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    words[200 + offset] = flipped
  for max_distance in (0, 6, 20, 27):
    found = {tuple(pair) for pair in near_duplicates.find_near_pairs(words, max_distance).tolist()}
    brute = set()
    for first, second in itertools.combinations(range(len(words)), 2):
      bits = bin(int(words[first][0] ^ words[second][0])).count('1') + bin(
          int(words[first][1] ^ words[second][1])).count('1')
      if bits <= max_distance:
        brute.add((first, second))
    assert found == brute
    assert len(found) == max_distance + 1  # only the planted ones: random hashes lie ~64 apart


def test_groups_are_closed_transitively():
  base = near_duplicates.hashes_to_words(['0' * 32])[0]
  chain = []
  for step in range(4):  # Each hash 12 bits from the last: 0 and 3 are 36 apart.
    word = base.copy()
    word[0] ^= np.uint64((1 << (12 * step)) - 1)
    chain.append(word)
  groups = near_duplicates.group_near_duplicates(np.stack(chain), max_distance=12)
  assert len(set(groups)) == 1


def run_example_gen(root, tmp_path, policy):
  examples = component.run_executor_directly(str(root), str(tmp_path / policy),
                                             label_conflict_policy=policy)
  split_uris = {split: os.path.join(examples.uri, f'Split-{split}')
                for split in ('train', 'eval', contracts.EXCLUDED_SPLIT)}
  return examples, report.read_image_rows(split_uris), split_uris


@pytest.mark.parametrize('policy', ['exclude', 'keep'])
def test_copies_are_grouped_never_split_and_conflicts_follow_the_policy(planted, tmp_path, policy):
  root, groups = planted
  examples, rows, _ = run_example_gen(root, tmp_path, policy)
  expected = expected_partition(root, groups)
  assert sorted(row.file for row in rows) == sorted(expected)

  members_of = collections.defaultdict(set)
  for row in rows:
    members_of[row.group].add(row.file)
  # Every copy found and grouped with its source, and nothing else merged.
  assert {row.file: frozenset(members_of[row.group]) for row in rows} == expected
  # No group on two sides.
  for group, files in members_of.items():
    assert len({row.split for row in rows if row.file in files}) == 1, group

  conflicts = {'benign/benign (11).png', 'normal/normal (12).png'}
  conflict_rows = [row for row in rows if expected[row.file] & conflicts]
  assert len(conflict_rows) == 4
  if policy == 'exclude':
    assert {row.split for row in conflict_rows} == {contracts.EXCLUDED_SPLIT}
  else:
    assert contracts.EXCLUDED_SPLIT not in {row.split for row in conflict_rows}
  assert not [row for row in rows if row.split == contracts.EXCLUDED_SPLIT
              and not expected[row.file] & conflicts]
  assert examples.get_string_custom_property(contracts.LABEL_CONFLICT_POLICY_PROPERTY) == policy

  data_quality = report.build_report(rows, near_duplicates.DEFAULT_MAX_DISTANCE, policy)
  assert data_quality['image_count'] == 3 * IMAGES_PER_CLASS + 18 + 2
  assert data_quality['duplicate_group_count'] == 18 + 2
  assert data_quality['label_conflict_count'] == 2
  assert data_quality['excluded_image_count'] == (4 if policy == 'exclude' else 0)
  assert data_quality['cross_split_leak_count'] == 0
  assert data_quality['violations'] == []
  # Still stratified: every class in both splits, about 20% in eval.
  assert sum(data_quality['class_counts']['eval'].values()) in range(8, 15)
  assert set(data_quality['class_counts']['eval']) == set(features.LABEL_NAMES)


def test_fail_policy_and_leaks_are_violations_the_gate_stops_on(planted, tmp_path):
  root, _ = planted
  _, rows, _ = run_example_gen(root, tmp_path, 'fail')
  data_quality = report.build_report(rows, near_duplicates.DEFAULT_MAX_DISTANCE, 'fail')
  assert len(data_quality['violations']) == 1
  assert 'label conflict' in data_quality['violations'][0]
  assert 'benign/benign (11).png (benign)' in data_quality['violations'][0]

  # A leak planted by hand: one image of a group moved to the other split.
  grouped = [row for row in rows if row.group == 'benign/benign (1).png']
  other = 'eval' if grouped[0].split == 'train' else 'train'
  grouped[1].split = other
  leaked = report.build_report(rows, near_duplicates.DEFAULT_MAX_DISTANCE, 'keep')
  kinds = sorted(leak['kind'] for leak in leaked['cross_split_leaks'])
  assert kinds == ['group on both sides', 'near-duplicate pair across splits']
  assert 'cross-split leak' in leaked['violations'][0]

  artifact = DataQualityReport()
  artifact.set_json_value_custom_property('violations', leaked['violations'])
  with pytest.raises(DataAnomaliesError, match='cross-split leak'):
    check_data_quality(artifact)


def test_contact_sheet_shows_conflicts_first(planted, tmp_path):
  root, _ = planted
  _, rows, split_uris = run_example_gen(root, tmp_path, 'exclude')
  data_quality = report.build_report(rows, near_duplicates.DEFAULT_MAX_DISTANCE, 'exclude')
  first_two = data_quality['duplicate_groups'][:2]
  assert all(group['label_conflict'] for group in first_two)
  wanted = {member['file'] for group in first_two for member in group['files']}
  images = report.read_images(split_uris, wanted)
  assert set(images) == wanted
  sheet = contact_sheet.draw_contact_sheet(data_quality['duplicate_groups'], images, 'test')
  assert sheet.height > 2 * contact_sheet.THUMBNAIL
  # The first conflict's thumbnails are drawn (not background) where the first row sits.
  pixels = np.asarray(sheet.convert('L'))
  assert pixels[70:70 + contact_sheet.THUMBNAIL, 8:8 + contact_sheet.THUMBNAIL].std() > 5


def copy_tree(source: str, destination: str) -> None:
  for folder, _, files in tf.io.gfile.walk(source):
    target = os.path.join(destination, os.path.relpath(folder, source))
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name))


def test_data_quality_check_reads_and_writes_a_non_local_filesystem(planted, tmp_path):
  # TensorFlow's in-memory filesystem stands in for gs://: what `glob` or `open` would not see.
  root, _ = planted
  examples = component.run_executor_directly(str(root), str(tmp_path / 'examples'))
  copy_tree(examples.uri, 'ram://data_quality_test/examples')
  examples.uri = 'ram://data_quality_test/examples'
  data_quality = DataQualityReport()
  data_quality.uri = 'ram://data_quality_test/report'
  DataQualityCheck.EXECUTOR_SPEC.executor_class().Do(
      {'examples': [examples]}, {'data_quality': [data_quality]}, {'code_version': ''})
  assert data_quality.get_int_custom_property('image_count') == 3 * IMAGES_PER_CLASS + 18 + 2
  assert data_quality.get_int_custom_property('label_conflict_count') == 2
  for name in (contracts.DATA_QUALITY_FILE, contracts.IMAGE_GROUPS_FILE,
               contracts.CONTACT_SHEET_FILE):
    assert tf.io.gfile.stat(f'ram://data_quality_test/report/{name}').length > 0
