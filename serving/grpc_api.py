"""TensorFlow Serving's gRPC API on the local server, with TF Serving's own protos and stubs.

Served beside REST, from the same loaded versions (serving/model_versions.py):

- `tensorflow.serving.PredictionService/Predict`: `inputs` as TensorProtos, `output_filter`,
  `model_spec` by name with a version number, a version label or neither (the latest);
- `tensorflow.serving.PredictionService/GetModelMetadata`: `signature_def`, as a
  `SignatureDefMap` packed in an `Any`;
- `tensorflow.serving.ModelService/GetModelStatus`: each version's state and status.

Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED. A client
written for TF Serving (`prediction_service_pb2_grpc.PredictionServiceStub` on port 8500) works
unchanged.
"""

from concurrent import futures
from typing import Dict, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving import model_versions
from serving.model_versions import ModelVersions, ServingError
from serving.request_log import RequestLogger

_GRPC_CODES = {model_versions.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
               model_versions.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
               model_versions.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
               model_versions.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED}
SIGNATURE_DEF_FIELD = 'signature_def'


def _resolve(versions: ModelVersions, model_name: str, model_spec):
  version = model_spec.version.value if model_spec.HasField('version') else None
  label = model_spec.version_label if model_spec.HasField('version_label') else None
  return versions.resolve(model_name, model_spec.name, version, label)


def _abort_on_error(method):
  """Turns a ServingError into the gRPC status TF Serving would send."""

  def answer(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as error:
      context.abort(_GRPC_CODES.get(error.code, grpc.StatusCode.UNKNOWN), str(error))

  answer.__name__, answer.__doc__ = method.__name__, method.__doc__
  return answer


def input_arrays(request: predict_pb2.PredictRequest,
                 input_specs: Dict[str, tf.TensorSpec]) -> Dict[str, np.ndarray]:
  """The request's TensorProtos as arrays, checked against the signature's inputs as TF
  Serving checks them."""
  sent, expected = set(request.inputs), set(input_specs)
  if sent != expected:
    raise ServingError(
        model_versions.INVALID_ARGUMENT,
        f'input size does not match signature: {len(sent)}!={len(expected)} len({{'
        f'{",".join(sorted(sent))}}}) != len({{{",".join(sorted(expected))}}}). Sent extra: '
        f'{{{",".join(sorted(sent - expected))}}}. Missing but required: '
        f'{{{",".join(sorted(expected - sent))}}}.')
  arrays = {}
  for index, (name, spec) in enumerate(sorted(input_specs.items())):
    tensor = request.inputs[name]
    if tensor.dtype != spec.dtype.as_datatype_enum:
      sent = tf.dtypes.as_dtype(tensor.dtype).name if tensor.dtype else 'no type'
      raise ServingError(model_versions.INVALID_ARGUMENT,
                         f'Expects arg[{index}] to be {spec.dtype.name} but {sent} is provided')
    arrays[name] = tf.make_ndarray(tensor)
  return arrays


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, model_name: str, versions: ModelVersions,
               request_logger: Optional[RequestLogger] = None):
    self._model_name = model_name
    self._versions = versions
    self._request_logger = request_logger

  @_abort_on_error
  def Predict(self, request, context):  # pylint: disable=invalid-name
    loaded = _resolve(self._versions, self._model_name, request.model_spec)
    signature_name = request.model_spec.signature_name or 'serving_default'
    function = model_versions.find_signature(loaded, signature_name)
    inputs = input_arrays(request, model_versions.signature_inputs(function))
    outputs = model_versions.run_signature(function, inputs)
    wanted = list(request.output_filter) or list(outputs)
    unknown = [name for name in wanted if name not in outputs]
    if unknown:
      raise ServingError(model_versions.INVALID_ARGUMENT,
                         f'output tensor alias not found in signature: {unknown[0]} Outputs '
                         f'expected to be in the set {{{",".join(sorted(outputs))}}}.')
    response = predict_pb2.PredictResponse()
    response.model_spec.name = self._model_name
    response.model_spec.version.value = loaded.version
    response.model_spec.signature_name = signature_name
    for name in wanted:
      response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
    if self._request_logger is not None:
      self._request_logger.log(loaded.version, signature_name, inputs)
    return response

  @_abort_on_error
  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    loaded = _resolve(self._versions, self._model_name, request.model_spec)
    fields = list(request.metadata_field)
    if fields != [SIGNATURE_DEF_FIELD]:
      raise ServingError(model_versions.INVALID_ARGUMENT,
                         'Metadata field signature_def is required' if not fields else
                         f'Metadata field {fields[0]} is not supported')
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = self._model_name
    response.model_spec.version.value = loaded.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(model_versions.signature_def_map(loaded))
    return response

  def _unimplemented(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, 'only Predict and GetModelMetadata are served '
                                                 'here')

  Classify = Regress = MultiInference = _unimplemented  # pylint: disable=invalid-name


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, model_name: str, versions: ModelVersions):
    self._model_name = model_name
    self._versions = versions

  @_abort_on_error
  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    spec = request.model_spec
    # A version label is not used here, as in TF Serving: every version's status.
    return model_versions.model_status(
        self._versions, self._model_name, spec.name,
        spec.version.value if spec.HasField('version') else None)

  def HandleReloadConfigRequest(self, request, context):  # pylint: disable=invalid-name
    context.abort(grpc.StatusCode.UNIMPLEMENTED, 'the model config is read once, at start-up')


def start_grpc_server(address: str, model_name: str, versions: ModelVersions,
                      max_workers: int, max_message_bytes: int,
                      request_logger: Optional[RequestLogger] = None
                      ) -> Tuple[grpc.Server, int]:
  """Starts the gRPC server on `address` ('host:port'; port 0 picks one); returns it and its
  port. Raises RuntimeError when it cannot listen there."""
  options = [('grpc.max_receive_message_length', max_message_bytes),
             ('grpc.max_send_message_length', max_message_bytes)]
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(model_name, versions, request_logger), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelService(model_name, versions), server)
  try:
    port = server.add_insecure_port(address)
  except RuntimeError:
    port = 0
  if not port:
    raise RuntimeError(f'cannot listen on {address}')
  server.start()
  return server, port
