"""The prediction CLI and the local TF Serving-compatible server, on the model the real pipeline
pushed (the `pipeline_runs` fixture): local and server predictions agree, status and metadata
answer as TF Serving does, every kind of bad request gets 400 and `{"error": ...}`, and a version
pushed while requests are in flight takes over without one request failing."""

import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import tensorflow as tf
from PIL import Image

from benchmarks import serving_load
from models import features, serving_warmup
from serving import predict
from serving.model_versions import ModelVersions


def predict_cli(python, project_root, *arguments):
  """`serving.predict.main` on `arguments` in this process (TensorFlow is imported already):
  (completed, JSON lines), `completed` as subprocess.run reports a command. One test runs the
  real command (`predict_command`)."""
  del python, project_root
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      returncode = predict.main(list(map(str, arguments)))
    except SystemExit as exit_:
      returncode = exit_.code
  completed = subprocess.CompletedProcess(arguments, returncode, stdout.getvalue(),
                                          stderr.getvalue())
  return completed, [json.loads(line) for line in completed.stdout.splitlines()]


def predict_command(python, project_root, *arguments):
  """`python -m serving.predict` in a subprocess: (completed, JSON lines)."""
  completed = subprocess.run([python, '-m', 'serving.predict', *map(str, arguments)],
                             cwd=project_root, capture_output=True, text=True, timeout=300,
                             check=False)
  return completed, [json.loads(line) for line in completed.stdout.splitlines()]


def http(url, body=None, raw=None):
  """(status, decoded JSON answer) of a GET, or of a POST of `body` (JSON) or `raw` bytes."""
  data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
  request = urllib.request.Request(url, data=data)
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.load(response)
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


def start_clients(clients):
  """Starts each function in its own thread; the function returned waits for them all and fails
  with the first exception any of them raised (a thread's exception is otherwise only a
  warning, and the request it was making simply missing)."""
  raised = []

  def guarded(client):
    try:
      client()
    except BaseException as error:  # pylint: disable=broad-except
      raised.append(error)

  threads = [threading.Thread(target=guarded, args=(client,)) for client in clients]
  for thread in threads:
    thread.start()

  def wait():
    for thread in threads:
      thread.join()
    if raised:
      raise raised[0]
  return wait


def b64(path):
  with open(path, 'rb') as handle:
    return base64.b64encode(handle.read()).decode()


@pytest.fixture(scope='module')
def images(pipeline_runs, tmp_path_factory):
  """A folder with two good images, a lesion mask and a README, plus a corrupt image."""
  folder = tmp_path_factory.mktemp('to_classify')
  nested = folder / 'nested'
  nested.mkdir()
  data_root = pipeline_runs['data_root']
  shutil.copy(data_root / 'benign' / 'benign (1).png', folder / 'benign (1).png')
  shutil.copy(data_root / 'malignant' / 'malignant (2).png', nested / 'malignant (2).png')
  shutil.copy(data_root / 'benign' / 'benign (1)_mask.png', folder / 'benign (1)_mask.png')
  (folder / 'README.txt').write_text('not an image')
  corrupt = tmp_path_factory.mktemp('corrupt') / 'corrupt.png'
  corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + b'truncated')
  return {'folder': folder, 'good': [folder / 'benign (1).png', nested / 'malignant (2).png'],
          'corrupt': corrupt}


def model_probabilities(model_dir, version, image_path):
  loaded = tf.saved_model.load(os.path.join(model_dir, version))
  outputs = loaded.signatures['serving_default'](
      image_bytes=tf.reshape(tf.io.read_file(str(image_path)), [1]))
  return outputs['probabilities'].numpy()[0]


