"""DataQualityCheck: the data-quality artifact of the examples, recorded in ML Metadata.

It reads ImageExampleGen's examples (every split, the `excluded` one included) and writes a
DataQualityReport artifact holding

- `data_quality.json`: counts of images, groups, patients, near-duplicate groups, label
  conflicts and cross-split leaks (a patient on both sides is one), each near-duplicate group's file names, labels and splits, and the
  violations that must stop the run;
- `image_groups.csv`: every image with its label, split, group and perceptual hash;
- `contact_sheet.png`: the label conflicts and the largest near-duplicate groups.

It reads on one worker: image bytes stream through and only name, label, split, hash and group
(about 100 bytes an image) are kept, plus the few images the contact sheet shows.
The headline counts and the violations are also artifact properties, so ML Metadata queries and
the end-of-run summary see them without opening files. The check itself never fails the run:
DataValidationGate does, after the report is recorded, so a failed run's report can be read.
"""

import csv
import json
import os

import tensorflow as tf
from absl import logging
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import contracts
from components.artifact_types import DataQualityReport
from components.data_quality import contact_sheet, report


def _write_files(directory: str, data_quality: dict, rows, sheet) -> None:
  tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(os.path.join(directory, contracts.DATA_QUALITY_FILE), 'w') as handle:
    json.dump(data_quality, handle, indent=1)
  with tf.io.gfile.GFile(os.path.join(directory, contracts.IMAGE_GROUPS_FILE), 'w') as handle:
    writer = csv.writer(handle)
    writer.writerow(['file', 'label', 'split', 'duplicate_group', 'image_hash', 'patient'])
    for row in rows:
      writer.writerow([row.file, row.label, row.split, row.group, row.image_hash,
                       row.patient or ''])
  with tf.io.gfile.GFile(os.path.join(directory, contracts.CONTACT_SHEET_FILE), 'wb') as handle:
    sheet.save(handle, format='PNG')


@component
def DataQualityCheck(examples: InputArtifact[standard_artifacts.Examples],
                     data_quality: OutputArtifact[DataQualityReport],
                     code_version: Parameter[str] = ''):
  """Writes the data-quality report of `examples`; see the module docstring.

  `code_version` is a fingerprint of this component's code, unused here: it is in the
  configuration only so that TFX's cache reruns the check when the code changes.
  """
  del code_version
  split_uris = {split: artifact_utils.get_split_uri([examples], split)
                for split in artifact_utils.decode_split_names(examples.split_names)}
  max_hash_distance = examples.get_int_custom_property(contracts.MAX_HASH_DISTANCE_PROPERTY)
  policy = examples.get_string_custom_property(contracts.LABEL_CONFLICT_POLICY_PROPERTY)
  rows = report.read_image_rows(split_uris, report.read_patients(examples.uri))
  data_quality_report = report.build_report(rows + report.read_older_span_rows(examples.uri),
                                            max_hash_distance, policy)

  shown = data_quality_report['duplicate_groups'][:contact_sheet.MAX_ROWS]
  wanted = {member['file'] for group in shown for member in group['files']}
  sheet = contact_sheet.draw_contact_sheet(
      shown, report.read_images(split_uris, wanted),
      title=f'Label conflicts and largest near-duplicate groups '
            f'(hash distance <= {max_hash_distance} of 128 bits)')
  _write_files(data_quality.uri, data_quality_report, rows, sheet)

  for name in contracts.DATA_QUALITY_COUNT_PROPERTIES:
    data_quality.set_int_custom_property(name, data_quality_report[name])
  data_quality.set_int_custom_property(contracts.MAX_HASH_DISTANCE_PROPERTY, max_hash_distance)
  data_quality.set_string_custom_property(contracts.LABEL_CONFLICT_POLICY_PROPERTY, policy)
  data_quality.set_json_value_custom_property(contracts.VIOLATIONS_PROPERTY,
                                              data_quality_report['violations'])
  logging.info('Data quality: %s', report.format_report_line(data_quality_report))
