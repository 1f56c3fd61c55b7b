"""The versions of one model the local server serves, shared by its REST and gRPC APIs.

`ModelVersions` keeps the version in service (the newest that loads, as TF Serving's default
version policy), `resolve` finds the version a request names (by number, by label or the
latest) and `run_signature` calls one of its signatures. Errors carry the canonical status code
TF Serving would answer with (`ServingError.code`): the REST API turns it into an HTTP status,
the gRPC API into a gRPC status.
"""

import dataclasses
import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from models import serving_warmup
from serving import messages, model_directory

# Canonical codes (google.rpc.Code names), as TF Serving's absl::Status codes.
INVALID_ARGUMENT = 'INVALID_ARGUMENT'
NOT_FOUND = 'NOT_FOUND'
FAILED_PRECONDITION = 'FAILED_PRECONDITION'
UNIMPLEMENTED = 'UNIMPLEMENTED'
_STATES = {'LOADING': get_model_status_pb2.ModelVersionStatus.LOADING,
           'AVAILABLE': get_model_status_pb2.ModelVersionStatus.AVAILABLE,
           'END': get_model_status_pb2.ModelVersionStatus.END}
# tensorflow.error.Code numbers of the statuses the versions report.
_ERROR_CODES = {'OK': 0, 'UNKNOWN': 2}


class ServingError(Exception):
  """A request TF Serving refuses, with its canonical code and message."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass
class LoadedVersion:
  version: int
  saved_model: Any  # kept alive: the signatures use its variables
  signatures: Dict[str, Any]
  signature_defs: Dict[str, Any]  # name → SignatureDef proto, for the metadata requests


def load_chosen_version(base_path: str, version: Optional[int] = None,
                        log=print) -> LoadedVersion:
  """`version`, or the version the server serves (the newest that loads, each newer one that does
  not named in one line through `log`); a ModelDirectoryError says why there is none."""
  if version is not None:
    _, path = model_directory.find_version(base_path, version)
    try:
      return load_version(version, path)
    except Exception as error:  # pylint: disable=broad-except
      raise model_directory.ModelDirectoryError(
          f'version {version} does not load: {messages.tensorflow_error_line(error)}') from None
  model_directory.find_version(base_path)  # says so when there is no version at all
  versions = ModelVersions(base_path, log=log)
  versions.refresh()
  if versions.serving is None:
    raise model_directory.ModelDirectoryError(f'no version in {base_path} loads')
  return versions.serving


def load_version(version: int, path: str) -> LoadedVersion:
  saved_model = tf.saved_model.load(path)
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(path, model_directory.SAVED_MODEL_FILE), 'rb') as handle:
    proto.ParseFromString(handle.read())
  loaded = LoadedVersion(version, saved_model, dict(saved_model.signatures),
                         dict(proto.meta_graphs[0].signature_def))
  # As TF Serving, a version is ready once its warmup requests ran; one that fails fails the load.
  for request in serving_warmup.read_requests(path):
    run_signature(find_signature(loaded, request.model_spec.signature_name),
                  {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()})
  return loaded


class ModelVersions:
  """The version in service: the newest one that loads, as TF Serving's default policy.

  A newer version replaces the one in service only once it has loaded, so requests never wait
  for a push. A version that fails to load (half-copied by hand, or broken) never stops an older
  one from serving, at start-up or later; it is tried again only when its files change. When the
  version in service is deleted, the newest remaining one that loads takes over.
  """

  def __init__(self, base_path: str, log=print, labels: Optional[Mapping[str, int]] = None):
    self.base_path = base_path
    self.labels = dict(labels or {})  # version label → version, from a model config file
    self._log = log
    self._serving: Optional[LoadedVersion] = None
    self._loading: Optional[int] = None
    # version → (its files when it failed, why it did not load)
    self._failed: Dict[int, Tuple[Tuple, str]] = {}

  @property
  def serving(self) -> Optional[LoadedVersion]:
    return self._serving

  def _try_load(self, version: int) -> Optional[LoadedVersion]:
    signature = model_directory.version_signature(self.base_path, version)
    if version in self._failed and self._failed[version][0] == signature:
      return None  # unchanged since it failed
    self._loading = version
    try:
      return load_version(version, os.path.join(self.base_path, str(version)))
    except Exception as error:  # pylint: disable=broad-except
      reason = messages.tensorflow_error_line(error)
      if version not in self._failed:
        self._log(f'skipped version {version}, which does not load: {reason}')
      self._failed[version] = (signature, reason)
      return None
    finally:
      self._loading = None

  def refresh(self) -> None:
    """Serves the newest version that loads, if it is not the one in service already."""
    try:
      versions = model_directory.list_versions(self.base_path)
    except model_directory.ModelDirectoryError as error:
      self._log(f'warning: {error}')
      versions = []
    for version in list(self._failed):
      if version not in versions:
        del self._failed[version]
    serving = self._serving
    for version in reversed(versions):
      if serving is not None and version == serving.version:
        return  # nothing newer loads
      loaded = self._try_load(version)
      if loaded is not None:
        self._serving = loaded  # one reference swap: requests use the old or the new, whole
        self._failed.pop(version, None)
        deleted = (f' (version {serving.version} was deleted)'
                   if serving is not None and serving.version not in versions else '')
        self._log(f'serving version {version}{deleted}')
        return
    if serving is not None and serving.version not in versions:
      self._serving = None
      self._log(f'version {serving.version} was deleted and no other version loads; '
                'serving nothing')

  def poll_forever(self, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
      self.refresh()

  def status(self) -> List[Dict[str, Any]]:
    """TF Serving's model_version_status entries, newest first."""
    ok = {'error_code': 'OK', 'error_message': ''}
    entries = {}
    for version, (_, message) in dict(self._failed).items():  # the poller may be changing it
      entries[version] = {'version': str(version), 'state': 'END',
                          'status': {'error_code': 'UNKNOWN', 'error_message': message}}
    loading, serving = self._loading, self._serving
    if loading is not None:
      entries[loading] = {'version': str(loading), 'state': 'LOADING', 'status': ok}
    if serving is not None:
      entries[serving.version] = {'version': str(serving.version), 'state': 'AVAILABLE',
                                  'status': ok}
    return [entries[version] for version in sorted(entries, reverse=True)]

  def resolve(self, model_name: str, name: str, version: Optional[int] = None,
              label: Optional[str] = None) -> LoadedVersion:
    """The version a request for model `name` asks for: `version`, the version `label` is
    assigned to (`labels`), or the latest. Errors as TF Serving words them."""
    serving = self._serving
    if label is not None:  # looked up first: a label of an unknown model is unrecognised too
      if label not in self.labels or name != model_name:
        raise ServingError(INVALID_ARGUMENT, f'Unrecognized servable version label: {label}')
      version = self.labels[label]
    if name != model_name:
      raise ServingError(NOT_FOUND, f'Servable not found for request: Latest({name})')
    if serving is not None and (version is None or version == serving.version):
      return serving
    wanted = f'Latest({name})' if version is None else f'Specific({name}, {version})'
    raise ServingError(NOT_FOUND, f'Servable not found for request: {wanted}')


