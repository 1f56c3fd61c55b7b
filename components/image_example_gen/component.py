"""ImageExampleGen: a FileBasedExampleGen whose Beam executor reads image folders.

Use it like any file-based ExampleGen: `ImageExampleGen(input_base=data_root)`. A data root of
span folders (`span-1/`, `span-2/`, ... each in the class-folder layout) is read one span per
run: the newest, or `span`. What it reads
follows the input policy of `image_files.py` (class folders, links and nested folders, clutter);
the input config keeps one split named `images`, its pattern documenting the layout. With
`labels_file`, a manifest (inputs/manifest.py) labels the images instead of class folders, and
patients named there or in DICOM headers are pseudonymised with the key in
`identifier_key_file` (or the environment: inputs/identifiers.py) and kept on one side of the
split. A DICOM cine clip gives its middle frame, or with `clip_frames='all'` every frame, as
examples of one group. Its driver
fingerprints the whole data root (`driver.py`). The output is an 80/20 train/eval split that the
executor makes by near-duplicate group, stratified by label, instead of by hash; a third split,
`excluded`, holds the label conflicts the policy leaves out. The executor's own settings travel in the
standard `custom_config` slot, so the component compiles for any orchestrator unchanged; one of
them, `code_version`, is a fingerprint of the executor's code, there only so that TFX's cache
reruns the component when that code changes (see pipeline/code_version.py).
"""

import hashlib
from typing import Optional

from google.protobuf import any_pb2, struct_pb2
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts, standard_component_specs

from components import contracts, near_duplicates
from components.image_example_gen import driver, executor
from inputs import layout

DEFAULT_INPUT_PATTERN = '*/*'


def split_output_config(eval_percent: int) -> example_gen_pb2.Output:
  """Train/eval output splits in the given proportion, as hash buckets out of 100."""
  return example_gen_pb2.Output(
      split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name=contracts.TRAIN_SPLIT, hash_buckets=100 - eval_percent),
          example_gen_pb2.SplitConfig.Split(name=contracts.EVAL_SPLIT, hash_buckets=eval_percent),
      ]))


def _digest(path: Optional[str]) -> str:
  """The file's SHA-256, '' for none or one not readable here (a Kubeflow compile elsewhere)."""
  if not path:
    return ''
  try:
    with open(path, 'rb') as handle:
      return hashlib.sha256(handle.read()).hexdigest()
  except OSError:
    return ''


class ImageExampleGen(FileBasedExampleGen):
  """Turns `<input_base>/<class>/<image>` files into tf.Examples, masks attached."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.ImageFolderDriver

  def __init__(self,
               input_base: str,
               eval_percent: int = 20,
               max_unreadable_fraction: float = executor.DEFAULT_MAX_UNREADABLE_FRACTION,
               max_hash_distance: int = near_duplicates.DEFAULT_MAX_DISTANCE,
               label_conflict_policy: str = contracts.DEFAULT_LABEL_CONFLICT_POLICY,
               code_version: str = '',
               span: Optional[int] = None,
               labels_file: Optional[str] = None,
               identifier_key_file: Optional[str] = None,
               clip_frames: str = layout.MIDDLE_FRAME,
               input_config: Optional[example_gen_pb2.Input] = None,
               output_config: Optional[example_gen_pb2.Output] = None):
    if clip_frames not in layout.CLIP_FRAMES:
      raise ValueError(f'clip_frames must be one of {", ".join(layout.CLIP_FRAMES)}, got '
                       f'{clip_frames!r}')
    if label_conflict_policy not in contracts.LABEL_CONFLICT_POLICIES:
      raise ValueError(f'label_conflict_policy must be one of '
                       f'{", ".join(contracts.LABEL_CONFLICT_POLICIES)}, got {label_conflict_policy!r}')
    settings = struct_pb2.Struct()
    settings.update({executor.MAX_UNREADABLE_FRACTION_KEY: max_unreadable_fraction,
                     executor.MAX_HASH_DISTANCE_KEY: max_hash_distance,
                     executor.LABEL_CONFLICT_POLICY_KEY: label_conflict_policy,
                     executor.CODE_VERSION_KEY: code_version,
                     executor.LABELS_FILE_KEY: labels_file or '',
                     executor.LABELS_DIGEST_KEY: _digest(labels_file),
                     executor.IDENTIFIER_KEY_FILE_KEY: identifier_key_file or '',
                     executor.CLIP_FRAMES_KEY: clip_frames})
    packed = any_pb2.Any()
    packed.Pack(settings)
    super().__init__(
        input_base=input_base,
        input_config=input_config or example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name='images', pattern=DEFAULT_INPUT_PATTERN)
        ]),
        output_config=output_config or split_output_config(eval_percent),
        # A span of the data root to ingest instead of the newest (TFX's static range).
        range_config=None if span is None else range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=span,
                                                      end_span_number=span)),
        custom_config=example_gen_pb2.CustomConfig(custom_config=packed))


def run_executor_directly(input_base: str, output_uri: str,
                          **component_arguments) -> standard_artifacts.Examples:
  """Runs the executor in this process as the TFX launcher would, without ML Metadata.

  `component_arguments` are ImageExampleGen's. For tests and benchmarks of the executor alone;
  the pipeline never calls this.
  """
  example_gen = ImageExampleGen(input_base=input_base, **component_arguments)
  examples = standard_artifacts.Examples()
  examples.uri = output_uri
  executor.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]},
                         dict(example_gen.exec_properties))
  return examples
