"""CuratedSchemaGen: TFX's SchemaGen, then the domain knowledge an inferred schema lacks.

TFDV infers types, shapes and presence well, but from a small set it also "learns" things that
are accidents of the sample: every file name as a string domain, a 0/1 bool domain for the mask
count. And it cannot know that the image feature is image bytes or which labels exist. After
SchemaGen's own inference this executor:

- declares the image feature an image domain;
- fixes the label domain to the class vocabulary (`label` in [0, classes), `label_name` in the
  names);
- drops domains inferred for identifiers and counts (file name, perceptual hash, duplicate group,
  mask count, height, width) and gives those numbers their real lower bounds.

Other inferred domains stay, such as the image domain TFDV's semantic statistics find for the
mask feature when masks are present.
"""

import os
from typing import List, Optional

from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import types
from tfx.components.schema_gen import executor as schema_gen_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import io_utils, json_utils

from models import features


_IDENTIFIER_KEYS = (features.FILENAME_KEY, features.IMAGE_HASH_KEY, features.DUPLICATE_GROUP_KEY)


def curate_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
  """Returns a copy of `schema` with the domains described in the module docstring."""
  curated = schema_pb2.Schema()
  curated.CopyFrom(schema)
  del curated.string_domain[:]
  curated.string_domain.add(name=features.LABEL_NAME_KEY, value=list(features.LABEL_NAMES))
  lower_bounds = {features.MASK_COUNT_KEY: 0, features.HEIGHT_KEY: 1, features.WIDTH_KEY: 1}
  for feature in curated.feature:
    if feature.name in _IDENTIFIER_KEYS:
      feature.ClearField('domain_info')
    elif feature.name == features.IMAGE_KEY:
      feature.image_domain.SetInParent()
    elif feature.name == features.LABEL_KEY:
      feature.int_domain.CopyFrom(schema_pb2.IntDomain(
          name=features.LABEL_KEY, min=0, max=len(features.LABEL_NAMES) - 1,
          is_categorical=True))
    elif feature.name == features.LABEL_NAME_KEY:
      feature.domain = features.LABEL_NAME_KEY
    elif feature.name in lower_bounds:
      feature.int_domain.CopyFrom(schema_pb2.IntDomain(min=lower_bounds[feature.name]))
  return curated


class Executor(schema_gen_executor.Executor):
  """Runs SchemaGen's inference, then rewrites its schema.pbtxt curated."""

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    schema_path = os.path.join(
        artifact_utils.get_single_uri(output_dict[standard_component_specs.SCHEMA_KEY]),
        schema_gen_executor.DEFAULT_FILE_NAME)
    schema = io_utils.parse_pbtxt_file(schema_path, schema_pb2.Schema())
    io_utils.write_pbtxt_file(schema_path, curate_schema(schema))


CODE_VERSION_KEY = 'code_version'


class CuratedSchemaGenSpec(standard_component_specs.SchemaGenSpec):
  """SchemaGen's spec, plus `code_version`: a fingerprint of this module's code, unused by the
  executor, there only so that TFX's cache reruns the component when the code changes."""
  PARAMETERS = {
      **standard_component_specs.SchemaGenSpec.PARAMETERS,
      CODE_VERSION_KEY: ExecutionParameter(type=str, optional=True),
  }


class CuratedSchemaGen(base_component.BaseComponent):
  """SchemaGen's inputs, outputs and arguments, and `code_version`."""

  SPEC_CLASS = CuratedSchemaGenSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, statistics: types.BaseChannel, infer_feature_shape: bool = True,
               exclude_splits: Optional[List[str]] = None, code_version: str = ''):
    super().__init__(spec=CuratedSchemaGenSpec(
        statistics=statistics, infer_feature_shape=int(infer_feature_shape),
        exclude_splits=json_utils.dumps(exclude_splits or []), code_version=code_version,
        schema=types.Channel(type=standard_artifacts.Schema)))