def test_predict_cli_classifies_a_folder_and_reports_bad_images(python, project_root, images,
                                                                pushed_model_dir):
  completed, lines = predict_command(python, project_root, '--model-dir', pushed_model_dir,
                                     images['folder'], images['corrupt'], '/no/such/image.png')
  assert completed.returncode == 1, completed.stderr
  by_path = {line['path']: line for line in lines}
  assert set(by_path) == {*map(str, images['good']), str(images['corrupt']),
                          '/no/such/image.png'}
  assert 'Image header is truncated' in by_path[str(images['corrupt'])]['error']
  assert by_path['/no/such/image.png']['error'] == 'no such file or folder'
  newest = sorted(os.listdir(pushed_model_dir))[-1]
  for path in images['good']:
    line = by_path[str(path)]
    assert list(line['scores']) == list(features.LABEL_NAMES)
    assert abs(sum(line['scores'].values()) - 1) < 1e-4
    # The decision at the operating point, apart from the most probable class.
    crossed = line['malignant_probability'] >= line['malignant_threshold']
    others = {name: score for name, score in line['scores'].items() if name != 'malignant'}
    assert line['decision'] == ('malignant' if crossed else max(others, key=others.get))
    assert line['most_probable_class'] == max(line['scores'], key=line['scores'].get)
    assert line['most_probable_probability'] == line['scores'][line['most_probable_class']]
    expected = model_probabilities(pushed_model_dir, newest, path)
    assert [line['scores'][name] for name in features.LABEL_NAMES] == pytest.approx(
        expected.tolist(), abs=1e-5)
  # The mask and the README in the folder are skipped, and said so with the reasons.
  assert 'skipped 2 files: ' in completed.stderr
  assert 'README.txt: not an image file (.txt)' in completed.stderr
  assert 'benign (1)_mask.png' in completed.stderr


def test_predict_cli_exit_codes(python, project_root, images, pushed_model_dir):
  completed, lines = predict_cli(python, project_root, '--model-dir', pushed_model_dir,
                                 *images['good'])
  assert completed.returncode == 0 and len(lines) == 2
  oldest = sorted(os.listdir(pushed_model_dir))[0]
  completed, lines = predict_cli(python, project_root, '--model-dir', pushed_model_dir,
                                 '--version', oldest, images['good'][0])
  assert completed.returncode == 0 and lines[0]['decision'] in features.LABEL_NAMES
  completed, lines = predict_cli(python, project_root, '--model-dir', pushed_model_dir,
                                 '--version', '7', images['good'][0])
  assert completed.returncode == 2 and not lines
  assert completed.stderr.strip().count('\n') == 0 and 'has no version 7' in completed.stderr
  completed, _ = predict_cli(python, project_root, images['good'][0])
  assert completed.returncode == 2 and 'give --model-dir' in completed.stderr


@pytest.fixture(scope='module')
def server(pushed_model_dir, start_module_server):
  """A server on the pushed models with a request limit of 100,000 bytes, for the tests that
  need no flags of their own."""
  return start_module_server(pushed_model_dir, '--max-request-bytes', '100000')


@pytest.fixture(scope='module')
def one_worker_server(pushed_model_dir, start_module_server):
  """A server with one worker (and two queued) and a read timeout of 2 s."""
  return start_module_server(pushed_model_dir, '--max-workers', '1', '--read-timeout-seconds', '2')


def test_predict_cli_through_the_server_matches_local(python, project_root, images,
                                                      pushed_model_dir, server):
  arguments = [images['folder'], images['corrupt']]
  local, local_lines = predict_cli(python, project_root, '--model-dir', pushed_model_dir,
                                   *arguments)
  remote, remote_lines = predict_cli(python, project_root, '--server', server.address,
                                     '--model-name', 'breast_ultrasound', *arguments)
  assert local.returncode == remote.returncode == 1
  assert [line['path'] for line in remote_lines] == [line['path'] for line in local_lines]
  for local_line, remote_line in zip(local_lines, remote_lines):
    if 'error' in local_line:
      assert local_line['error'] == remote_line['error']
      assert 'Image header is truncated' in local_line['error']
    else:
      assert remote_line['decision'] == local_line['decision']
      assert remote_line['most_probable_class'] == local_line['most_probable_class']
      assert remote_line['scores'] == pytest.approx(local_line['scores'], abs=1e-5)
  unreachable, _ = predict_cli(python, project_root, '--server', 'http://127.0.0.1:9',
                               '--model-name', 'x', images['good'][0])
  assert unreachable.returncode == 2 and 'cannot reach the server' in unreachable.stderr


