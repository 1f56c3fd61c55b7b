"""Dealing whole groups of images to splits, stratified by label, deterministically.

One rule for every split the project makes: ImageExampleGen's train/eval split
(components/image_example_gen/split_plan.py), the folds the Trainer deals its training examples
to (one held out from each ensemble member, or one network's calibration set), and the folds of
the cross-validation benchmark. Near-duplicates share a group, so
no group ever straddles two splits. Pure Python, no TensorFlow.
"""

import hashlib
from typing import Dict, List, Sequence, Tuple


def stable_rank_key(name: str, salt: str = '') -> str:
  """Orders groups by a hash of their name: deterministic, yet unrelated to file numbering. A
  salt gives an ordering independent of the unsalted one (for a split inside a split)."""
  return hashlib.sha256((salt + name).encode()).hexdigest()


def assign_group_splits(groups: List[Tuple[str, str, int]], cumulative_buckets: List[int],
                        salt: str = '') -> Dict[str, int]:
  """Split index per group from (group name, label, size): whole groups, stratified by label.

  Within each label the groups are ordered by `stable_rank_key` and laid end to end; a group
  goes to the split whose share of the label's images its midpoint falls in. Every split so
  receives its share of every class (to within a group), the same on every run.
  """
  total_buckets = cumulative_buckets[-1]
  split_of_group = {}
  for label in sorted({label for _, label, _ in groups}):
    members = sorted((group for group in groups if group[1] == label),
                     key=lambda group: stable_rank_key(group[0], salt))
    images = sum(size for _, _, size in members)
    boundaries = [images * bucket / total_buckets for bucket in cumulative_buckets]
    position = 0
    for name, _, size in members:
      midpoint = position + size / 2
      split_of_group[name] = next(
          (index for index, boundary in enumerate(boundaries) if midpoint < boundary),
          len(boundaries) - 1)
      position += size
  return split_of_group


def group_summary(labels: Sequence[int], groups: Sequence[str]) -> List[Tuple[str, str, int]]:
  """(group, label, size) per group; a group takes the label most of its examples have."""
  members: Dict[str, List[int]] = {}
  for label, group in zip(labels, groups):
    members.setdefault(group, []).append(int(label))
  return [(group, str(max(set(found), key=found.count)), len(found))
          for group, found in members.items()]


def calibration_mask(labels: Sequence[int], groups: Sequence[str], percent: float) -> List[bool]:
  """Which examples form the calibration set: about `percent` % of each label's examples, whole
  near-duplicate groups, in an order of its own (salted), so unrelated to the train/eval split."""
  if percent <= 0:
    return [False] * len(labels)
  share = round(percent * 100)
  split_of_group = assign_group_splits(group_summary(labels, groups), [10000 - share, 10000],
                                       salt='calibration')
  return [split_of_group[group] == 1 for group in groups]


def held_out_folds(labels: Sequence[int], groups: Sequence[str], members: int,
                   calibration_percent: float) -> List[int]:
  """Per training example, the ensemble member that never trains on it, whose prediction of it
  is out of sample; -1 where every member trains on it.

  Two or more members are cross-fitted: the examples are dealt to one fold per member (whole
  groups, stratified by label, in an order of their own), member m trains on every fold but m,
  and every example gets one out-of-sample prediction. One network cannot be cross-fitted: its
  calibration set (`calibration_mask`) is fold 0 and it trains on the rest.
  """
  if members < 2:
    return [0 if taken else -1 for taken in calibration_mask(labels, groups, calibration_percent)]
  fold_of_group = assign_group_splits(group_summary(labels, groups),
                                      list(range(1, members + 1)), salt='cross-fit')
  return [fold_of_group[group] for group in groups]
