"""Beam executor of ImageExampleGen: image folders in, one tf.Example per image out.

For every file under `<input_base>/<class>/` it decides what the file is (an image, a lesion mask
of an image, or something else), attaches each image's masks to that image's example (merged into
one mask; masks never become examples of their own), and splits the examples into train/eval
stratified by label and deterministically (each class is ordered by a hash of its file names).

Files it cannot use (corrupt or non-image files, masks without an image, files outside a class
folder) are written, with the reason, to `skipped_files.jsonl` in the Examples artifact and
listed in the artifact's `skipped_files` property. The run fails, naming them, only when they
exceed `max_unreadable_fraction` of the candidate files. Per-split class counts are recorded in
the `class_counts` property. Every step is a Beam transform, so memory stays flat however many
images there are and the same code scales out on any Beam runner.
"""

import hashlib
import io
import json
import os
import re
from typing import Any, Dict, Iterable, List, NamedTuple, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from google.protobuf import struct_pb2
from PIL import Image
from tfx.components.example_gen import utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from models import features

MAX_UNREADABLE_FRACTION_KEY = 'max_unreadable_fraction'
DEFAULT_MAX_UNREADABLE_FRACTION = 0.05
SKIPPED_FILES_NAME = 'skipped_files.jsonl'
CLASS_COUNTS_NAME = 'class_counts.jsonl'

_DECODABLE_FORMATS = {'PNG', 'JPEG', 'BMP'}
_MASK_STEM = re.compile(r'^(?P<image_stem>.+)' + features.MASK_SUFFIX + r'(?:_\d+)?$')


class UnusableInputError(ValueError):
  """Too many input files could not be used, or none could."""


class ImageRecord(NamedTuple):
  """An example on its way to a split: enough to place it, and the example itself."""
  relative_path: str
  label: int
  example: tf.train.Example


def relative_path(path: str, input_base: str) -> str:
  return os.path.relpath(path, input_base).replace(os.sep, '/')


def classify_file(path: str, input_base: str) -> Tuple[str, Any]:
  """Says what a matched file is.

  Returns ('image', (grouping key, path)), ('mask', (grouping key, path)) or
  ('skipped', {'file', 'reason'}). The grouping key joins an image with its masks:
  `benign/benign (1).png`, `benign/benign (1)_mask.png` and `benign/benign (1)_mask_1.png`
  all share the key `benign/benign (1)`.
  """
  relative = relative_path(path, input_base)
  folder, _, file_name = relative.rpartition('/')
  if folder not in features.LABEL_NAMES:
    expected = ', '.join(features.LABEL_NAMES)
    return 'skipped', {'file': relative, 'reason': f'not in a class folder ({expected})'}
  stem, extension = os.path.splitext(file_name)
  if extension.lower() not in features.IMAGE_EXTENSIONS:
    if tf.io.gfile.isdir(path):
      return 'skipped', {'file': relative, 'reason': 'a folder inside a class folder'}
    return 'skipped', {'file': relative, 'reason': f'not an image file ({extension or "no extension"})'}
  mask_match = _MASK_STEM.match(stem)
  if mask_match:
    return 'mask', (f'{folder}/{mask_match.group("image_stem")}', path)
  return 'image', (f'{folder}/{stem}', path)


def _open_image(content: bytes) -> Image.Image:
  """Decodes fully (so truncated files fail here, not in training) or raises ValueError."""
  try:
    image = Image.open(io.BytesIO(content))
    image.load()
  except Exception as error:  # PIL raises many types for corrupt data.
    raise ValueError(f'unreadable image ({error.__class__.__name__}: {error})') from error
  if image.format not in _DECODABLE_FORMATS:
    raise ValueError(f'unsupported image format {image.format}')
  return image


def merge_masks(mask_images: List[Image.Image], size: Tuple[int, int]) -> bytes:
  """One PNG marking every pixel that any of the masks marks (BUSI has up to three per image)."""
  merged = np.zeros((size[1], size[0]), dtype=np.uint8)
  for mask in mask_images:
    mask = mask.convert('L')
    if mask.size != size:
      mask = mask.resize(size, Image.NEAREST)
    merged = np.maximum(merged, np.where(np.asarray(mask) > 127, 255, 0).astype(np.uint8))
  buffer = io.BytesIO()
  Image.fromarray(merged).save(buffer, format='PNG')
  return buffer.getvalue()