def test_server_status_metadata_and_both_predict_forms(images, pushed_model_dir, server):
  assert server.address.startswith('http://127.0.0.1:')  # Not reachable from other machines.
  newest = sorted(os.listdir(pushed_model_dir))[-1]

  status, body = http(server.model_url)
  assert status == 200
  assert body['model_version_status'] == [{'version': newest, 'state': 'AVAILABLE', 'status': {
      'error_code': 'OK', 'error_message': ''}}]

  status, body = http(server.model_url + '/metadata')
  assert status == 200 and body['model_spec']['version'] == newest
  signature = body['metadata']['signature_def']['signature_def']['serving_default']
  assert signature['inputs']['image_bytes']['dtype'] == 'DT_STRING'
  assert set(signature['outputs']) == {
      'probabilities', 'classes', 'most_probable_class', 'most_probable_probability', 'decision',
      'malignant_threshold', 'review', 'review_reason'}

  good = [b64(path) for path in images['good']]
  status, rows = http(server.model_url + ':predict',
                      {'instances': [{'b64': image} for image in good]})
  assert status == 200 and len(rows['predictions']) == 2
  status, named_rows = http(server.model_url + f'/versions/{newest}:predict',
                            {'instances': [{'image_bytes': {'b64': image}} for image in good]})
  assert status == 200 and named_rows == rows
  status, columns = http(server.model_url + ':predict',
                         {'inputs': {'image_bytes': [{'b64': image} for image in good]}})
  assert status == 200
  for row, path in enumerate(images['good']):
    expected = model_probabilities(pushed_model_dir, newest, path)
    assert rows['predictions'][row]['probabilities'] == pytest.approx(expected.tolist(), abs=1e-5)
    assert columns['outputs']['probabilities'][row] == pytest.approx(expected.tolist(), abs=1e-5)
    assert rows['predictions'][row]['classes'] == list(features.LABEL_NAMES)
    for name in ('decision', 'most_probable_class', 'most_probable_probability',
                 'malignant_threshold', 'review', 'review_reason'):
      assert columns['outputs'][name][row] == rows['predictions'][row][name]


