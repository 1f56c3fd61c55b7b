"""Beam executor of ImageExampleGen: image folders in, one tf.Example per image out.

It reads, decides and writes; what a file is (`image_files.py`) and how the split is planned
(`split_plan.py`) live in modules of their own. For every file under `<input_base>/<class>/` it
asks what the file is (an image, a lesion mask of an image, or something else), attaches each
image's masks to that image's example (merged into one mask; masks never become examples of
their own), and writes the examples to the splits the plan gives: train and eval, whole
near-duplicate groups on one side, stratified by label, and label conflicts to a third split,
`excluded`, under the `exclude` policy (`keep` splits them like any group; `fail` keeps them and
the data-quality check downstream stops the run). Every example carries its perceptual hash and
its group's name.

Files it cannot use (corrupt or non-image files, masks without an image, files outside a class
folder) are written, with the reason, to `skipped_files.jsonl` in the Examples artifact and
listed in the artifact's `skipped_files` property. The run fails, naming them, only when they
exceed `max_unreadable_fraction` of the candidate files. Per-split class counts are recorded in
the `class_counts` property.

It streams. A first pass reads and hashes each image and keeps only (name, label, hash); the
split plan is made from those small records on one worker; a second pass reads each image again
and builds, partitions and writes its example in one fused stage. No step holds the images of the
whole set, on the local DirectRunner or on a distributed runner. TFX's own split writer is not
used because its reshuffle would gather every example first.
"""

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from absl import logging
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import utils, write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.components.util import examples_utils
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import contracts, near_duplicates
from components.image_example_gen import split_plan
from inputs import identifiers, image_files, layout, manifest
from models import features

# The executor's settings, in the standard custom_config slot (see component.py).
MAX_UNREADABLE_FRACTION_KEY = 'max_unreadable_fraction'
DEFAULT_MAX_UNREADABLE_FRACTION = 0.05
MAX_HASH_DISTANCE_KEY = 'max_hash_distance'
LABEL_CONFLICT_POLICY_KEY = 'label_conflict_policy'
CODE_VERSION_KEY = 'code_version'  # read by TFX's cache, not here
# A manifest of labels instead of class folders (inputs/manifest.py), and its content's digest,
# there so that TFX's cache reruns the component when a label changes.
LABELS_FILE_KEY = 'labels_file'
LABELS_DIGEST_KEY = 'labels_digest'
# A cine clip's middle frame, or every frame as examples of one group (layout.CLIP_FRAMES).
CLIP_FRAMES_KEY = 'clip_frames'
# Where the key that pseudonymises patients is (inputs/identifiers.py): a path, never the key.
IDENTIFIER_KEY_FILE_KEY = 'identifier_key_file'


class UnusableInputError(ValueError):
  """Too many input files could not be used, or none could."""


SKIPPED = 'skipped'
NORMALISED = 'normalised'


def _skip(entry: Dict[str, Any], reason: str) -> beam.pvalue.TaggedOutput:
  return beam.pvalue.TaggedOutput(SKIPPED, {'file': entry['file'], 'reason': reason,
                                            'counted': True})


def hash_images(keyed_entries: Tuple[str, Iterable[Dict[str, Any]]], newest_span: int,
                identifier_key: Optional[str], clip_frames: str):
  """(grouping key, entries) → {'file', 'label', 'hash', 'span', 'patient', 'clip'} per example
  of a readable image (image_files.examples_of_file: each frame of a clip under `clip_frames`
  'all', `clip` the clip's file, else None), `patient` the pseudonym of its patient or None
  (image_files.patient_of).

  Unreadable images of the newest span go to the SKIPPED output with the reason (and so are left
  out of the plan); an older span's were reported when it was ingested.
  """
  _, entries = keyed_entries
  for entry in entries:
    if entry['kind'] != 'image':
      continue
    span = image_files.span_of_file(entry['file'])
    try:
      content, image = image_files.read_image(entry['path'])
      examples = list(image_files.examples_of_file(entry['file'], content, image, clip_frames))
    except (image_files.UnusableFile, OSError, tf.errors.OpError) as error:
      if span == newest_span:
        yield _skip(entry, getattr(error, 'message', None) or str(error))
      continue
    patient = image_files.patient_of(content, entry, identifier_key)
    for file, clip, example_image in examples:
      yield {'file': file, 'label': entry['label'], 'clip': clip,
             'hash': near_duplicates.perceptual_hash(example_image), 'span': span,
             'patient': patient}


