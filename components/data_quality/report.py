"""The data-quality report: near-duplicate groups, label conflicts and cross-split leaks.

Built from the written examples (each carries its file name, label, perceptual hash and group)
and ImageExampleGen's list of which images share a patient, so it checks what ImageExampleGen
actually wrote rather than what it meant to write. A group is a unit of the split: a
near-duplicate group, or several merged because they hold one patient's images; near-duplicate
groups and label conflicts are found again inside each from the hashes, so a patient's two
different lesions are not a conflict. Leaks are found three ways: a group with members in two of
the splits that are read (train, eval), a patient with images in both, and, independently of the
grouping, any pair of images in different splits whose hashes lie within the distance
ExampleGen used.
"""

import collections
import dataclasses
import json
import os
from typing import Dict, Iterable, List, Optional, Set

import tensorflow as tf

from components import near_duplicates
from components.contracts import EXCLUDED_SPLIT, OLDER_SPAN_COMPANIONS_FILE, PATIENTS_FILE
from models import features

_ROW_KEYS = (features.FILENAME_KEY, features.LABEL_NAME_KEY, features.IMAGE_HASH_KEY,
             features.DUPLICATE_GROUP_KEY)


@dataclasses.dataclass
class ImageRow:
  file: str
  label: str
  split: str
  image_hash: str
  group: str
  # An older span's image in a group with one of this span's: checked against, not counted.
  older_span: bool = False
  patient: Optional[str] = None  # the patient's pseudonym, where known


def _text(example: tf.train.Example, key: str) -> str:
  return example.features.feature[key].bytes_list.value[0].decode()


def read_examples(split_uri: str) -> Iterable[tf.train.Example]:
  """Every tf.Example of one split directory (gzipped TFRecords)."""
  # TensorFlow's filesystem layer: the examples may be on gs:// or any filesystem it knows.
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, '*.gz')))
  if not files:
    return
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    yield tf.train.Example.FromString(record.numpy())


def _json_lines(path: str) -> List[dict]:
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as handle:
    return [json.loads(line) for line in handle if line.strip()]


def read_patients(examples_uri: str) -> Dict[str, str]:
  """{file: the pseudonym of its patient} of the images whose patient ImageExampleGen knew."""
  return {row['file']: row['patient']
          for row in _json_lines(os.path.join(examples_uri, PATIENTS_FILE))}


def read_older_span_rows(examples_uri: str) -> List[ImageRow]:
  """The older spans' images ImageExampleGen found in a group with one of this span's."""
  found = _json_lines(os.path.join(examples_uri, OLDER_SPAN_COMPANIONS_FILE))
  return [ImageRow(row['file'], row['label'], row['split'], row['hash'], row['group'],
                   older_span=True) for row in found]


def read_image_rows(split_uris: Dict[str, str],
                    patients: Optional[Dict[str, str]] = None) -> List[ImageRow]:
  """A row per written example, with its patient's pseudonym from `patients` where known."""
  rows = []
  for split, uri in split_uris.items():
    for example in read_examples(uri):
      file, label, image_hash, group = (_text(example, key) for key in _ROW_KEYS)
      rows.append(ImageRow(file, label, split, image_hash, group,
                           patient=(patients or {}).get(file)))
  return sorted(rows, key=lambda row: row.file)


def read_images(split_uris: Dict[str, str], wanted: Set[str]) -> Dict[str, bytes]:
  """Encoded image bytes of the files named in `wanted` (for the contact sheet)."""
  found = {}
  for uri in split_uris.values():
    for example in read_examples(uri):
      file = _text(example, features.FILENAME_KEY)
      if file in wanted:
        found[file] = example.features.feature[features.IMAGE_KEY].bytes_list.value[0]
  return found


def _group_summary(name: str, members: List[ImageRow]) -> dict:
  labels = collections.Counter(row.label for row in members)
  return {
      'group': name,
      'size': len(members),
      'labels': dict(sorted(labels.items())),
      'label_conflict': len(labels) > 1,
      'splits': sorted({row.split for row in members}),
      'files': [{'file': row.file, 'label': row.label, 'split': row.split,
                 **({'older_span': True} if row.older_span else {})} for row in members],
  }


def near_duplicate_groups(group: str, members: List[ImageRow],
                          max_hash_distance: int) -> List[dict]:
  """The near-duplicate groups of more than one image inside one group of the split, found from
  the hashes: the group itself when it is one, its parts when it holds a patient's images."""
  numbers = near_duplicates.group_near_duplicates(
      near_duplicates.hashes_to_words([row.image_hash for row in members]), max_hash_distance)
  parts = collections.defaultdict(list)
  for number, row in zip(numbers, members):
    parts[number].append(row)
  if len(parts) == 1:
    return [_group_summary(group, members)] if len(members) > 1 else []
  return [_group_summary(min(row.file for row in part), part)
          for part in parts.values() if len(part) > 1]