def test_server_answers_bad_requests_with_400(images, server):
  predict = server.model_url + ':predict'
  with open(images['corrupt'], 'rb') as handle:
    corrupt = base64.b64encode(handle.read()).decode()
  bad_requests = {
      'malformed JSON': dict(raw=b'{"instances": [{"b64": '),
      'not an object': dict(body=[1, 2]),
      'no instances or inputs': dict(body={'signature_name': 'serving_default'}),
      'bad base64': dict(body={'instances': [{'b64': 'not base64!'}]}),
      'not an image': dict(body={'instances': [{'b64': base64.b64encode(b'hello').decode()}]}),
      'truncated PNG': dict(body={'instances': [{'b64': corrupt}]}),
      'unknown signature': dict(body={'signature_name': 'nope', 'instances': [{'b64': corrupt}]}),
      # Deeper than Python's JSON parser goes (within this server's 100,000-byte limit), and
      # deeper than a tensor's 254 dimensions.
      'nested 45,000 deep': dict(raw=b'{"instances": ' + b'[' * 45000 + b']' * 45000 + b'}'),
      'nested 900 deep': dict(raw=b'{"instances": [' + b'[' * 900 + b'"a"' + b']' * 900 + b']}'),
  }
  for name, request in bad_requests.items():
    status, body = http(predict, **request)
    assert status == 400, (name, body)
    assert set(body) == {'error'} and body['error'], name
  assert http(predict, **bad_requests['nested 45,000 deep'])[1] == {
      'error': 'JSON Parse error: arrays or objects nested too deeply'}
  assert 'a tensor has at most 254 dimensions' in http(
      predict, **bad_requests['nested 900 deep'])[1]['error']
  status, body = http(predict, {'instances': [{'b64': corrupt}]})
  assert body['error'] == 'Image header is truncated'
  status, body = http(predict, {'instances': [{'b64': base64.b64encode(b'hello').decode()}]})
  assert body['error'] == 'Unsupported image format: expected PNG, JPEG or BMP bytes'
  # HTTP-level refusals come from the WSGI server, in plain text as TF Serving's HTTP layer.
  port = int(server.address.rsplit(':', 1)[1])
  for headers, body, status in ((b'Content-Length: 200000', b'x' * 200000, b'413'),
                                (b'Content-Length: -5', b'', b'400')):
    with socket.create_connection(('127.0.0.1', port), timeout=30) as connection:
      connection.sendall(b'POST /v1/models/breast_ultrasound:predict HTTP/1.1\r\nHost: x\r\n'
                         + headers + b'\r\n\r\n' + body)
      received = []
      while chunk := connection.recv(4096):  # answered and closed, not waited on
        received.append(chunk)
    assert b''.join(received).startswith(b'HTTP/1.1 ' + status), (headers, received)
  # A body far over the limit, sent whole before the answer is read (as urllib and most clients
  # do), gets the 413 naming the limit, not a reset connection.
  with pytest.raises(urllib.error.HTTPError) as refused:
    urllib.request.urlopen(urllib.request.Request(predict, data=b' ' * 20_000_000), timeout=120)
  assert refused.value.code == 413 and b'exceeds max_body of 100000' in refused.value.read()
  assert http(server.address + '/v1/models/other')[0] == 404
  assert http(server.model_url + '/versions/1:predict', {'instances': []})[0] == 404
  # Still serving after all of that.
  status, body = http(predict, {'instances': [{'b64': b64(images['good'][0])}]})
  assert status == 200 and server.process.poll() is None


def test_new_version_takes_over_while_requests_are_in_flight(images, pushed_model_dir,
                                                             start_server, tmp_path):
  # Two different models the pipeline pushed (runs 1 and 4), served as versions 1 and 2.
  first, second = sorted(os.listdir(pushed_model_dir))
  old_scores = model_probabilities(pushed_model_dir, first, images['good'][0])
  new_scores = model_probabilities(pushed_model_dir, second, images['good'][0])
  assert abs(old_scores - new_scores).max() > 1e-4  # else the switch could not be seen
  base_path = tmp_path / 'breast_ultrasound'
  shutil.copytree(os.path.join(pushed_model_dir, first), base_path / '1')
  server = start_server(str(base_path), '--poll-seconds', '0.2')
  request = {'instances': [{'b64': b64(path)} for path in images['good']]}
  status, body = http(server.model_url + ':predict', request)
  assert status == 200
  assert body['predictions'][0]['probabilities'] == pytest.approx(old_scores.tolist(), abs=1e-5)
  results, stop = [], threading.Event()

  def keep_asking():
    while not stop.is_set():
      results.append(http(server.model_url + ':predict', request)[0])

  wait_for_clients = start_clients([keep_asking] * 3)
  time.sleep(1.0)
  # Copied in place file by file, as Pusher does: the server sees a half-written version too.
  shutil.copytree(os.path.join(pushed_model_dir, second), base_path / '2')
  deadline = time.time() + 120
  while time.time() < deadline:
    versions = http(server.model_url)[1]['model_version_status']
    if versions[0] == {'version': '2', 'state': 'AVAILABLE',
                       'status': {'error_code': 'OK', 'error_message': ''}}:
      break
    time.sleep(0.2)
  answered_before_switch = len(results)
  time.sleep(1.0)
  stop.set()
  wait_for_clients()
  assert versions[0]['version'] == '2' and versions[0]['state'] == 'AVAILABLE', versions
  assert [entry['version'] for entry in versions] == ['2']  # the old one is retired
  assert answered_before_switch > 3 and len(results) > answered_before_switch
  assert set(results) == {200}
  # Version 2's weights answer now, not version 1's under a new number.
  status, body = http(server.model_url + ':predict',
                      {'instances': [{'b64': b64(images['good'][0])}]})
  assert status == 200
  assert body['predictions'][0]['probabilities'] == pytest.approx(new_scores.tolist(), abs=1e-5)