def _bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def build_example(image_bytes: bytes, image: Image.Image, label_name: str,
                  relative: str, mask_bytes: bytes, mask_count: int) -> tf.train.Example:
  width, height = image.size
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: _bytes_feature(image_bytes),
      features.LABEL_KEY: _int_feature(features.LABEL_NAMES.index(label_name)),
      features.LABEL_NAME_KEY: _bytes_feature(label_name.encode()),
      features.FILENAME_KEY: _bytes_feature(relative.encode()),
      features.HEIGHT_KEY: _int_feature(height),
      features.WIDTH_KEY: _int_feature(width),
      features.MASK_KEY: _bytes_feature(mask_bytes),
      features.MASK_COUNT_KEY: _int_feature(mask_count),
  }))


class BuildImageExample(beam.DoFn):
  """(grouping key, [('image'|'mask', path)...]) → ImageRecord, or skipped-file reports."""

  SKIPPED = 'skipped'

  def __init__(self, input_base: str):
    self._input_base = input_base

  def process(self, keyed_files: Tuple[str, Iterable[Tuple[str, str]]]):
    key, files = keyed_files
    image_paths = sorted(path for kind, path in files if kind == 'image')
    mask_paths = sorted(path for kind, path in files if kind == 'mask')
    if not image_paths:
      for path in mask_paths:
        yield beam.pvalue.TaggedOutput(self.SKIPPED, {
            'file': relative_path(path, self._input_base), 'reason': 'mask without an image'})
      return
    # Two images sharing a stem ('x.png' and 'x.jpg') share the masks too.
    masks = []
    for path in mask_paths:
      try:
        masks.append(_open_image(_read(path)))
      except ValueError as error:
        yield beam.pvalue.TaggedOutput(self.SKIPPED, {
            'file': relative_path(path, self._input_base), 'reason': f'mask: {error}'})
    label_name = key.split('/', 1)[0]
    for path in image_paths:
      relative = relative_path(path, self._input_base)
      try:
        content = _read(path)
        image = _open_image(content)
      except (ValueError, OSError) as error:
        yield beam.pvalue.TaggedOutput(self.SKIPPED, {'file': relative, 'reason': str(error)})
        continue
      mask_bytes = merge_masks(masks, image.size) if masks else b''
      example = build_example(content, image, label_name, relative, mask_bytes, len(masks))
      yield ImageRecord(relative, features.LABEL_NAMES.index(label_name), example)


def _read(path: str) -> bytes:
  with FileSystems.open(path) as handle:
    return handle.read()


