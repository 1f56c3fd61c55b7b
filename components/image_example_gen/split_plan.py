"""Planning the train/eval split from hashed images: pure, no Beam, no files.

From `{'file', 'label', 'hash', 'span'[, 'patient']}` records (one per readable image of the
newest span and of the older spans before it) to a split per image of the newest span: images
whose perceptual hashes lie within `max_hash_distance` bits form near-duplicate groups
(transitively), groups holding images of one patient (the same pseudonym) or frames of one clip
are merged, and whole groups are dealt to the splits, stratified by label and deterministically:
no near-duplicate, no patient and no clip is on both sides. Groups whose members carry different labels are label conflicts, which the
`exclude` policy sends to a split of their own.
"""

from typing import Any, Dict, Iterable, List, Optional, Tuple

from components import near_duplicates
from models import features
from models.group_split import assign_group_splits


def majority_label(labels: Iterable[str]) -> str:
  """The most frequent label; ties go to the first in the class vocabulary."""
  labels = list(labels)
  return max(features.LABEL_NAMES, key=lambda name: (labels.count(name),
                                                     -features.LABEL_NAMES.index(name)))


def _span(record: Dict[str, Any]) -> int:
  return record.get('span', 0)  # a data root without spans is span 0


def merge_sharing(group_numbers: List[int], keys: List[Optional[str]]) -> List[int]:
  """Group numbers with every group that shares a key (a patient, a clip) merged into one (the
  smallest number); an image with no key keeps its group."""
  parent = {number: number for number in group_numbers}

  def root(number: int) -> int:
    while parent[number] != number:
      parent[number] = parent[parent[number]]
      number = parent[number]
    return number

  first_group_of: Dict[str, int] = {}
  for number, key in zip(group_numbers, keys):
    if key is None:
      continue
    other = first_group_of.setdefault(key, number)
    low, high = sorted((root(number), root(other)))
    parent[high] = low
  return [root(number) for number in group_numbers]


def plan_splits(records: List[Dict[str, Any]], cumulative_buckets: List[int],
                max_hash_distance: int, label_conflict_policy: str,
                excluded_index: int) -> Tuple[Dict[str, Tuple[int, str, str]], List[dict]]:
  """Groups the hashed images and plans the newest span's split.

  `records` are hash_images outputs, `{'file', 'label', 'hash'[, 'span', 'patient', 'clip']}`, of the
  newest span and
  of every older one. Returns ({relative path: (split index, group, hash)} of the newest span's
  images, the older spans' images that share a group with one of them as {'file', 'label',
  'split', 'hash', 'group'} rows, the split an index).

  Spans are planned in order, each with the older ones' splits fixed, so an older span's images
  get the split they got when that span was ingested (the plan is a function of the files). An
  image near-duplicating an older span's image joins that image's group and split: no copy
  crosses train and eval between spans. It goes to `excluded_index` instead when the group's
  labels conflict under the `exclude` policy (the older image, already trained on, stays), or
  when it bridges older groups that lie in different splits. A group is named after its first
  member in sort order (its oldest member for a group that reaches back). Label conflicts
  within a span go to `excluded_index` under the `exclude` policy, else are split like any
  group (by their majority label).
  """
  records = sorted(records, key=lambda record: record['file'])
  assigned: Dict[str, Tuple[int, str]] = {}
  members: Dict[int, List[Dict[str, Any]]] = {}
  spans = sorted({_span(record) for record in records})
  for span in spans:
    seen = [record for record in records if _span(record) <= span]
    duplicate_groups = near_duplicates.group_near_duplicates(
        near_duplicates.hashes_to_words([record['hash'] for record in seen]), max_hash_distance)
    labels_of_duplicates: Dict[int, set] = {}
    for number, record in zip(duplicate_groups, seen):
      labels_of_duplicates.setdefault(number, set()).add(record['label'])
    # A label conflict is a near-duplicate group with two labels; a patient's images may differ.
    excluded = {record['file'] for number, record in zip(duplicate_groups, seen)
                if len(labels_of_duplicates[number]) > 1 and label_conflict_policy == 'exclude'}
    members = {}
    units = merge_sharing(duplicate_groups, [record.get('patient') for record in seen])
    units = merge_sharing(units, [record.get('clip') for record in seen])
    for number, record in zip(units, seen):
      members.setdefault(number, []).append(record)
    new_groups = {}
    for number, group in members.items():
      new = [record for record in group if _span(record) == span]
      older = [record for record in group if _span(record) < span]
      if not new:
        continue
      if not older:
        new_groups[group[0]['file']] = group
        continue
      older_splits = {assigned[record['file']][0] for record in older}
      for record in new:
        split_index = (excluded_index if len(older_splits) > 1 or record['file'] in excluded
                       else next(iter(older_splits)))
        assigned[record['file']] = (split_index, assigned[older[0]['file']][1])
    splittable = []
    for name, group in new_groups.items():
      kept = [record for record in group if record['file'] not in excluded]
      if kept:
        splittable.append((name, majority_label(record['label'] for record in kept), len(kept)))
    split_of_group = assign_group_splits(splittable, cumulative_buckets)
    for name, group in new_groups.items():
      for record in group:
        assigned[record['file']] = (excluded_index if record['file'] in excluded
                                    else split_of_group[name], name)

  newest = spans[-1] if spans else 0
  plan = {record['file']: (*assigned[record['file']], record['hash'])
          for record in records if _span(record) == newest}
  companions = [{'file': record['file'], 'label': record['label'],
                 'split': assigned[record['file']][0], 'hash': record['hash'],
                 'group': assigned[record['file']][1]}
                for group in members.values()
                if any(_span(record) == newest for record in group)
                for record in group if _span(record) < newest]
  return plan, companions