def wait_for_status(server, predicate, seconds=60):
  deadline = time.time() + seconds
  while time.time() < deadline:
    status = http(server.model_url)[1]['model_version_status']
    if predicate(status):
      return status
    time.sleep(0.2)
  raise AssertionError(f'status never matched: {status}')


def test_server_serves_the_newest_version_that_loads_and_ignores_other_folders(
    images, pushed_model_dir, start_server, tmp_path):
  first, second = sorted(os.listdir(pushed_model_dir))
  base_path = tmp_path / 'breast_ultrasound'
  shutil.copytree(os.path.join(pushed_model_dir, first), base_path / '1')
  shutil.copytree(os.path.join(pushed_model_dir, second), base_path / '3')
  for odd in ('tmp', '3.partial', '²', '.9.incomplete'):  # never versions
    shutil.copytree(os.path.join(pushed_model_dir, second), base_path / odd)
  (base_path / '5').mkdir()  # newest, but broken: a SavedModel without its variables
  (base_path / '5' / 'saved_model.pb').write_bytes(b'not a SavedModel')
  server = start_server(str(base_path), '--poll-seconds', '0.2')
  request = {'instances': [{'b64': b64(images['good'][0])}]}

  def served_scores():
    return http(server.model_url + ':predict', request)[1]['predictions'][0]['probabilities']

  status = http(server.model_url)[1]['model_version_status']
  assert [(entry['version'], entry['state']) for entry in status] == [('5', 'END'),
                                                                       ('3', 'AVAILABLE')]
  assert status[0]['status']['error_message']
  assert served_scores() == pytest.approx(
      model_probabilities(pushed_model_dir, second, images['good'][0]).tolist(), abs=1e-5)
  # The version in service is deleted: the newest remaining one that loads takes over.
  shutil.rmtree(base_path / '3')
  wait_for_status(server, lambda status: ('1', 'AVAILABLE') in [
      (entry['version'], entry['state']) for entry in status])
  assert served_scores() == pytest.approx(
      model_probabilities(pushed_model_dir, first, images['good'][0]).tolist(), abs=1e-5)
  # The broken version is mended: its files changed, so it is tried again, and serves.
  shutil.rmtree(base_path / '5')
  shutil.copytree(os.path.join(pushed_model_dir, second), base_path / '5')
  wait_for_status(server, lambda status: status[0] == {
      'version': '5', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}})


def test_a_version_is_served_once_its_warmup_requests_ran(pushed_model_dir, tmp_path):
  """Each pushed version carries TF Serving's warmup requests; a version whose warmup fails is
  not served (as TF Serving), and the older one keeps serving."""
  newest = sorted(os.listdir(pushed_model_dir))[-1]
  saved = serving_warmup.read_requests(os.path.join(pushed_model_dir, newest))
  assert [request.model_spec.signature_name for request in saved] == [
      'serving_default', 'explain', 'from_pixels']
  shutil.copytree(os.path.join(pushed_model_dir, newest), tmp_path / '1')
  shutil.copytree(os.path.join(pushed_model_dir, newest), tmp_path / '2')
  pixels = tf.make_ndarray(saved[-1].inputs['image_pixels'])
  serving_warmup.write_requests(str(tmp_path / '2'), [('no_such_signature', {'image_pixels': pixels})])
  said = []
  versions = ModelVersions(str(tmp_path), log=said.append)
  versions.refresh()
  assert versions.serving.version == 1
  assert said == ['skipped version 2, which does not load: Serving signature name: '
                  '"no_such_signature" not found in signature def', 'serving version 1']


