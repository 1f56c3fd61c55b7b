"""Training–serving skew: the server logs a sample of its requests as TF Serving does, and
`python -m runs.skew` compares the logged images with the serving model's training data."""

import base64
import io
import json
import os
import pathlib
import subprocess
import urllib.request

import numpy as np
import tensorflow as tf
from PIL import Image

from data import dicom
from models import features
from serving import predict, request_log


def png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


def skew_command(python, project_root, output_dir, log_dir, *flags):
  """`python -m runs.skew` on a run's output dir and a request log dir."""
  return subprocess.run(
      [python, '-m', 'runs.skew', '--output-dir', str(output_dir), '--request-log-dir',
       str(log_dir), *flags], cwd=project_root, capture_output=True, text=True, timeout=600,
      check=False)


def test_the_logger_samples_at_its_rate_and_records_read_back_the_images(tmp_path):
  images = [png(np.full((8, 8), level, np.uint8)) for level in (10, 200)]
  logger = request_log.RequestLogger(str(tmp_path / 'all'), 1.0, 'breast_ultrasound', seed=0)
  assert logger.log(7, 'serving_default', {'image_bytes': np.array(images, dtype=object)})
  example = tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[images[1]]))}))
  assert logger.log(8, 'from_examples',
                    {'examples': np.array([example.SerializeToString()], dtype=object)})
  assert logger.log(8, 'from_pixels', {'image_pixels': np.zeros([1, 2, 2, 3], np.float32)})
  logger.close()
  records = list(request_log.read_logs(str(tmp_path / 'all')))
  assert [request_log.encoded_images(record) for record in records] == [
      (7, images), (8, [images[1]]), (8, [])]
  assert records[0].log_metadata.model_spec.name == 'breast_ultrasound'
  assert records[0].log_metadata.sampling_config.sampling_rate == 1.0

  none = request_log.RequestLogger(str(tmp_path / 'none'), 0.0, 'breast_ultrasound', seed=0)
  assert not any(none.log(1, 'serving_default', {'image_bytes': np.array(images, dtype=object)})
                 for _ in range(20))
  some = request_log.RequestLogger(str(tmp_path / 'some'), 0.25, 'breast_ultrasound', seed=0)
  logged = sum(some.log(1, 'serving_default', {'image_bytes': np.array(images, dtype=object)})
               for _ in range(400))
  assert 70 <= logged <= 130  # 100 expected; the standard deviation is about 9


def test_logged_requests_yield_a_skew_report_feature_by_feature(
    pipeline_runs, pushed_model_dir, start_server, python, project_root, tmp_path):
  log_dir = tmp_path / 'requests'
  server = start_server(pushed_model_dir, '--request-log-dir', str(log_dir),
                        '--request-log-rate', '1')
  data_root = pipeline_runs['data_root']
  # A scanner with a third of the gain: every served image much darker than training's.
  darker = []
  for name in features.LABEL_NAMES:
    for number in range(1, 6):
      pixels = np.asarray(Image.open(data_root / name / f'{name} ({number}).png'))
      darker.append(png((pixels.astype(np.float32) / 3).astype(np.uint8)))
  body = json.dumps({'instances': [{'b64': base64.b64encode(image).decode()}
                                   for image in darker[:10]]}).encode()
  with urllib.request.urlopen(urllib.request.Request(server.model_url + ':predict', data=body),
                              timeout=120) as response:
    assert response.status == 200
  predict.GrpcServerModel(server.grpc_address, 'breast_ultrasound', None).classify(darker[10:])
  server.stop()

  completed = skew_command(python, project_root, pipeline_runs['output_dir'], log_dir, '--json')
  assert completed.returncode == 1, completed.stdout[-2000:] + completed.stderr[-2000:]
  [entry] = json.loads(completed.stdout)
  assert (entry['requests'], entry['images'], entry['decoded_images']) == (2, 15, 15)
  assert entry['trained_on_spans'] == [0]
  measured = {row['feature']: row for row in entry['measurements']}
  assert set(measured) == {features.WIDTH_KEY, features.HEIGHT_KEY, *features.CONTENT_KEYS}
  assert measured['mean_intensity']['beyond'] and measured['dark_fraction']['beyond']
  assert not measured['width']['beyond'] and measured['width']['distance'] == 0
  assert set(entry['skewed']) >= {'mean_intensity', 'dark_fraction'}
  table = skew_command(python, project_root, pipeline_runs['output_dir'], log_dir)
  assert 'mean_intensity   Jensen-Shannon divergence' in table.stdout
  assert 'SKEWED' in table.stdout

  # The negative control: the same scanner as training (the data root's own images, logged as
  # the server logs them to the same version) is within every threshold, and the exit code is 0.
  clean_dir = tmp_path / 'clean_requests'
  logger = request_log.RequestLogger(str(clean_dir), 1.0, 'breast_ultrasound', seed=0)
  clean = [path.read_bytes() for path in sorted(data_root.glob('*/*.png'))
           if not path.stem.endswith('_mask')]
  logger.log(int(os.path.basename(sorted(os.listdir(pushed_model_dir))[-1])), 'serving_default',
             {'image_bytes': np.array(clean, dtype=object)})
  logger.close()
  completed = skew_command(python, project_root, pipeline_runs['output_dir'], clean_dir, '--json')
  assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
  [entry] = json.loads(completed.stdout)
  assert entry['images'] == entry['decoded_images'] == len(clean) > 40
  assert entry['skewed'] == [] and len(entry['measurements']) == 5


def test_a_dicom_file_reaches_the_request_log_as_its_picture_and_no_identifier(
    pipeline_runs, pushed_model_dir, start_server, python, project_root, tmp_path):
  """The CLI converts a DICOM file before it sends it: the server logs the picture's PNG, and no
  identifier from the header reaches the request log or the skew check's output."""
  log_dir = tmp_path / 'requests'
  server = start_server(pushed_model_dir, '--request-log-dir', str(log_dir),
                        '--request-log-rate', '1')
  pixels = np.asarray(Image.open(pipeline_runs['data_root'] / 'benign' / 'benign (2).png')
                      .convert('RGB'))
  screen, region = dicom.in_scanner_interface(pixels)
  clip = dicom.write_ultrasound(str(tmp_path / 'IM0001'), screen, transfer_syntax=dicom.RLE,
                                frames=3, region=region, identifiers=dicom.IDENTIFIERS)
  completed = subprocess.run(
      [python, '-m', 'serving.predict', '--server', server.address, '--model-name',
       'breast_ultrasound', clip], cwd=project_root, capture_output=True, text=True, timeout=300,
      check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  server.stop()
  [record] = request_log.read_logs(str(log_dir))
  _, [logged] = request_log.encoded_images(record)
  assert np.array_equal(np.asarray(Image.open(io.BytesIO(logged)).convert('RGB')), pixels)
  skew = skew_command(python, project_root, pipeline_runs['output_dir'], log_dir, '--json')
  outputs = [completed.stdout, completed.stderr, skew.stdout, skew.stderr]
  for folder, _, names in os.walk(log_dir):
    outputs += [(pathlib.Path(folder) / name).read_bytes().decode('latin-1') for name in names]
  assert [token for token in dicom.identifier_tokens() if token in (tmp_path / 'IM0001')
          .read_bytes().decode('latin-1')]  # planted
  assert not [token for token in dicom.identifier_tokens()
              for output in outputs if token in output]
