"""TFX's Pusher, pushing atomically: a version appears in the serving directory whole or not at all.

TFX's own Pusher copies the SavedModel file by file into `<base>/<version>/`; a run killed in the
middle leaves a numbered folder that TF Serving and our server try, and fail, to load. This
executor copies into a hidden staging folder beside the versions (`.<version>.incomplete`, a name
TF Serving never reads), flushes it to disk and renames it into place, which is atomic on a local
filesystem. Staging folders left by an interrupted push are removed by the next push. On a remote
filesystem, where a folder rename is a copy, it falls back to TFX's order: everything but
`saved_model.pb` first, `saved_model.pb` last, so a server never finds a SavedModel before its
variables. Which number the new version gets is the serving directory's rule
(`serving/model_directory.py`, the one answer to which version is the newest): Unix seconds, as
TFX's, or one above every numbered folder, so every push is a new, higher version.

With the serving check's `infra_blessing` (components/serving_check/), the version also gets the
Trainer's TFLite model in `<version>/tflite/` when the check found it agrees with the SavedModel
(a model server reads only the SavedModel and ignores the folder); the PushedModel artifact's
custom property `tflite_pushed` says whether it did.
"""

import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components import contracts
from serving import model_directory

STAGING_SUFFIX = '.incomplete'


def _is_local(path: str) -> bool:
  return '://' not in path


def _flush_to_disk(folder: str) -> None:
  """fsyncs every file and folder below `folder`, so the rename publishes data that is there."""
  for directory, _, files in os.walk(folder):
    for name in files:
      with open(os.path.join(directory, name), 'rb+') as handle:
        os.fsync(handle.fileno())
    descriptor = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(descriptor)
    finally:
      os.close(descriptor)


def remove_abandoned_staging(base_directory: str) -> List[str]:
  """Removes staging folders of pushes that never finished; returns their names."""
  if not tf.io.gfile.isdir(base_directory):
    return []
  abandoned = [name.rstrip('/') for name in tf.io.gfile.listdir(base_directory)
               if name.startswith('.') and name.rstrip('/').endswith(STAGING_SUFFIX)]
  for name in abandoned:
    tf.io.gfile.rmtree(os.path.join(base_directory, name))
  return abandoned


def publish_version(model_path: str, base_directory: str, version: str,
                    extra_folders: Optional[Dict[str, str]] = None) -> str:
  """Copies the SavedModel at `model_path` to `<base_directory>/<version>` atomically (locally;
  see the module docstring for remote filesystems), with each of `extra_folders` ({name in the
  version: folder}) inside it. Returns the version's path."""
  destination = os.path.join(base_directory, version)
  tf.io.gfile.makedirs(base_directory)
  extra_folders = extra_folders or {}
  if not _is_local(base_directory):
    io_utils.copy_dir(model_path, destination, deny_regex_patterns=[r'saved_model\.pb'])
    for name, folder in extra_folders.items():
      io_utils.copy_dir(folder, os.path.join(destination, name))
    io_utils.copy_file(os.path.join(model_path, model_directory.SAVED_MODEL_FILE),
                       os.path.join(destination, model_directory.SAVED_MODEL_FILE))
    return destination
  staging = os.path.join(base_directory, f'.{version}{STAGING_SUFFIX}')
  io_utils.copy_dir(model_path, staging)
  for name, folder in extra_folders.items():
    io_utils.copy_dir(folder, os.path.join(staging, name))
  _flush_to_disk(staging)
  os.rename(staging, destination)  # atomic: the version appears whole
  return destination


def agreeing_tflite_folder(input_dict: Dict[str, List[types.Artifact]]) -> Optional[str]:
  """The Model artifact's TFLite folder when the serving check found it agrees, else None."""
  infra_blessings = input_dict.get(standard_component_specs.INFRA_BLESSING_KEY)
  if not infra_blessings or artifact_utils.get_single_instance(
      infra_blessings).get_int_custom_property(contracts.TFLITE_AGREES_PROPERTY) != 1:
    return None
  model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
  tflite_model = model.get_string_custom_property(contracts.TFLITE_MODEL_PROPERTY)
  return os.path.join(model.uri, os.path.dirname(tflite_model)) if tflite_model else None


class Executor(tfx_pusher_executor.Executor):
  """Pushes to a filesystem destination like TFX's Pusher, atomically."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    model_path = self.GetModelPath(input_dict)
    push_destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              push_destination)
    if push_destination.WhichOneof('destination') != 'filesystem':
      raise NotImplementedError('this Pusher pushes to a filesystem destination only')
    base_directory = push_destination.filesystem.base_directory
    for name in remove_abandoned_staging(base_directory):
      logging.warning('Removed %s, left by a push that did not finish.', name)
    version = model_directory.next_version(base_directory)
    tflite_folder = agreeing_tflite_folder(input_dict)
    serving_path = publish_version(
        model_path, base_directory, version,
        {os.path.basename(tflite_folder): tflite_folder} if tflite_folder else None)
    logging.info('Model written to serving path %s.', serving_path)
    io_utils.copy_dir(model_path, model_push.uri)
    self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
    model_push.set_int_custom_property('tflite_pushed', int(tflite_folder is not None))
