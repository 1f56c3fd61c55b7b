"""The local server answers as TensorFlow Serving's REST API does, behaviour by behaviour (the
docs/serving.md's table): each test sends the request and expects the answer TF Serving's handler code
and REST documentation give (tensorflow_serving/model_servers/http_rest_api_handler.cc,
http_server.cc, util/json_tensor.cc, g3doc/api_rest.md). The server runs on the model the shared
pipeline runs pushed, from a TF Serving model config file with version labels, and with CORS
headers on (TF Serving's --rest_api_enable_cors_support)."""

import base64
import gzip
import http.client
import json
import os

import pytest

MODEL = 'breast_ultrasound'


@pytest.fixture(scope='module')
def newest(pushed_model_dir):
  return sorted(os.listdir(pushed_model_dir))[-1]


@pytest.fixture(scope='module')
def server(pushed_model_dir, newest, start_module_server, tmp_path_factory):
  config = tmp_path_factory.mktemp('model_config') / 'models.config'
  config.write_text(f"""
model_config_list {{
  config {{
    name: '{MODEL}'
    base_path: '{pushed_model_dir}'
    model_platform: 'tensorflow'
    version_labels {{ key: 'stable' value: {newest} }}
    version_labels {{ key: 'retired' value: 12 }}
  }}
}}
""")
  return start_module_server('', '--model-config-file', str(config), '--enable-cors')


@pytest.fixture(scope='module')
def image_b64(pipeline_runs):
  image = (pipeline_runs['data_root'] / 'benign' / 'benign (3).png').read_bytes()
  return base64.b64encode(image).decode()


def call(server, method, path, body=None, headers=None):
  """(status, headers, body bytes) of one request."""
  host_port = server.address.replace('http://', '')
  connection = http.client.HTTPConnection(host_port, timeout=120)
  if isinstance(body, (dict, list)):
    body = json.dumps(body).encode()
  connection.request(method, path, body=body, headers=headers or {})
  response = connection.getresponse()
  answer = response.status, {name.lower(): value for name, value in response.getheaders()}, (
      response.read())
  connection.close()
  return answer


def error_of(server, method, path, body=None, headers=None):
  status, answer_headers, payload = call(server, method, path, body, headers)
  assert answer_headers['content-type'] == 'application/json'
  return status, json.loads(payload)['error']


def test_metadata_keeps_proto_field_names_and_unpacks_the_any(server, newest):
  status, _, payload = call(server, 'GET', f'/v1/models/{MODEL}/metadata')
  body = json.loads(payload)
  assert status == 200
  assert body['model_spec'] == {'name': MODEL, 'version': newest, 'signature_name': ''}
  assert set(body['metadata']) == {'signature_def'}
  assert set(body['metadata']['signature_def']) == {'signature_def'}  # no "@type"
  signature = body['metadata']['signature_def']['signature_def']['serving_default']
  assert signature['method_name'] == 'tensorflow/serving/predict'
  assert signature['inputs']['image_bytes']['dtype'] == 'DT_STRING'
  assert signature['inputs']['image_bytes']['tensor_shape'] == {
      'dim': [{'size': '-1', 'name': ''}], 'unknown_rank': False}
  assert 'tensorShape' not in payload.decode() and 'methodName' not in payload.decode()


def test_status_lists_versions_with_strings_and_enum_names(server, newest):
  status, _, payload = call(server, 'GET', f'/v1/models/{MODEL}')
  assert status == 200
  assert json.loads(payload) == {'model_version_status': [{
      'version': newest, 'state': 'AVAILABLE',
      'status': {'error_code': 'OK', 'error_message': ''}}]}


@pytest.mark.parametrize('method, path', [
    ('GET', '/v1/foo'),
    ('POST', f'/v1/models/{MODEL}/metadata'),
    ('GET', f'/v1/models/{MODEL}:predict'),
    ('POST', f'/v1/models/{MODEL}'),
    ('POST', f'/v1/models/{MODEL}/versions/abc:predict'),
    ('POST', f'/v1/models/{MODEL}:PREDICT'),
    ('PUT', f'/v1/models/{MODEL}'),
    ('DELETE', f'/v1/models/{MODEL}'),
    ('PATCH', f'/v1/models/{MODEL}:predict'),
])
def test_wrong_routes_and_verbs_are_malformed_requests(server, method, path):
  assert error_of(server, method, path) == (400, f'Malformed request: {method} {path}')


def test_a_path_outside_v1_is_not_found(server):
  assert call(server, 'GET', '/')[0] == 404
  assert error_of(server, 'GET', '/v1/models') == (400, 'Missing model name in request.')


def test_cors_preflight_and_headers(server, pushed_model_dir, start_server):
  path = f'/v1/models/{MODEL}:predict'
  status, headers, payload = call(server, 'OPTIONS', path, headers={
      'Origin': 'http://viewer.example', 'Access-Control-Request-Method': 'POST'})
  assert (status, payload) == (200, b'')
  assert headers['access-control-allow-origin'] == '*'
  assert headers['access-control-allow-methods'] == 'POST, GET'
  assert headers['access-control-allow-headers'] == 'Content-Type'
  assert call(server, 'OPTIONS', path)[0::2] == (400, b'')  # no Origin: not a preflight
  assert call(server, 'GET', f'/v1/models/{MODEL}')[1]['access-control-allow-origin'] == '*'
  # Off by default, as --rest_api_enable_cors_support is.
  plain = start_server(pushed_model_dir)
  status, headers, _ = call(plain, 'OPTIONS', path, headers={'Origin': 'https://a.example'})
  assert status == 200 and 'access-control-allow-origin' not in headers