def find_cross_split_leaks(rows: List[ImageRow], max_hash_distance: int) -> List[dict]:
  """Groups and patients spanning the read splits, and near pairs across them found from the
  hashes alone."""
  used = [row for row in rows if row.split != EXCLUDED_SPLIT]
  leaks = []
  splits_of_patient = collections.defaultdict(set)
  for row in used:
    if row.patient:
      splits_of_patient[row.patient].add(row.split)
  for patient, splits in sorted(splits_of_patient.items()):
    if len(splits) > 1:
      leaks.append({'kind': 'patient on both sides', 'patient': patient,
                    'splits': sorted(splits)})
  splits_of_group = collections.defaultdict(set)
  for row in used:
    splits_of_group[row.group].add(row.split)
  for group, splits in sorted(splits_of_group.items()):
    if len(splits) > 1:
      leaks.append({'kind': 'group on both sides', 'group': group, 'splits': sorted(splits)})
  words = near_duplicates.hashes_to_words([row.image_hash for row in used])
  for first, second in near_duplicates.find_near_pairs(words, max_hash_distance).tolist():
    if used[first].split != used[second].split:
      leaks.append({
          'kind': 'near-duplicate pair across splits',
          'files': [used[first].file, used[second].file],
          'splits': [used[first].split, used[second].split],
          'distance': near_duplicates.hash_distance(used[first].image_hash,
                                                    used[second].image_hash)})
  return leaks


def _violations(report: dict, groups: List[dict]) -> List[str]:
  """Why the run must stop, one line each; empty when the data may be used."""
  violations = []
  leaks = report['cross_split_leaks']
  if leaks:
    named = '; '.join(
        ' ~ '.join(f'{file} ({split})' for file, split in zip(leak['files'], leak['splits']))
        if 'files' in leak else f'patient {leak["patient"]} in {" and ".join(leak["splits"])}'
        if 'patient' in leak else f'group {leak["group"]} in {" and ".join(leak["splits"])}'
        for leak in leaks[:5])
    violations.append(f'{len(leaks)} cross-split leak(s), near-duplicates or a patient\'s '
                      f'images on both sides of the split: {named}')
  conflicts = [group for group in groups if group['label_conflict']]
  policy = report['label_conflict_policy']
  if conflicts and policy == 'fail':
    named = '; '.join(', '.join(f'{member["file"]} ({member["label"]})'
                                for member in group['files']) for group in conflicts[:5])
    violations.append(f'{len(conflicts)} label conflict(s) (the same image under different '
                      f'labels) and the label-conflict policy is fail: {named}')
  if policy == 'exclude':
    # An older span's image was trained on when its span was ingested: only this span's
    # images can still be excluded.
    kept = [group['group'] for group in conflicts
            if any(member['split'] != EXCLUDED_SPLIT for member in group['files']
                   if not member.get('older_span'))]
    if kept:
      violations.append(f'{len(kept)} label conflict(s) were to be excluded but are in the '
                        f'training or evaluation data: {", ".join(kept[:5])}')
  return violations


def build_report(rows: List[ImageRow], max_hash_distance: int,
                 label_conflict_policy: str) -> dict:
  """Every figure of the data-quality artifact, plus the violations that stop the run.

  `rows` may hold older spans' images that share a group with this span's (`older_span`): they
  take part in the groups, conflicts and leaks, and are not counted as this span's images."""
  members = collections.defaultdict(list)
  for row in rows:
    members[row.group].append(row)
  older_rows = [row for row in rows if row.older_span]
  rows = [row for row in rows if not row.older_span]
  duplicate_groups = [duplicates for name, group in members.items()
                      for duplicates in near_duplicate_groups(name, group, max_hash_distance)]
  # Conflicts first, then the largest groups: the order of the contact sheet.
  duplicate_groups.sort(key=lambda group: (not group['label_conflict'], -group['size'],
                                           group['group']))
  class_counts: Dict[str, Dict[str, int]] = collections.defaultdict(dict)
  for (split, label), count in sorted(collections.Counter(
      (row.split, row.label) for row in rows).items()):
    class_counts[split][label] = count
  conflicts = [group for group in duplicate_groups if group['label_conflict']]
  report = {
      'max_hash_distance': max_hash_distance,
      'label_conflict_policy': label_conflict_policy,
      'image_count': len(rows),
      'group_count': len({row.group for row in rows}),
      'patient_count': len({row.patient for row in rows if row.patient}),
      'images_with_patient': sum(1 for row in rows if row.patient),
      'older_span_companion_count': len(older_rows),
      'duplicate_group_count': len(duplicate_groups),
      'images_in_duplicate_groups': sum(group['size'] for group in duplicate_groups),
      'label_conflict_count': len(conflicts),
      'images_in_label_conflicts': sum(group['size'] for group in conflicts),
      'excluded_image_count': sum(1 for row in rows if row.split == EXCLUDED_SPLIT),
      'class_counts': dict(class_counts),
      'cross_split_leaks': find_cross_split_leaks(rows + older_rows, max_hash_distance),
  }
  report['cross_split_leak_count'] = len(report['cross_split_leaks'])
  report['violations'] = _violations(report, duplicate_groups)
  report['duplicate_groups'] = duplicate_groups
  return report


def patients_phrase(report: dict) -> str:
  """', of N patients (M images with one)', or '' where no patient is known."""
  if not report.get('patient_count'):
    return ''
  known = ('' if report['images_with_patient'] == report['image_count']
           else f' ({report["images_with_patient"]} images with one)')
  return f', of {report["patient_count"]} patients{known}'


def format_report_line(report: dict) -> str:
  """The report in one line, for logs and the end-of-run summary."""
  return (f'{report["image_count"]} images in {report["group_count"]} groups'
          f'{patients_phrase(report)}; '
          f'{report["duplicate_group_count"]} near-duplicate groups '
          f'({report["images_in_duplicate_groups"]} images); '
          f'{report["label_conflict_count"]} label conflicts '
          f'({report["images_in_label_conflicts"]} images, policy '
          f'{report["label_conflict_policy"]}); '
          f'{report["cross_split_leak_count"]} cross-split leaks')