class BuildImageExample(beam.DoFn):
  """(grouping key, entries) → (split index, label name, example), an example per frame of a
  clip under `clip_frames` 'all'.

  Each image's split and group come from the side input `plan` (relative path → (split index,
  group name, hash)); images missing from it were unreadable when hashed and are already
  reported. Unusable masks go to the SKIPPED output with the reason, images stored as PNG
  because TensorFlow would not decode the original to Pillow's pixels to NORMALISED.
  """

  def __init__(self, clip_frames: str):
    super().__init__()
    self._clip_frames = clip_frames

  def process(self, keyed_entries: Tuple[str, Iterable[Dict[str, Any]]],
              plan: Dict[str, Tuple[int, str, str]]):
    _, entries = keyed_entries
    images = sorted((entry for entry in entries if entry['kind'] == 'image'),
                    key=lambda entry: entry['file'])
    masks = sorted((entry for entry in entries if entry['kind'] == 'mask'),
                   key=lambda entry: entry['file'])
    if not images:
      for entry in masks:
        yield _skip(entry, 'mask without an image')
      return
    # Two images sharing a stem ('x.png' and 'x.jpg') share the masks too.
    mask_images = []
    for entry in masks:
      try:
        mask_images.append(image_files.read_image(entry['path'])[1])
      except (image_files.UnusableFile, OSError, tf.errors.OpError) as error:
        yield _skip(entry, f'mask: {getattr(error, "message", None) or error}')
    for entry in images:
      label_name = entry['label']
      if (entry['file'] not in plan
          and image_files.frame_file(entry['file'], 0) not in plan):
        continue  # unreadable when hashed, and reported then
      try:
        content, image = image_files.read_image(entry['path'])
        examples = list(image_files.examples_of_file(entry['file'], content, image,
                                                     self._clip_frames))
      except (image_files.UnusableFile, OSError, tf.errors.OpError) as error:
        # Changed since it was hashed.
        yield _skip(entry, getattr(error, 'message', None) or str(error))
        continue
      for file, _, example_image in examples:
        split_index, group, image_hash = plan[file]
        stored, normalised = image_files.tensorflow_ready_bytes(content, example_image)
        if normalised and file == examples[0][0]:
          yield beam.pvalue.TaggedOutput(NORMALISED, {'file': entry['file'],
                                                      'reason': normalised})
        mask_bytes = (image_files.merge_masks(mask_images, example_image.size) if mask_images
                      else b'')
        yield split_index, label_name, image_files.build_example(
            stored, example_image, label_name, file, mask_bytes, len(mask_images), image_hash,
            group)


def _list_class_folder(span_and_class: Tuple[str, str], input_base: str) -> List[Dict[str, Any]]:
  # A module-level function, not a lambda: Beam pickles it by reference, with no closure.
  span_folder, class_name = span_and_class
  return image_files.with_prefix(
      image_files.list_class_folder(os.path.join(input_base, span_folder), class_name),
      image_files.span_prefix(span_folder))


