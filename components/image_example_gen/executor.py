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
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import tensorflow as tf
from absl import logging
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import utils, write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.components.util import examples_utils
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import contracts, near_duplicates
from components.image_example_gen import image_files, split_plan
from models import features

# The executor's settings, in the standard custom_config slot (see component.py).
MAX_UNREADABLE_FRACTION_KEY = 'max_unreadable_fraction'
DEFAULT_MAX_UNREADABLE_FRACTION = 0.05
MAX_HASH_DISTANCE_KEY = 'max_hash_distance'
LABEL_CONFLICT_POLICY_KEY = 'label_conflict_policy'
CODE_VERSION_KEY = 'code_version'  # read by TFX's cache, not here


class UnusableInputError(ValueError):
  """Too many input files could not be used, or none could."""


def _read(path: str) -> bytes:
  with FileSystems.open(path) as handle:
    return handle.read()


SKIPPED = 'skipped'


def hash_images(keyed_files: Tuple[str, Iterable[Tuple[str, str]]], input_base: str):
  """(grouping key, files) → {'file', 'label', 'hash'} per readable image.

  Unreadable images go to the SKIPPED output with the reason (and so are left out of the plan).
  """
  key, files = keyed_files
  for kind, path in files:
    if kind != 'image':
      continue
    relative = image_files.relative_path(path, input_base)
    try:
      image = image_files.open_image(_read(path))
    except (ValueError, OSError) as error:
      yield beam.pvalue.TaggedOutput(SKIPPED, {'file': relative, 'reason': str(error)})
      continue
    yield {'file': relative, 'label': image_files.label_of_key(key),
           'hash': near_duplicates.perceptual_hash(image)}


class BuildImageExample(beam.DoFn):
  """(grouping key, [('image'|'mask', path)...]) → (split index, label name, example).

  Each image's split and group come from the side input `plan` (relative path → (split index,
  group name)); images missing from it were unreadable when hashed and are already reported.
  Unusable masks go to the SKIPPED output with the reason.
  """

  def __init__(self, input_base: str):
    self._input_base = input_base

  def process(self, keyed_files: Tuple[str, Iterable[Tuple[str, str]]],
              plan: Dict[str, Tuple[int, str, str]]):
    key, files = keyed_files
    image_paths = sorted(path for kind, path in files if kind == 'image')
    mask_paths = sorted(path for kind, path in files if kind == 'mask')
    if not image_paths:
      for path in mask_paths:
        yield beam.pvalue.TaggedOutput(SKIPPED, {
            'file': image_files.relative_path(path, self._input_base), 'reason': 'mask without an image'})
      return
    # Two images sharing a stem ('x.png' and 'x.jpg') share the masks too.
    masks = []
    for path in mask_paths:
      try:
        masks.append(image_files.open_image(_read(path)))
      except (ValueError, OSError) as error:
        yield beam.pvalue.TaggedOutput(SKIPPED, {
            'file': image_files.relative_path(path, self._input_base), 'reason': f'mask: {error}'})
    label_name = image_files.label_of_key(key)
    for path in image_paths:
      relative = image_files.relative_path(path, self._input_base)
      if relative not in plan:
        continue
      split_index, group, image_hash = plan[relative]
      try:
        content = _read(path)
        image = image_files.open_image(content)
      except (ValueError, OSError) as error:  # Changed since it was hashed.
        yield beam.pvalue.TaggedOutput(SKIPPED, {'file': relative, 'reason': str(error)})
        continue
      mask_bytes = image_files.merge_masks(masks, image.size) if masks else b''
      example = image_files.build_example(content, image, label_name, relative, mask_bytes, len(masks),
                              image_hash, group)
      yield split_index, label_name, example


def _classify_match(metadata, input_base: str) -> Tuple[str, Any]:
  # A module-level function, not a lambda: Beam pickles it by reference, with no closure.
  return image_files.classify_file(metadata.path, input_base)