@beam.ptransform_fn
def ReadImageFolders(pipeline: beam.Pipeline, input_base: str, pattern: str):
  """Matches `<input_base>/<pattern>` and returns (image records, skipped-file reports)."""
  classified = (
      pipeline
      | 'MatchFiles' >> fileio.MatchFiles(
          os.path.join(input_base, pattern),
          empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
      | 'Classify' >> beam.Map(lambda metadata: classify_file(metadata.path, input_base)))
  not_usable = (classified
                | 'KeepSkipped' >> beam.Filter(lambda item: item[0] == 'skipped')
                | 'SkippedReport' >> beam.Map(lambda item: item[1]))
  built = (
      classified
      | 'KeepImagesAndMasks' >> beam.Filter(lambda item: item[0] != 'skipped')
      | 'KeyByImage' >> beam.Map(lambda item: (item[1][0], (item[0], item[1][1])))
      | 'GroupImageWithMasks' >> beam.GroupByKey()
      | 'BuildExamples' >> beam.ParDo(BuildImageExample(input_base)).with_outputs(
          BuildImageExample.SKIPPED, main='records'))
  skipped = ((not_usable, built[BuildImageExample.SKIPPED])
             | 'AllSkipped' >> beam.Flatten())
  return built.records, skipped


def stable_rank_key(relative: str) -> str:
  """Orders files by a hash of their name: deterministic, yet unrelated to file numbering."""
  return hashlib.sha256(relative.encode()).hexdigest()


def assign_stratified_splits(label_and_paths: Tuple[int, Iterable[str]],
                             cumulative_buckets: List[int]) -> Iterable[Tuple[str, int]]:
  """Gives each file of one class a split index, in proportion to the split's hash buckets.

  The class's files are ordered by `stable_rank_key`; the first share goes to split 0 and so on,
  so every split receives its share of every class (rounded), the same on every run.
  """
  _, paths = label_and_paths
  ordered = sorted(paths, key=stable_rank_key)
  total_buckets = cumulative_buckets[-1]
  boundaries = [round(len(ordered) * bucket / total_buckets) for bucket in cumulative_buckets]
  split_index = 0
  for rank, relative in enumerate(ordered):
    while rank >= boundaries[split_index]:
      split_index += 1
    yield relative, split_index


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


class Executor(BaseExampleGenExecutor):
  """Reads image folders with Beam; see the module docstring."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    """The base class's per-split hook. GenerateExamplesByBeam below does not use it (it also
    needs the skipped files and the split assignment), but it is kept usable on its own."""

    @beam.ptransform_fn
    def ImagesToExamples(pipeline, exec_properties, split_pattern):
      records, _ = pipeline | ReadImageFolders(
          exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
      return records | beam.Map(lambda record: record.example)

    return ImagesToExamples

  def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                             exec_properties: Dict[str, Any]) -> Dict[str, beam.PCollection]:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                              input_config)
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                              output_config)
    split_names = utils.generate_output_split_names(input_config, output_config)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]

    if output_config.split_config.splits:
      if len(input_config.splits) != 1:
        raise ValueError('An output split_config needs exactly one input split.')
      records, skipped = pipeline | 'ReadImages' >> ReadImageFolders(
          input_base, input_config.splits[0].pattern)
      cumulative, total = [], 0
      for split in output_config.split_config.splits:
        total += split.hash_buckets
        cumulative.append(total)
      split_of_file = (
          records
          | 'LabelAndPath' >> beam.Map(lambda record: (record.label, record.relative_path))
          | 'GroupByLabel' >> beam.GroupByKey()
          | 'AssignSplits' >> beam.FlatMap(assign_stratified_splits, cumulative))
      partitions = records | 'SplitStratified' >> beam.Partition(
          lambda record, _, split_map: split_map[record.relative_path], len(split_names),
          beam.pvalue.AsDict(split_of_file))
      record_splits = dict(zip(split_names, partitions))
      all_skipped = skipped
    else:
      record_splits, skipped_per_split = {}, []
      for split in input_config.splits:
        records, skipped = pipeline | f'ReadImages[{split.name}]' >> ReadImageFolders(
            input_base, split.pattern)
        record_splits[split.name] = records
        skipped_per_split.append(skipped)
      all_skipped = tuple(skipped_per_split) | 'AllSplitsSkipped' >> beam.Flatten()

    report_dir = self._report_dir
    _write_json_lines(all_skipped, report_dir, SKIPPED_FILES_NAME, 'Skipped')
    counts = [
        records
        | f'LabelOf[{name}]' >> beam.Map(lambda record: features.LABEL_NAMES[record.label])
        | f'CountClasses[{name}]' >> beam.combiners.Count.PerElement()
        | f'CountRow[{name}]' >> beam.Map(
            lambda label_count, split: {'split': split, 'label': label_count[0],
                                        'count': label_count[1]}, name)
        for name, records in record_splits.items()
    ]
    _write_json_lines(tuple(counts) | 'AllCounts' >> beam.Flatten(), report_dir,
                      CLASS_COUNTS_NAME, 'Counts')
    return {name: records | f'Example[{name}]' >> beam.Map(lambda record: record.example)
            for name, records in record_splits.items()}

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    examples_artifact = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    self._report_dir = examples_artifact.uri
    super().Do(input_dict, output_dict, exec_properties)

    skipped = sorted(_read_json_lines(os.path.join(self._report_dir, SKIPPED_FILES_NAME)),
                     key=lambda row: row['file'])
    count_rows = _read_json_lines(os.path.join(self._report_dir, CLASS_COUNTS_NAME))
    class_counts: Dict[str, Dict[str, int]] = {}
    for row in count_rows:
      class_counts.setdefault(row['split'], {})[row['label']] = row['count']
    example_count = sum(row['count'] for row in count_rows)

    examples_artifact.set_json_value_custom_property('class_names', list(features.LABEL_NAMES))
    examples_artifact.set_json_value_custom_property('class_counts', class_counts)
    examples_artifact.set_json_value_custom_property('skipped_files', skipped)
    examples_artifact.set_int_custom_property('example_count', example_count)
    examples_artifact.set_int_custom_property('skipped_count', len(skipped))

    for row in skipped:
      logging.warning('ImageExampleGen skipped %s: %s', row['file'], row['reason'])
    limit = _max_unreadable_fraction(exec_properties)
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


def _max_unreadable_fraction(exec_properties: Dict[str, Any]) -> float:
  serialized = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not serialized:
    return DEFAULT_MAX_UNREADABLE_FRACTION
  custom_config = example_gen_pb2.CustomConfig()
  proto_utils.json_to_proto(serialized, custom_config)
  settings = struct_pb2.Struct()
  if not custom_config.custom_config.Unpack(settings):
    return DEFAULT_MAX_UNREADABLE_FRACTION
  return float(settings.fields[MAX_UNREADABLE_FRACTION_KEY].number_value
               if MAX_UNREADABLE_FRACTION_KEY in settings.fields
               else DEFAULT_MAX_UNREADABLE_FRACTION)