def test_version_labels_from_the_model_config_file(server, newest, image_b64):
  status, _, payload = call(server, 'POST', f'/v1/models/{MODEL}/labels/stable:predict',
                            {'instances': [{'b64': image_b64}]})
  by_label = json.loads(payload)
  assert status == 200
  _, _, payload = call(server, 'POST', f'/v1/models/{MODEL}/versions/{newest}:predict',
                       {'instances': [{'b64': image_b64}]})
  assert by_label == json.loads(payload)
  status, _, payload = call(server, 'GET', f'/v1/models/{MODEL}/labels/stable/metadata')
  assert status == 200 and json.loads(payload)['model_spec']['version'] == newest
  assert error_of(server, 'POST', f'/v1/models/{MODEL}/labels/canary:predict',
                  {'instances': [{'b64': image_b64}]}) == (
                      400, 'Unrecognized servable version label: canary')
  assert error_of(server, 'POST', f'/v1/models/{MODEL}/labels/retired:predict',
                  {'instances': [{'b64': image_b64}]}) == (
                      404, f'Servable not found for request: Specific({MODEL}, 12)')
  # A status request takes a label and answers for every version, as TF Serving does.
  status, _, payload = call(server, 'GET', f'/v1/models/{MODEL}/labels/canary')
  assert status == 200 and json.loads(payload)['model_version_status'][0]['version'] == newest


def test_gzip_request_bodies(server, image_b64):
  body = json.dumps({'instances': [{'b64': image_b64}]}).encode()
  path = f'/v1/models/{MODEL}:predict'
  plain = call(server, 'POST', path, body)
  zipped = call(server, 'POST', path, gzip.compress(body), {'Content-Encoding': 'gzip'})
  assert plain[0] == zipped[0] == 200 and json.loads(plain[2]) == json.loads(zipped[2])
  assert error_of(server, 'POST', path, b'not gzip', {'Content-Encoding': 'gzip'}) == (
      400, 'JSON Parse error: The document is empty')


@pytest.mark.parametrize('case, path, body, status, message', [
    ('wrong input name, row form', f'/v1/models/{MODEL}:predict',
     {'instances': [{'image': {'b64': 'AAAA'}}]}, 400,
     "Failed to process element: 0 key: image of 'instances' list. Error: INVALID_ARGUMENT: "
     'JSON object: does not have named input: image'),
    ('input missing, row form', f'/v1/models/{MODEL}:predict', {'instances': [{}]}, 400,
     "Failed to process element: 0 of 'instances' list. JSON object: {} keys must be equal to: "
     'image_bytes'),
    ('wrong input name, columnar form', f'/v1/models/{MODEL}:predict',
     {'inputs': {'image': [{'b64': 'AAAA'}]}}, 400,
     "Missing named input: image_bytes in 'inputs' object."),
    ('wrong type, row form', f'/v1/models/{MODEL}:predict', {'instances': [123]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 123 "
     'Type: Number is not of expected type: string'),
    ('wrong type, columnar form', f'/v1/models/{MODEL}:predict', {'inputs': [123]}, 400,
     'JSON Value: 123 Type: Number is not of expected type: string'),
    ('a string where floats are expected', f'/v1/models/{MODEL}:predict',
     {'signature_name': 'from_pixels', 'inputs': ['x']}, 400,
     'JSON Value: "x" Type: String is not of expected type: float'),
    ('an object that is not base64', f'/v1/models/{MODEL}:predict',
     {'instances': [{'b64': 1}]}, 400,
     'Failed to process element: 0 of \'instances\' list. Error: INVALID_ARGUMENT: JSON Value: '
     '{"b64": 1} not formatted correctly for base64 data'),
    ('unknown version', f'/v1/models/{MODEL}/versions/999:predict',
     {'instances': [{'b64': 'AAAA'}]}, 404,
     f'Servable not found for request: Specific({MODEL}, 999)'),
    ('unknown model', '/v1/models/other:predict', {'instances': [{'b64': 'AAAA'}]}, 404,
     'Servable not found for request: Latest(other)'),
    ('unknown signature', f'/v1/models/{MODEL}:predict',
     {'signature_name': 'nope', 'instances': [{'b64': 'AAAA'}]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ('no instances or inputs', f'/v1/models/{MODEL}:predict', {'signature_name': 'x'}, 400,
     "Missing 'inputs' or 'instances' key"),
    ('not an object', f'/v1/models/{MODEL}:predict', [1, 2], 400,
     'JSON Value: [1, 2] Is not object'),
    ('empty instances', f'/v1/models/{MODEL}:predict', {'instances': []}, 400,
     'JSON Value: {"instances": []} No values in \'instances\' array'),
    ('unknown version, status', f'/v1/models/{MODEL}/versions/999', None, 404,
     f'Could not find version 999 of model {MODEL}'),
    ('unknown model, status', '/v1/models/other', None, 404,
     'Could not find any versions of model other'),
])
def test_error_texts_are_tf_servings(server, case, path, body, status, message):
  method = 'GET' if body is None else 'POST'
  assert error_of(server, method, path, body) == (status, message), case
