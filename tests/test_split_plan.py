"""Planning the split from (file, label, hash) records alone: whole near-duplicate groups,
stratified by label, deterministic, label conflicts by policy. No Beam, no files."""

import collections
import random

import numpy as np

from components import near_duplicates
from components.image_example_gen import split_plan
from models import group_split

TRAIN, EVAL, EXCLUDED = 0, 1, 2
BUCKETS = [80, 100]  # cumulative: train 80 %, eval 20 %


def random_hash(rng: np.random.Generator) -> str:
  return rng.integers(0, 256, size=16, dtype=np.uint8).tobytes().hex()


def near_copy(hex_hash: str, flipped_bits: int, rng: np.random.Generator) -> str:
  bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_hash), dtype=np.uint8))
  bits[rng.choice(128, size=flipped_bits, replace=False)] ^= 1
  return np.packbits(bits).tobytes().hex()


def records_with_groups(seed: int = 0):
  """60 benign, 30 malignant, 20 normal unique images; five benign groups of three copies; one
  group filed under two labels (benign and malignant)."""
  rng = np.random.default_rng(seed)
  records = []
  for label, count in (('benign', 60), ('malignant', 30), ('normal', 20)):
    records += [{'file': f'{label}/{label} ({number}).png', 'label': label,
                 'hash': random_hash(rng)} for number in range(count)]
  for group in range(5):
    source = random_hash(rng)
    records += [{'file': f'benign/copy {group}-{copy}.png', 'label': 'benign',
                 'hash': near_copy(source, 6 * copy, rng)} for copy in range(3)]
  conflict = random_hash(rng)
  records += [{'file': 'benign/conflict.png', 'label': 'benign', 'hash': conflict},
              {'file': 'malignant/conflict.png', 'label': 'malignant',
               'hash': near_copy(conflict, 3, rng)}]
  return records


def plan(records, policy='exclude'):
  return split_plan.plan_splits(records, BUCKETS, near_duplicates.DEFAULT_MAX_DISTANCE,
                                policy, excluded_index=EXCLUDED)[0]


def test_every_record_gets_a_split_and_copies_share_one_group_and_split():
  records = records_with_groups()
  planned = plan(records)
  assert set(planned) == {record['file'] for record in records}
  for group in range(5):
    copies = [planned[f'benign/copy {group}-{copy}.png'] for copy in range(3)]
    assert len({split for split, _, _ in copies}) == 1
    assert {name for _, name, _ in copies} == {f'benign/copy {group}-0.png'}  # first in order
  unique = planned['benign/benign (0).png']
  assert unique[1] == 'benign/benign (0).png'  # a group of one is named after itself
  assert unique[2] == [r['hash'] for r in records if r['file'] == 'benign/benign (0).png'][0]


def test_split_is_stratified_by_label():
  records = records_with_groups()
  planned = plan(records)
  in_eval = collections.Counter(record['label'] for record in records
                                if planned[record['file']][0] == EVAL)
  # 20 % of each class, to within a group of three.
  assert abs(in_eval['benign'] - 0.2 * 75) <= 3
  assert in_eval['malignant'] == 6 and in_eval['normal'] == 4


def test_plan_does_not_depend_on_record_order():
  records = records_with_groups()
  shuffled = list(records)
  random.Random(5).shuffle(shuffled)
  assert plan(records) == plan(shuffled)


def test_label_conflicts_are_excluded_or_split_by_majority_label():
  records = records_with_groups()
  excluded = plan(records, 'exclude')
  assert excluded['benign/conflict.png'][0] == excluded['malignant/conflict.png'][0] == EXCLUDED
  assert sum(1 for split, _, _ in excluded.values() if split == EXCLUDED) == 2
  kept = plan(records, 'keep')
  assert kept['benign/conflict.png'][0] == kept['malignant/conflict.png'][0] != EXCLUDED
  assert not [split for split, _, _ in kept.values() if split == EXCLUDED]


def with_patients(records, patients=12, seed=1):
  """The records, each unique image given one of `patients` patients at random (copies keep
  none: their group already holds them together)."""
  rng = random.Random(seed)
  return [{**record, 'patient': f'patient-{rng.randrange(patients)}'}
          if 'copy' not in record['file'] and 'conflict' not in record['file'] else record
          for record in records]


def test_no_patient_is_on_both_sides_and_a_patient_is_one_group():
  records = with_patients(records_with_groups())
  planned = plan(records)
  sides = collections.defaultdict(set)
  groups = collections.defaultdict(set)
  for record in records:
    if record.get('patient'):
      sides[record['patient']].add(planned[record['file']][0])
      groups[record['patient']].add(planned[record['file']][1])
  assert len(sides) == 12
  assert all(len(splits) == 1 for splits in sides.values()), sides
  assert {EVAL} in sides.values() and {TRAIN} in sides.values()
  assert all(len(names) == 1 for names in groups.values())  # the Trainer's folds follow groups
  # Without the patients, the same images do land on both sides for some patient.
  unmerged = plan([{key: value for key, value in record.items() if key != 'patient'}
                   for record in records])
  assert any(len({unmerged[record['file']][0] for record in records
                  if record.get('patient') == patient}) > 1 for patient in sides)