def signature_inputs(function) -> Dict[str, tf.TensorSpec]:
  """{input name: TensorSpec} of a loaded SavedModel signature."""
  return dict(function.structured_input_signature[1])


def find_signature(loaded: LoadedVersion, signature_name: str):
  function = loaded.signatures.get(signature_name)
  if function is None:
    raise ServingError(INVALID_ARGUMENT, f'Serving signature name: "{signature_name}" not found '
                                         'in signature def')
  return function


def run_signature(function, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Calls a signature on arrays; a refused input is INVALID_ARGUMENT with TensorFlow's reason."""
  try:
    outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
  except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
    raise ServingError(INVALID_ARGUMENT, messages.tensorflow_error_line(
        getattr(error, 'message', error))) from None
  return {name: value.numpy() for name, value in outputs.items()}


def model_status(versions: ModelVersions, model_name: str, name: str,
                 version: Optional[int] = None) -> get_model_status_pb2.GetModelStatusResponse:
  """TF Serving's GetModelStatusResponse for model `name` (one version, when asked)."""
  if name != model_name:
    raise ServingError(NOT_FOUND, f'Could not find any versions of model {name}')
  entries = [entry for entry in versions.status()
             if version is None or entry['version'] == str(version)]
  if version is not None and not entries:
    raise ServingError(NOT_FOUND,
                       f'Could not find version {version} of model {name}')
  response = get_model_status_pb2.GetModelStatusResponse()
  for entry in entries:
    status = response.model_version_status.add()
    status.version = int(entry['version'])
    status.state = _STATES[entry['state']]
    status.status.error_code = _ERROR_CODES[entry['status']['error_code']]
    status.status.error_message = entry['status']['error_message']
  return response


def signature_def_map(loaded: LoadedVersion) -> get_model_metadata_pb2.SignatureDefMap:
  """Every SignatureDef of the version, as GetModelMetadata's `signature_def` holds them."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  for name, definition in loaded.signature_defs.items():
    signature_map.signature_def[name].CopyFrom(definition)
  return signature_map
