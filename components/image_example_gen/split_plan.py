"""Planning the train/eval split from hashed images: pure, no Beam, no files.

From `{'file', 'label', 'hash'}` records (one per readable image) to a split per image: images
whose perceptual hashes lie within `max_hash_distance` bits form near-duplicate groups
(transitively), and whole groups are dealt to the splits, stratified by label and
deterministically. Groups whose members carry different labels are label conflicts, which the
`exclude` policy sends to a split of their own.
"""

from typing import Dict, Iterable, List, Tuple

from components import near_duplicates
from models import features
from models.group_split import assign_group_splits


def majority_label(labels: Iterable[str]) -> str:
  """The most frequent label; ties go to the first in the class vocabulary."""
  labels = list(labels)
  return max(features.LABEL_NAMES, key=lambda name: (labels.count(name),
                                                     -features.LABEL_NAMES.index(name)))


def plan_splits(records: List[Dict[str, str]], cumulative_buckets: List[int],
                max_hash_distance: int, label_conflict_policy: str,
                excluded_index: int) -> Iterable[Tuple[str, Tuple[int, str, str]]]:
  """Groups the hashed images and gives each (relative path, (split index, group, hash)).

  `records` are hash_images outputs. A group is named after its first member in sort order.
  Label conflicts go to `excluded_index` under the `exclude` policy, else are split like any
  group (by their majority label).
  """
  records = sorted(records, key=lambda record: record['file'])
  group_numbers = near_duplicates.group_near_duplicates(
      near_duplicates.hashes_to_words([record['hash'] for record in records]), max_hash_distance)
  members: Dict[int, List[Dict[str, str]]] = {}
  for number, record in zip(group_numbers, records):
    members.setdefault(number, []).append(record)
  name_of = {number: group[0]['file'] for number, group in members.items()}
  conflicting = {number for number, group in members.items()
                 if len({record['label'] for record in group}) > 1}
  splittable = [(name_of[number], majority_label(record['label'] for record in group), len(group))
                for number, group in members.items()
                if not (number in conflicting and label_conflict_policy == 'exclude')]
  split_of_group = assign_group_splits(splittable, cumulative_buckets)
  for number, group in members.items():
    split_index = split_of_group.get(name_of[number], excluded_index)
    for record in group:
      yield record['file'], (split_index, name_of[number], record['hash'])