def test_a_patient_with_two_labels_is_split_not_excluded_and_a_copy_links_two_patients():
  rng = np.random.default_rng(3)
  records = [{'file': f'p{patient}/{label}.png', 'label': label, 'hash': random_hash(rng),
              'patient': f'patient-{patient}'}
             for patient in range(10) for label in ('benign', 'normal')]
  copy = {'file': 'p0/copy.png', 'label': 'benign', 'patient': 'patient-1',
          'hash': near_copy(records[0]['hash'], 2, rng)}
  planned = plan(records + [copy])
  assert not [split for split, _, _ in planned.values() if split == EXCLUDED]
  # patient-0's benign image and its near copy filed under patient-1: one group of both.
  assert len({planned[record['file']] [1] for record in records + [copy]
              if record['patient'] in ('patient-0', 'patient-1')}) == 1


def test_the_frames_of_a_clip_are_one_group_whatever_their_hashes():
  rng = np.random.default_rng(4)
  records = [{'file': f'{label}/{index}.png', 'label': label, 'hash': random_hash(rng)}
             for label in ('benign', 'malignant') for index in range(20)]
  frames = [{'file': f'malignant/IM7#frame{frame}', 'label': 'malignant', 'hash': random_hash(rng),
             'clip': 'malignant/IM7'} for frame in range(1, 9)]
  planned = plan(records + frames)
  assert len({planned[frame['file']] [:2] for frame in frames}) == 1
  assert planned['malignant/IM7#frame1'][1] == 'malignant/IM7#frame1'
  unmerged = plan(records + [{key: value for key, value in frame.items() if key != 'clip'}
                             for frame in frames])
  assert len({unmerged[frame['file']][0] for frame in frames}) == 2


def test_majority_label_breaks_ties_by_the_class_vocabulary():
  assert split_plan.majority_label(['normal', 'malignant', 'normal']) == 'normal'
  assert split_plan.majority_label(['normal', 'malignant']) == 'malignant'
  assert split_plan.majority_label(['malignant', 'benign']) == 'benign'


def test_assign_group_splits_places_each_group_by_its_midpoint():
  groups = [(f'g{number}', 'benign', 1) for number in range(10)]
  splits = group_split.assign_group_splits(groups, BUCKETS)
  assert collections.Counter(splits.values()) == {TRAIN: 8, EVAL: 2}
  # One big group and small ones: the big one lands whole on the side its midpoint falls in.
  lopsided = group_split.assign_group_splits([('big', 'normal', 9), ('small', 'normal', 1)],
                                            BUCKETS)
  assert set(lopsided) == {'big', 'small'}
  assert sorted(lopsided.values()) in ([TRAIN, TRAIN], [TRAIN, EVAL])


def in_span(records, span):
  return [{**record, 'file': f'span-{span}/{record["file"]}', 'span': span}
          for record in records]


def test_an_older_span_keeps_its_split_and_a_copy_of_its_image_joins_that_split():
  rng = np.random.default_rng(7)
  older = in_span(records_with_groups(seed=1), 1)
  planned_then = plan(older)
  newer = in_span([{'file': f'{label}/new {number}.png', 'label': label,
                    'hash': random_hash(rng)}
                   for label in ('benign', 'malignant', 'normal') for number in range(20)], 2)
  copied = [record for record in older if record['label'] == 'benign'][:6]
  copies = [{'file': f'span-2/benign/copy of {number}.png', 'label': 'benign',
             'hash': near_copy(record['hash'], 2, rng), 'span': 2}
            for number, record in enumerate(copied)]
  planned_now, companions = split_plan.plan_splits(
      older + newer + copies, BUCKETS, near_duplicates.DEFAULT_MAX_DISTANCE, 'exclude',
      excluded_index=EXCLUDED)

  assert set(planned_now) == {record['file'] for record in newer + copies}  # the newest only
  for number, record in enumerate(copied):
    split, group, _ = planned_now[f'span-2/benign/copy of {number}.png']
    assert (split, group) == planned_then[record['file']][:2]
  assert {EVAL, TRAIN} <= {planned_then[record['file']][0] for record in copied}
  # The older images a copy joined are handed on for the data-quality report, with the split
  # they were given when their span was ingested.
  assert {row['file']: row['split'] for row in companions} == {
      record['file']: planned_then[record['file']][0] for record in copied}


def test_a_copy_across_spans_under_another_label_is_excluded_and_the_older_image_stays():
  rng = np.random.default_rng(8)
  older = in_span(records_with_groups(seed=2), 1)
  source = next(record for record in older if record['file'] == 'span-1/normal/normal (3).png')
  conflict = {'file': 'span-2/malignant/relabelled.png', 'label': 'malignant',
              'hash': near_copy(source['hash'], 1, rng), 'span': 2}
  planned_now, companions = split_plan.plan_splits(
      older + [conflict], BUCKETS, near_duplicates.DEFAULT_MAX_DISTANCE, 'exclude',
      excluded_index=EXCLUDED)
  assert planned_now[conflict['file']][:2] == (EXCLUDED, source['file'])
  assert companions == [{'file': source['file'], 'label': 'normal',
                         'split': plan(older)[source['file']][0], 'hash': source['hash'],
                         'group': source['file']}]
  kept, _ = split_plan.plan_splits(older + [conflict], BUCKETS,
                                   near_duplicates.DEFAULT_MAX_DISTANCE, 'keep',
                                   excluded_index=EXCLUDED)
  assert kept[conflict['file']][0] == plan(older)[source['file']][0]
