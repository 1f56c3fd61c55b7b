"""TF Serving's gRPC API on the local server (serving/grpc_api.py), driven with TF Serving's own
client stubs on 127.0.0.1, on the model the shared pipeline runs pushed: the same images give the
same scores over gRPC, REST and in process, and errors carry TF Serving's gRPC codes."""

import base64
import json
import subprocess
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from models import features
from serving import model_directory

MODEL = 'breast_ultrasound'


@pytest.fixture(scope='module')
def server(pushed_model_dir, start_module_server):
  return start_module_server(pushed_model_dir)


@pytest.fixture(scope='module')
def stubs(server):
  channel = grpc.insecure_channel(server.grpc_address)
  yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
         model_service_pb2_grpc.ModelServiceStub(channel))
  channel.close()


@pytest.fixture(scope='module')
def encoded_images(pipeline_runs):
  return [(pipeline_runs['data_root'] / name / f'{name} (2).png').read_bytes()
          for name in features.LABEL_NAMES]


def predict_request(images, signature_name='', version=None, name=MODEL):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = version
  request.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto(images))
  return request


def test_grpc_rest_and_in_process_give_the_same_scores(stubs, server, encoded_images,
                                                       pushed_model_dir):
  prediction_stub, _ = stubs
  version, path = model_directory.find_version(pushed_model_dir)
  response = prediction_stub.Predict(predict_request(encoded_images), timeout=60)
  assert response.model_spec.name == MODEL and response.model_spec.version.value == version
  assert response.model_spec.signature_name == 'serving_default'
  over_grpc = tf.make_ndarray(response.outputs['probabilities'])
  assert set(response.outputs) == {
      'probabilities', 'classes', 'most_probable_class', 'most_probable_probability', 'decision',
      'malignant_threshold'}

  body = json.dumps({'instances': [{'b64': base64.b64encode(image).decode()}
                                   for image in encoded_images]}).encode()
  with urllib.request.urlopen(urllib.request.Request(f'{server.model_url}:predict', data=body),
                              timeout=60) as answer:
    over_rest = np.array([row['probabilities'] for row in json.load(answer)['predictions']])
  in_process = tf.saved_model.load(path).signatures['serving_default'](
      image_bytes=tf.constant(encoded_images))['probabilities'].numpy()
  np.testing.assert_allclose(over_grpc, in_process, atol=1e-6)
  np.testing.assert_allclose(over_rest, in_process, atol=1e-6)

  request = predict_request(encoded_images)
  request.output_filter.append('probabilities')
  filtered = prediction_stub.Predict(request, timeout=60)
  assert set(filtered.outputs) == {'probabilities'}


def test_grpc_metadata_and_status_as_tf_serving_answers_them(stubs, pushed_model_dir):
  prediction_stub, model_stub = stubs
  version, _ = model_directory.find_version(pushed_model_dir)
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  request.model_spec.name = MODEL
  response = prediction_stub.GetModelMetadata(request, timeout=60)
  assert response.model_spec.version.value == version
  signatures = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata['signature_def'].Unpack(signatures)
  serving_default = signatures.signature_def['serving_default']
  assert serving_default.inputs['image_bytes'].dtype == tf.string.as_datatype_enum
  assert {'from_examples', 'explain', 'from_pixels'} <= set(signatures.signature_def)

  status_request = get_model_status_pb2.GetModelStatusRequest()
  status_request.model_spec.name = MODEL
  status = model_stub.GetModelStatus(status_request, timeout=60)
  [entry] = [entry for entry in status.model_version_status if entry.version == version]
  assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
  assert entry.status.error_code == 0


@pytest.mark.parametrize('request_of, code, message', [
    (lambda images: predict_request(images, name='other'), grpc.StatusCode.NOT_FOUND,
     'Servable not found for request: Latest(other)'),
    (lambda images: predict_request(images, version=7), grpc.StatusCode.NOT_FOUND,
     f'Servable not found for request: Specific({MODEL}, 7)'),
    (lambda images: predict_request(images, signature_name='nope'),
     grpc.StatusCode.INVALID_ARGUMENT,
     'Serving signature name: "nope" not found in signature def'),
    (lambda images: predict_request([b'not an image']), grpc.StatusCode.INVALID_ARGUMENT,
     'Unsupported image format: expected PNG, JPEG or BMP bytes'),
    (lambda images: predict_request([1.5]), grpc.StatusCode.INVALID_ARGUMENT,
     'Expects arg[0] to be string but float32 is provided'),
])
def test_grpc_errors_carry_tf_servings_codes(stubs, encoded_images, request_of, code, message):
  prediction_stub, _ = stubs
  with pytest.raises(grpc.RpcError) as raised:
    prediction_stub.Predict(request_of(encoded_images), timeout=60)
  assert raised.value.code() == code
  assert message in raised.value.details()


def test_predict_cli_through_grpc_matches_rest(python, project_root, server, pipeline_runs):
  paths = [str(pipeline_runs['data_root'] / name / f'{name} (2).png')
           for name in features.LABEL_NAMES]
  grpc_address = f'grpc://{server.grpc_address}'
  lines = {}
  for address in (grpc_address, server.address):
    completed = subprocess.run(
        [python, '-m', 'serving.predict', '--server', address, '--model-name', MODEL, *paths],
        cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines[address] = [json.loads(line) for line in completed.stdout.splitlines()]
  assert lines[grpc_address] == lines[server.address]
  assert [line['path'] for line in lines[grpc_address]] == paths
  unreachable = subprocess.run(
      [python, '-m', 'serving.predict', '--server', 'grpc://127.0.0.1:9', '--model-name', MODEL,
       paths[0]], cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
  assert unreachable.returncode == 2
  assert unreachable.stderr.startswith('serving.predict: error: cannot reach the gRPC server at '
                                       '127.0.0.1:9')
