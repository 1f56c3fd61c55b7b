"""CuratedSchemaGen: TFX's SchemaGen, then the domain knowledge an inferred schema lacks.

TFDV infers types, shapes and presence well, but from a small set it also "learns" things that
are accidents of the sample: every file name as a string domain, a 0/1 bool domain for the mask
count. And it cannot know that the image feature is image bytes or which labels exist. After
SchemaGen's own inference this executor:

- declares the image and mask features image domains (whatever the sample size);
- fixes the label domain to the class vocabulary (`label` in [0, classes), `label_name` in the
  names);
- drops domains inferred for identifiers and counts (file name, perceptual hash, duplicate group,
  mask count, height, width) and gives those numbers their real lower bounds.

Other inferred domains stay. The image-content features (mean intensity, contrast, share
of dark pixels) get their domain, [0, 1]. Two environments: TRAINING has every feature, SERVING
only what a served request has (`features.SERVING_KEYS`: the image and what is computed from it),
which `python -m runs.skew` compares.

The schema is pinned: given `pinned_schema` (the schema an earlier run inferred, from
`components/history_strategies.PinnedSchemaStrategy`), the
executor writes that schema unchanged instead of inferring one, so every later span is validated
against the schema curated on the first; `reinfer` infers afresh (and the new schema is pinned
from then on).
"""

import os
from typing import List, Optional

from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import types
from tfx.components.schema_gen import executor as schema_gen_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, json_utils

from components.history_strategies import INFERRED_FROM_PROPERTY
from models import features


_IDENTIFIER_KEYS = (features.FILENAME_KEY, features.IMAGE_HASH_KEY, features.DUPLICATE_GROUP_KEY)


def curate_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
  """Returns a copy of `schema` with the domains described in the module docstring."""
  curated = schema_pb2.Schema()
  curated.CopyFrom(schema)
  del curated.default_environment[:]
  curated.default_environment.extend(['TRAINING', 'SERVING'])
  del curated.string_domain[:]
  curated.string_domain.add(name=features.LABEL_NAME_KEY, value=list(features.LABEL_NAMES))
  lower_bounds = {features.MASK_COUNT_KEY: 0, features.HEIGHT_KEY: 1, features.WIDTH_KEY: 1}
  for feature in curated.feature:
    if feature.name not in features.SERVING_KEYS and 'SERVING' not in feature.not_in_environment:
      feature.not_in_environment.append('SERVING')
    if feature.name in _IDENTIFIER_KEYS:
      feature.ClearField('domain_info')
    elif feature.name in (features.IMAGE_KEY, features.MASK_KEY):
      feature.image_domain.SetInParent()
    elif feature.name == features.LABEL_KEY:
      feature.int_domain.CopyFrom(schema_pb2.IntDomain(
          name=features.LABEL_KEY, min=0, max=len(features.LABEL_NAMES) - 1,
          is_categorical=True))
    elif feature.name == features.LABEL_NAME_KEY:
      feature.domain = features.LABEL_NAME_KEY
    elif feature.name in lower_bounds:
      feature.int_domain.CopyFrom(schema_pb2.IntDomain(min=lower_bounds[feature.name]))
    elif feature.name in features.CONTENT_KEYS:
      feature.float_domain.CopyFrom(schema_pb2.FloatDomain(min=0.0, max=1.0))
  return curated


PINNED_SCHEMA_KEY = 'pinned_schema'
REINFER_KEY = 'reinfer'
CODE_VERSION_KEY = 'code_version'
# On the Schema artifact: 'pinned' (the previous run's, kept) or 'inferred'.
SCHEMA_ORIGIN_PROPERTY = 'schema_origin'


class Executor(schema_gen_executor.Executor):
  """Keeps the pinned schema, or runs SchemaGen's inference and rewrites its schema.pbtxt
  curated."""

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    schema_artifact = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.SCHEMA_KEY])
    schema_path = os.path.join(schema_artifact.uri, schema_gen_executor.DEFAULT_FILE_NAME)
    pinned = input_dict.get(PINNED_SCHEMA_KEY) or []
    if pinned and not exec_properties.get(REINFER_KEY):
      schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(pinned[0].uri))
      io_utils.write_pbtxt_file(schema_path, schema)
      schema_artifact.set_string_custom_property(SCHEMA_ORIGIN_PROPERTY, 'pinned')
      return
    super().Do(input_dict, output_dict, exec_properties)
    schema = io_utils.parse_pbtxt_file(schema_path, schema_pb2.Schema())
    io_utils.write_pbtxt_file(schema_path, curate_schema(schema))
    schema_artifact.set_string_custom_property(SCHEMA_ORIGIN_PROPERTY, 'inferred')
    statistics = artifact_utils.get_single_instance(
        input_dict[standard_component_specs.STATISTICS_KEY])
    schema_artifact.set_int_custom_property(INFERRED_FROM_PROPERTY, statistics.id)



class CuratedSchemaGenSpec(standard_component_specs.SchemaGenSpec):
  """SchemaGen's spec, plus `code_version`: a fingerprint of this module's code, unused by the
  executor, there only so that TFX's cache reruns the component when the code changes."""
  INPUTS = {
      **standard_component_specs.SchemaGenSpec.INPUTS,
      PINNED_SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
  }
  PARAMETERS = {
      **standard_component_specs.SchemaGenSpec.PARAMETERS,
      REINFER_KEY: ExecutionParameter(type=int, optional=True),
      CODE_VERSION_KEY: ExecutionParameter(type=str, optional=True),
  }


class CuratedSchemaGen(base_component.BaseComponent):
  """SchemaGen's inputs, outputs and arguments, the schema to keep, and `code_version`."""

  SPEC_CLASS = CuratedSchemaGenSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, statistics: types.BaseChannel, infer_feature_shape: bool = True,
               exclude_splits: Optional[List[str]] = None,
               pinned_schema: Optional[types.BaseChannel] = None, reinfer: bool = False,
               code_version: str = ''):
    super().__init__(spec=CuratedSchemaGenSpec(
        statistics=statistics, infer_feature_shape=int(infer_feature_shape),
        exclude_splits=json_utils.dumps(exclude_splits or []), pinned_schema=pinned_schema,
        reinfer=int(reinfer), code_version=code_version,
        schema=types.Channel(type=standard_artifacts.Schema)))