def _key_by_image(entry: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
  return entry['key'], entry


_PARTITION_OF_KIND = {'image': 0, 'mask': 0, 'skipped': 1, 'ignored': 2}


def _partition_by_kind(entry: Dict[str, Any], partitions: int) -> int:
  del partitions  # always 3
  return _PARTITION_OF_KIND[entry['kind']]


def _report_row(entry: Dict[str, Any]) -> Dict[str, Any]:
  return {name: entry[name] for name in ('file', 'reason', 'counted') if name in entry}


@beam.ptransform_fn
def ListImageFiles(pipeline: beam.Pipeline, input_base: str, span_folders: List[str],
                   labels: Optional[manifest.Manifest] = None,
                   identifier_key: Optional[str] = None):
  """Lists the data root by image_files' rules, reading no image.

  `span_folders` are the span folders to list, oldest first, the newest last ([''] for a data
  root without spans). The top of each is listed here, each class folder by a worker; a data
  root whose labels are in a manifest (`labels`) is listed here whole. Returns
  (images and their masks, of every span listed: (grouping key, [entry...]), skipped files,
  ignored files), the last two of the newest span only, as {'file', 'reason'[, 'counted']}
  rows: an older span's were reported when it was ingested.
  """
  class_folders, top_entries = [], []
  if labels is not None:
    top_entries = image_files.list_labelled_tree(input_base, labels, identifier_key)
    span_folders = []
  for span_folder in span_folders:
    classes, entries = image_files.list_data_root(os.path.join(input_base, span_folder))
    class_folders += [(span_folder, name) for name in classes]
    if span_folder == span_folders[-1]:
      top_entries += image_files.with_prefix(entries, image_files.span_prefix(span_folder))
  entries = (
      (pipeline | 'ClassFolders' >> beam.Create(class_folders)
       | 'ListClassFolders' >> beam.FlatMap(_list_class_folder, input_base),
       pipeline | 'TopOfDataRoot' >> beam.Create(top_entries))
      | 'AllEntries' >> beam.Flatten())
  newest_prefix = image_files.span_prefix(span_folders[-1]) if span_folders else ''
  by_kind = entries | 'ByKind' >> beam.Partition(_partition_by_kind, 3)
  grouped = (by_kind[0]
             | 'KeyByImage' >> beam.Map(_key_by_image)
             | 'GroupImageWithMasks' >> beam.GroupByKey())
  skipped = (by_kind[1]
             | 'NewestSpanSkipped' >> beam.Filter(
                 lambda entry: entry['file'].startswith(newest_prefix))
             | 'SkippedRows' >> beam.Map(_report_row))
  ignored = (by_kind[2]
             | 'NewestSpanIgnored' >> beam.Filter(
                 lambda entry: entry['file'].startswith(newest_prefix))
             | 'IgnoredRows' >> beam.Map(_report_row))
  return grouped, skipped, ignored


def ingested_span(exec_properties: Dict[str, Any]) -> int:
  """The span this execution ingests: the driver's, or (run without a driver) the newest."""
  span = exec_properties.get(utils.SPAN_PROPERTY_NAME)
  if span is not None:
    return int(span)
  if exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY):
    range_config = range_config_pb2.RangeConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.RANGE_CONFIG_KEY],
                              range_config)
    return range_config.static_range.start_span_number
  return image_files.newest_span(exec_properties[standard_component_specs.INPUT_BASE_KEY])


def _write_json_lines(collection, directory: str, file_name: str, label: str):
  return (collection
          | f'Serialize{label}' >> beam.Map(lambda row: json.dumps(row, sort_keys=True))
          | f'Write{label}' >> beam.io.WriteToText(
              os.path.join(directory, file_name), num_shards=1, shard_name_template=''))


def _read_json_lines(path: str) -> List[Dict[str, Any]]:
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as handle:
    return [json.loads(line) for line in handle if line.strip()]


def _parse_configs(exec_properties: Dict[str, Any]):
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                            input_config)
  output_config = example_gen_pb2.Output()
  proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                            output_config)
  return input_config, output_config