@beam.ptransform_fn
def ListImageFiles(pipeline: beam.Pipeline, input_base: str, pattern: str):
  """Matches `<input_base>/<pattern>` without reading any file.

  Returns (image files: (grouping key, [(kind, path)...]), unusable files: {'file', 'reason'}).
  """
  classified = (
      pipeline
      | 'MatchFiles' >> fileio.MatchFiles(
          os.path.join(input_base, pattern),
          empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
      | 'Classify' >> beam.Map(_classify_match, input_base))
  not_usable = (classified
                | 'KeepSkipped' >> beam.Filter(lambda item: item[0] == 'skipped')
                | 'SkippedReport' >> beam.Map(lambda item: item[1]))
  image_files = (
      classified
      | 'KeepImagesAndMasks' >> beam.Filter(lambda item: item[0] != 'skipped')
      | 'KeyByImage' >> beam.Map(lambda item: (item[1][0], (item[0], item[1][1])))
      | 'GroupImageWithMasks' >> beam.GroupByKey())
  return image_files, not_usable


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
    """Lists, splits, builds and writes the examples; writes the two reports."""
    input_config, output_config = _parse_configs(exec_properties)
    split_names = list(split_uris)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]

    if len(input_config.splits) != 1 or not output_config.split_config.splits:
      raise ValueError('ImageExampleGen splits the images itself: give it one input split and '
                       'an output split_config (the component does by default)')
    image_files, not_usable = pipeline | 'ListFiles' >> ListImageFiles(
        input_base, input_config.splits[0].pattern)
    cumulative, total = [], 0
    for split in output_config.split_config.splits:
      total += split.hash_buckets
      cumulative.append(total)
    settings = read_settings(exec_properties)
    hashed = image_files | 'HashImages' >> beam.FlatMap(hash_images, input_base).with_outputs(
        SKIPPED, main='records')
    plan = (hashed.records
            | 'GatherHashes' >> beam.combiners.ToList()
            | 'PlanSplits' >> beam.FlatMap(
                split_plan.plan_splits, cumulative, settings[MAX_HASH_DISTANCE_KEY],
                settings[LABEL_CONFLICT_POLICY_KEY], split_names.index(contracts.EXCLUDED_SPLIT)))

    # From here to the files, one fused stage: image bytes are never gathered.
    built = image_files | 'BuildExamples' >> beam.ParDo(
        BuildImageExample(input_base), plan=beam.pvalue.AsDict(plan)
    ).with_outputs(SKIPPED, main='examples')
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

    skipped = sorted(_read_json_lines(os.path.join(report_dir, contracts.SKIPPED_FILES_FILE)),
                     key=lambda row: row['file'])
    count_rows = _read_json_lines(os.path.join(report_dir, contracts.CLASS_COUNTS_FILE))
    class_counts: Dict[str, Dict[str, int]] = {}
    for row in count_rows:
      class_counts.setdefault(row['split'], {})[row['label']] = row['count']
    example_count = sum(row['count'] for row in count_rows)

    examples_artifact.set_json_value_custom_property(contracts.CLASS_NAMES_PROPERTY, list(features.LABEL_NAMES))
    examples_artifact.set_json_value_custom_property(contracts.CLASS_COUNTS_PROPERTY, class_counts)
    examples_artifact.set_json_value_custom_property(contracts.SKIPPED_FILES_PROPERTY, skipped)
    examples_artifact.set_int_custom_property(contracts.EXAMPLE_COUNT_PROPERTY, example_count)
    examples_artifact.set_int_custom_property(contracts.SKIPPED_COUNT_PROPERTY, len(skipped))
    # What the data-quality check downstream needs to judge the split.
    examples_artifact.set_int_custom_property(contracts.MAX_HASH_DISTANCE_PROPERTY,
                                              settings[MAX_HASH_DISTANCE_KEY])
    examples_artifact.set_string_custom_property(contracts.LABEL_CONFLICT_POLICY_PROPERTY,
                                                 settings[LABEL_CONFLICT_POLICY_KEY])

    for row in skipped:
      logging.warning('ImageExampleGen skipped %s: %s', row['file'], row['reason'])
    limit = settings[MAX_UNREADABLE_FRACTION_KEY]
    if example_count == 0:
      raise UnusableInputError(
          f'no usable images under {exec_properties[standard_component_specs.INPUT_BASE_KEY]}'
          f' ({len(skipped)} files skipped)')
    share = len(skipped) / (len(skipped) + example_count)
    if share > limit:
      named = '; '.join(f'{row["file"]} ({row["reason"]})' for row in skipped[:10])
      more = f' and {len(skipped) - 10} more' if len(skipped) > 10 else ''
      raise UnusableInputError(
          f'{len(skipped)} of {len(skipped) + example_count} input files could not be used '
          f'({share:.1%} > max_unreadable_fraction {limit:.1%}): {named}{more}')


DEFAULT_SETTINGS = {
    MAX_UNREADABLE_FRACTION_KEY: DEFAULT_MAX_UNREADABLE_FRACTION,
    MAX_HASH_DISTANCE_KEY: near_duplicates.DEFAULT_MAX_DISTANCE,
    LABEL_CONFLICT_POLICY_KEY: contracts.DEFAULT_LABEL_CONFLICT_POLICY,
    CODE_VERSION_KEY: '',
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
  if settings[LABEL_CONFLICT_POLICY_KEY] not in contracts.LABEL_CONFLICT_POLICIES:
    raise ValueError(f'label_conflict_policy must be one of {", ".join(contracts.LABEL_CONFLICT_POLICIES)},'
                     f' got {settings[LABEL_CONFLICT_POLICY_KEY]!r}')
  return settings