def test_predict_cli_uses_the_version_the_server_serves(python, project_root, images,
                                                        pushed_model_dir, tmp_path):
  """A newest version whose saved_model.pb is truncated beside a good older one: the CLI, as the
  server, uses the older one and names the broken one in one line; asked for the broken one by
  number, one line and exit code 2."""
  newest = sorted(os.listdir(pushed_model_dir))[-1]
  shutil.copytree(os.path.join(pushed_model_dir, newest), tmp_path / '1')
  shutil.copytree(os.path.join(pushed_model_dir, newest), tmp_path / '2')
  model_file = tmp_path / '2' / 'saved_model.pb'
  model_file.write_bytes(model_file.read_bytes()[:1000])
  completed, lines = predict_cli(python, project_root, '--model-dir', tmp_path, images['good'][0])
  assert completed.returncode == 0, completed.stderr
  skipped = [line for line in completed.stderr.splitlines() if 'version 2' in line]
  assert len(skipped) == 1 and skipped[0].startswith('skipped version 2, which does not load: ')
  assert [lines[0]['scores'][name] for name in features.LABEL_NAMES] == pytest.approx(
      model_probabilities(pushed_model_dir, newest, images['good'][0]).tolist(), abs=1e-5)
  completed, _ = predict_cli(python, project_root, '--model-dir', tmp_path, '--version', '2',
                             images['good'][0])
  assert completed.returncode == 2
  assert 'Traceback' not in completed.stderr
  assert completed.stderr.strip().startswith('serving.predict: error: version 2 does not load: ')


def idle_keep_alive(address, port):
  """A connection that asked one question over HTTP/1.1 keep-alive, read the whole answer, and
  then says nothing."""
  connection = socket.create_connection((address, port), timeout=30)
  connection.sendall(b'GET /v1/models/breast_ultrasound HTTP/1.1\r\nHost: x\r\n\r\n')
  answer = b''
  while b'\r\n\r\n' not in answer:
    answer += connection.recv(65536)
  head, body = answer.split(b'\r\n\r\n', 1)
  length = int(re.search(rb'Content-Length: (\d+)', head).group(1))
  while len(body) < length:
    body += connection.recv(65536)
  assert head.startswith(b'HTTP/1.1 200') and b'Connection: close' not in head, head
  return connection


def test_stalled_and_idle_clients_hold_no_worker_and_are_closed_after_the_read_timeout(
    one_worker_server, images):
  server = one_worker_server
  port = int(server.address.rsplit(':', 1)[1])
  stalled = []
  for _ in range(20):
    connection = socket.create_connection(('127.0.0.1', port), timeout=30)
    connection.sendall(b'POST /v1/models/breast_ultrasound:predict HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Length: 1000\r\n\r\n{"instances": [')
    stalled.append(connection)
  idle = [idle_keep_alive('127.0.0.1', port) for _ in range(20)]
  started = time.time()
  status, _ = http(server.model_url + ':predict', {'instances': [{'b64': b64(images['good'][0])}]})
  # Answered by the one worker before any of the 40 silent connections timed out.
  assert status == 200 and time.time() - started < 2
  for connection in stalled + idle:
    connection.settimeout(10)
    assert connection.recv(65536) == b''  # closed by the server once silent for 2 s
    connection.close()
  assert time.time() - started < 6 and server.process.poll() is None


