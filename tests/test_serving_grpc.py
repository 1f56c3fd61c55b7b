"""TF Serving's gRPC API on the local server (serving/grpc_api.py), driven with TF Serving's own
client stubs on 127.0.0.1, on the model the shared pipeline runs pushed: the same images give the
same scores over gRPC, REST and in process, and errors carry TF Serving's gRPC codes."""

import base64
import csv
import json
import os
import subprocess
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from conftest import BETWEEN_IMAGE
from models import features
from runs import inference, metadata_store
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
      'malignant_threshold', 'review', 'review_reason'}

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


def test_every_output_decides_malignant_where_another_class_is_the_most_probable(
    python, project_root, stubs, server, pipeline_runs, pushed_model_dir):
  """The image the fixture blended to lie between the threshold and the most probable class's
  probability: REST, gRPC, the prediction CLI (in process, through REST and through gRPC) and
  batch inference's CSV and JSON lines each say `decision` malignant and another
  `most_probable_class`, with the same probability, threshold and review flag."""
  path = pipeline_runs['infer_dir'] / 'nested' / BETWEEN_IMAGE
  image = path.read_bytes()
  answers = {}

  response = stubs[0].Predict(predict_request([image]), timeout=60)
  grpc_outputs = {name: tf.make_ndarray(tensor)[0] for name, tensor in response.outputs.items()}
  answers['gRPC'] = {
      'decision': grpc_outputs['decision'].decode(),
      'most_probable_class': grpc_outputs['most_probable_class'].decode(),
      'malignant_probability': float(grpc_outputs['probabilities'][features.MALIGNANT_LABEL]),
      'malignant_threshold': float(grpc_outputs['malignant_threshold']),
      'review': bool(grpc_outputs['review']),
      'review_reason': grpc_outputs['review_reason'].decode()}
  body = json.dumps({'instances': [{'b64': base64.b64encode(image).decode()}]}).encode()
  with urllib.request.urlopen(urllib.request.Request(f'{server.model_url}:predict', data=body),
                              timeout=60) as answer:
    [row] = json.load(answer)['predictions']
  answers['REST'] = {**{name: row[name] for name in (
      'decision', 'most_probable_class', 'malignant_threshold', 'review', 'review_reason')},
                     'malignant_probability': row['probabilities'][features.MALIGNANT_LABEL]}
  for where, flags in (('CLI', ['--model-dir', pushed_model_dir]),
                       ('CLI through REST', ['--server', server.address, '--model-name', MODEL]),
                       ('CLI through gRPC', ['--server', f'grpc://{server.grpc_address}',
                                             '--model-name', MODEL])):
    completed = subprocess.run([python, '-m', 'serving.predict', *flags, str(path)],
                               cwd=project_root, capture_output=True, text=True, timeout=300,
                               check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    answers[where] = json.loads(completed.stdout)
  [run] = inference.inference_runs(metadata_store.open_store(pipeline_runs['metadata_path']))
  with open(os.path.join(os.path.dirname(run['predictions']), 'predictions.jsonl')) as handle:
    [answers['batch inference']] = [line for line in map(json.loads, handle)
                                     if line['path'] == f'nested/{BETWEEN_IMAGE}']
  with open(run['predictions'], newline='') as handle:
    [row] = [row for row in csv.DictReader(handle) if row['path'] == f'nested/{BETWEEN_IMAGE}']
  answers['batch inference CSV'] = {
      **row, 'malignant_probability': float(row['malignant_probability']),
      'malignant_threshold': float(row['malignant_threshold']),
      'review': row['review'] == 'True'}

  expected = answers['gRPC']
  assert expected['decision'] == 'malignant' and expected['most_probable_class'] != 'malignant'
  assert expected['malignant_threshold'] <= expected['malignant_probability']
  for where, found in answers.items():
    assert found['decision'] == 'malignant', where
    assert found['most_probable_class'] == expected['most_probable_class'], where
    assert found['malignant_probability'] == pytest.approx(expected['malignant_probability'],
                                                           abs=1e-5), where
    assert found['malignant_threshold'] == pytest.approx(expected['malignant_threshold'],
                                                         abs=1e-5), where
    assert (found['review'], found['review_reason']) == (
        expected['review'], expected['review_reason']), where