class Executor(BaseExampleGenExecutor):
  """Reads image folders with Beam; see the module docstring."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    """Not used: the base class's per-split hook cannot report skipped files or split by label,
    so `Do` builds the whole Beam pipeline itself."""
    raise NotImplementedError('ImageExampleGen builds its pipeline in Do')

  def _write_examples(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                      split_uris: Dict[str, str], report_dir: str) -> None:
    """Lists, splits, builds and writes the examples; writes the reports beside them."""
    input_config, output_config = _parse_configs(exec_properties)
    split_names = list(split_uris)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]

    if len(input_config.splits) != 1 or not output_config.split_config.splits:
      raise ValueError('ImageExampleGen splits the images itself: give it one input split and '
                       'an output split_config (the component does by default)')
    span = ingested_span(exec_properties)
    settings = read_settings(exec_properties)
    labels = (manifest.read_manifest(settings[LABELS_FILE_KEY]) if settings[LABELS_FILE_KEY]
              else None)
    if labels is not None and image_files.span_folders(input_base):
      raise UnusableInputError(f'{input_base} has span folders and its labels are in '
                               f'{labels.path}: a manifest labels a data root without spans')
    folders = image_files.span_folders_up_to(input_base, span) if labels is None else ['']
    identifier_key = identifiers.read_key(settings[IDENTIFIER_KEY_FILE_KEY] or None)
    listed, not_usable, ignored = pipeline | 'ListFiles' >> ListImageFiles(
        input_base, folders, labels, identifier_key)
    cumulative, total = [], 0
    for split in output_config.split_config.splits:
      total += split.hash_buckets
      cumulative.append(total)
    hashed = listed | 'HashImages' >> beam.FlatMap(
        hash_images, span, identifier_key, settings[CLIP_FRAMES_KEY]).with_outputs(
            SKIPPED, main='records')
    planned = (hashed.records
               | 'GatherHashes' >> beam.combiners.ToList()
               | 'PlanSplits' >> beam.Map(
                   split_plan.plan_splits, cumulative, settings[MAX_HASH_DISTANCE_KEY],
                   settings[LABEL_CONFLICT_POLICY_KEY],
                   split_names.index(contracts.EXCLUDED_SPLIT)))
    plan = planned | 'NewestSpanPlan' >> beam.FlatMap(
        lambda plan_and_older: plan_and_older[0].items())
    older = (planned
             | 'OlderSpanCompanions' >> beam.FlatMap(lambda plan_and_older: plan_and_older[1])
             | 'SplitNames' >> beam.Map(lambda row: {**row, 'split': split_names[row['split']]}))
    _write_json_lines(older, report_dir, contracts.OLDER_SPAN_COMPANIONS_FILE, 'Older')
    patients = (hashed.records
                | 'WithPatient' >> beam.Filter(
                    lambda record, span: record['patient'] and record['span'] == span, span)
                | 'PatientRows' >> beam.Map(
                    lambda record: {'file': record['file'], 'patient': record['patient']}))
    _write_json_lines(patients, report_dir, contracts.PATIENTS_FILE, 'Patients')

    # From here to the files, one fused stage: image bytes are never gathered.
    newest_prefix = image_files.span_prefix(folders[-1])
    built = (listed
             | 'NewestSpan' >> beam.Filter(lambda keyed: keyed[0].startswith(newest_prefix))
             | 'BuildExamples' >> beam.ParDo(
                 BuildImageExample(settings[CLIP_FRAMES_KEY]), plan=beam.pvalue.AsDict(plan)
             ).with_outputs(SKIPPED, NORMALISED, main='examples'))
    partitions = built.examples | 'BySplit' >> beam.Partition(
        lambda split_label_example, _: split_label_example[0], len(split_names))
    for name, examples in zip(split_names, partitions):
      _ = (examples
           | f'Serialize[{name}]' >> beam.Map(lambda item: item[2].SerializeToString())
           | f'Write[{name}]' >> beam.io.WriteToTFRecord(
               os.path.join(split_uris[name], write_split.DEFAULT_FILE_NAME),
               file_name_suffix='.gz'))

    skipped = ((not_usable, hashed[SKIPPED], built[SKIPPED])
               | 'AllSkipped' >> beam.Flatten())
    _write_json_lines(skipped, report_dir, contracts.SKIPPED_FILES_FILE, 'Skipped')
    _write_json_lines(ignored, report_dir, contracts.IGNORED_FILES_FILE, 'Ignored')
    _write_json_lines(built[NORMALISED], report_dir, contracts.NORMALISED_FILES_FILE,
                      'Normalised')
    counts = (built.examples
              | 'SplitAndLabel' >> beam.Map(lambda item: (split_names[item[0]], item[1]))
              | 'CountClasses' >> beam.combiners.Count.PerElement()
              | 'CountRows' >> beam.Map(lambda split_label_count: {
                  'split': split_label_count[0][0], 'label': split_label_count[0][1],
                  'count': split_label_count[1]}))
    _write_json_lines(counts, report_dir, contracts.CLASS_COUNTS_FILE, 'Counts')

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples_artifact = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    split_names = utils.generate_output_split_names(*_parse_configs(exec_properties))
    if contracts.EXCLUDED_SPLIT in split_names:
      raise ValueError(f'the split name {contracts.EXCLUDED_SPLIT!r} is reserved for excluded label '
                       'conflicts; name the output splits differently')
    split_names.append(contracts.EXCLUDED_SPLIT)
    settings = read_settings(exec_properties)
    examples_artifact.split_names = artifact_utils.encode_split_names(split_names)
    split_uris = {name: artifact_utils.get_split_uri([examples_artifact], name)
                  for name in split_names}
    report_dir = examples_artifact.uri
    with self._make_beam_pipeline() as pipeline:
      self._write_examples(pipeline, exec_properties, split_uris, report_dir)
    examples_utils.set_payload_format(examples_artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(
        examples_artifact, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))

    def report(file_name: str) -> List[Dict[str, Any]]:
      return sorted(_read_json_lines(os.path.join(report_dir, file_name)),
                    key=lambda row: row['file'])

    skipped = report(contracts.SKIPPED_FILES_FILE)
    ignored = report(contracts.IGNORED_FILES_FILE)
    normalised = report(contracts.NORMALISED_FILES_FILE)
    count_rows = _read_json_lines(os.path.join(report_dir, contracts.CLASS_COUNTS_FILE))
    class_counts: Dict[str, Dict[str, int]] = {}
    for row in count_rows:
      class_counts.setdefault(row['split'], {})[row['label']] = row['count']
    example_count = sum(row['count'] for row in count_rows)
    # TFX's driver records the span as a custom property (what TFX's span resolvers read); the
    # typed one is what StatisticsGen copies onto the statistics.
    span = ingested_span(exec_properties)
    examples_artifact.set_int_custom_property(utils.SPAN_PROPERTY_NAME, span)
    examples_artifact.span = span
    examples_artifact.set_string_custom_property(
        contracts.DATA_ROOT_PROPERTY, exec_properties[standard_component_specs.INPUT_BASE_KEY])
    examples_artifact.set_json_value_custom_property(contracts.CLASS_NAMES_PROPERTY,
                                                     list(features.LABEL_NAMES))
    examples_artifact.set_json_value_custom_property(contracts.CLASS_COUNTS_PROPERTY,
                                                     class_counts)
    examples_artifact.set_json_value_custom_property(
        contracts.SKIPPED_FILES_PROPERTY,
        [{'file': row['file'], 'reason': row['reason']} for row in skipped])
    examples_artifact.set_json_value_custom_property(contracts.IGNORED_FILES_PROPERTY, ignored)
    examples_artifact.set_json_value_custom_property(contracts.NORMALISED_FILES_PROPERTY,
                                                     normalised)
    examples_artifact.set_int_custom_property(contracts.EXAMPLE_COUNT_PROPERTY, example_count)
    examples_artifact.set_int_custom_property(contracts.SKIPPED_COUNT_PROPERTY, len(skipped))
    examples_artifact.set_int_custom_property(contracts.IGNORED_COUNT_PROPERTY, len(ignored))
    patient_rows = _read_json_lines(os.path.join(report_dir, contracts.PATIENTS_FILE))
    examples_artifact.set_int_custom_property(contracts.PATIENT_COUNT_PROPERTY,
                                              len({row['patient'] for row in patient_rows}))
    examples_artifact.set_int_custom_property(contracts.IMAGES_WITH_PATIENT_PROPERTY,
                                              len(patient_rows))
    # What the data-quality check downstream needs to judge the split.
    examples_artifact.set_int_custom_property(contracts.MAX_HASH_DISTANCE_PROPERTY,
                                              settings[MAX_HASH_DISTANCE_KEY])
    examples_artifact.set_string_custom_property(contracts.LABEL_CONFLICT_POLICY_PROPERTY,
                                                 settings[LABEL_CONFLICT_POLICY_KEY])

    for row in skipped:
      logging.warning('ImageExampleGen skipped %s: %s', row['file'], row['reason'])
    check_usable(exec_properties[standard_component_specs.INPUT_BASE_KEY], class_counts,
                 skipped, settings[MAX_UNREADABLE_FRACTION_KEY])


def check_usable(input_base: str, class_counts: Dict[str, Dict[str, int]],
                 skipped: List[Dict[str, Any]], max_unreadable_fraction: float) -> None:
  """Raises UnusableInputError when a class has no usable image, or when more of the files in
  class folders were unusable than `max_unreadable_fraction` allows."""
  per_class = {name: sum(counts.get(name, 0) for counts in class_counts.values())
               for name in features.LABEL_NAMES}
  empty = [name for name, count in per_class.items() if count == 0]
  if empty:
    skipped_there = {name: sum(1 for row in skipped if row['file'].startswith(name + '/'))
                     for name in empty}
    raise UnusableInputError(
        '; '.join(f'class {name!r} has no usable image under {input_base} '
                  f'({skipped_there[name]} of its files skipped)' for name in empty))
  counted = [row for row in skipped if row.get('counted', True)]
  example_count = sum(per_class.values())
  share = len(counted) / (len(counted) + example_count)
  if share > max_unreadable_fraction:
    named = '; '.join(f'{row["file"]} ({row["reason"]})' for row in counted[:10])
    more = f' and {len(counted) - 10} more' if len(counted) > 10 else ''
    raise UnusableInputError(
        f'{len(counted)} of {len(counted) + example_count} input files could not be used '
        f'({share:.1%} > max_unreadable_fraction {max_unreadable_fraction:.1%}): {named}{more}')


DEFAULT_SETTINGS = {
    MAX_UNREADABLE_FRACTION_KEY: DEFAULT_MAX_UNREADABLE_FRACTION,
    MAX_HASH_DISTANCE_KEY: near_duplicates.DEFAULT_MAX_DISTANCE,
    LABEL_CONFLICT_POLICY_KEY: contracts.DEFAULT_LABEL_CONFLICT_POLICY,
    CODE_VERSION_KEY: '',
    LABELS_FILE_KEY: '',
    LABELS_DIGEST_KEY: '',
    IDENTIFIER_KEY_FILE_KEY: '',
    CLIP_FRAMES_KEY: layout.MIDDLE_FRAME,
}


def read_settings(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
  """The executor's own settings from the standard custom_config slot, defaults filled in."""
  settings = dict(DEFAULT_SETTINGS)
  serialized = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if serialized:
    custom_config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(serialized, custom_config)
    packed = struct_pb2.Struct()
    if custom_config.custom_config.Unpack(packed):
      settings.update(json_format.MessageToDict(packed))
  settings[MAX_HASH_DISTANCE_KEY] = int(settings[MAX_HASH_DISTANCE_KEY])
  if settings[CLIP_FRAMES_KEY] not in layout.CLIP_FRAMES:
    raise ValueError(f'clip_frames must be one of {", ".join(layout.CLIP_FRAMES)}, got '
                     f'{settings[CLIP_FRAMES_KEY]!r}')
  if settings[LABEL_CONFLICT_POLICY_KEY] not in contracts.LABEL_CONFLICT_POLICIES:
    raise ValueError(f'label_conflict_policy must be one of {", ".join(contracts.LABEL_CONFLICT_POLICIES)},'
                     f' got {settings[LABEL_CONFLICT_POLICY_KEY]!r}')
  return settings