def test_a_saturated_server_answers_503_with_retry_after_and_still_answers_status(
    one_worker_server, images):
  server = one_worker_server
  batch = {'instances': [{'b64': b64(images['good'][0])}] * 64}  # long enough to overlap
  answers = []
  start_clients([lambda: answers.append(
      serving_load.post(server.model_url + ':predict', json.dumps(batch).encode()))] * 8)()
  statuses = sorted(status for status, _, _ in answers)
  assert len(statuses) == 8 and 200 in statuses and 503 in statuses
  assert set(statuses) == {200, 503}, statuses
  for status, headers, body in answers:
    if status == 503:
      assert headers['Retry-After'] == '1' and 'busy' in body['error']
    else:
      assert len(body['predictions']) == 64
  assert http(server.model_url)[0] == 200


def test_load_of_200_clients_good_malformed_and_stalled(pushed_model_dir, start_server, images):
  """200 concurrent clients for 8 seconds (benchmarks/serving_load.py): 140 asking good
  questions and asking again when refused, 30 sending malformed JSON, 30 bad base64, and 40
  stalled sockets beside them. The server stays up, its memory bounded; every request gets an
  HTTP answer (no connection is reset or refused), every good one the right probabilities or a
  503 with Retry-After, every bad one its 400 however busy the workers are."""
  server = start_server(pushed_model_dir, '--read-timeout-seconds', '2')
  newest = sorted(os.listdir(pushed_model_dir))[-1]
  expected = model_probabilities(pushed_model_dir, newest, images['good'][0]).tolist()
  outcomes = serving_load.load(server.model_url + ':predict', images['good'][0].read_bytes(),
                               seconds=8, server_pid=server.process.pid)
  assert server.process.poll() is None
  print('load test:', serving_load.summary_rows(outcomes, 8), outcomes['stalled'], 'stalled')
  assert not outcomes['failures'], outcomes['failures'][:3]
  # Every request sent got a whole answer.
  for kind, sent in outcomes['sent'].items():
    assert sent == len(outcomes[kind]) > 0, kind
  good = outcomes[serving_load.GOOD]
  answered = [body for status, _, body in good if status == 200]
  # How many are answered in 8 s depends on the machine; what matters is that answers come,
  # are right, and that every refusal is a 503 saying when to ask again.
  assert answered and {status for status, _, _ in good} <= {200, 503}
  for body in answered:
    assert body['predictions'][0]['probabilities'] == pytest.approx(expected, abs=1e-5)
  assert {retry_after for status, _, retry_after in good if status == 503} <= {'1'}
  for kind in (serving_load.MALFORMED, serving_load.BAD_BASE64):
    assert outcomes[kind] and {status for status, _, _ in outcomes[kind]} == {400}, kind
  assert outcomes['stalled'] >= 40
  memory = outcomes['memory']
  assert max(memory) - memory[0] < 400, memory
  # Still answering once the load is gone.
  assert http(server.model_url + ':predict', {'instances': [{'b64': b64(images['good'][0])}]}
              )[0] == 200


def test_predict_cli_says_the_operating_point_and_explains_where_the_model_looked(
    python, project_root, images, pushed_model_dir, tmp_path):
  completed, lines = predict_cli(python, project_root, '--model-dir', pushed_model_dir,
                                 '--explain', tmp_path / 'explained', *images['good'])
  assert completed.returncode == 0, completed.stderr
  said = [line for line in completed.stderr.splitlines() if line.startswith('operating point')]
  assert len(said) == 1  # once, not per image
  threshold = float(said[0].split('reaches ')[1].split(',')[0])
  for line in lines:
    assert line['malignant_threshold'] == pytest.approx(threshold, abs=1e-4)
    with Image.open(line['explanation']) as overlay:
      assert overlay.format == 'PNG' and overlay.size == (96, 96)  # 48-px input, shown twice
  assert sorted(os.listdir(tmp_path / 'explained')) == ['benign (1).explained.png',
                                                        'malignant (2).explained.png']
