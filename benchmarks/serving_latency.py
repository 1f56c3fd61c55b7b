"""How fast a pushed model answers: `serving_default` in process, and through the local server's
REST and gRPC APIs.

    python -m benchmarks.serving_latency --model-base-path OUTPUT/serving/breast_ultrasound \
        [--images DIR] [--requests 200]

For one image it prints the latency (p50, p99 over `--requests` calls, after 10 warm-up calls),
and for batches of 1, 8 and 32 images the throughput in images per second, both in this process
(the SavedModel loaded with TensorFlow) and through `python -m serving.server` on 127.0.0.1 (a
TF Serving `:predict` request with base64 images, one connection per request, as a simple client
sends it), and through its gRPC API (`PredictionService/Predict` with TF Serving's own stub, one
channel kept open, as gRPC clients do). Images come from `--images` (PNG/JPEG files, searched recursively) or, without it,
synthetic 256×256 PNGs.
"""

import argparse
import base64
import glob
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Callable, List, Optional

import numpy as np

from cli import command_line

command_line.prepare_environment()

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SIZES = (1, 8, 32)


def encoded_images(folder: Optional[str], count: int = 32) -> List[bytes]:
  if folder:
    paths = sorted(path for path in glob.glob(os.path.join(folder, '**', '*'), recursive=True)
                   if path.lower().endswith(('.png', '.jpg', '.jpeg')) and '_mask' not in path)
    if not paths:
      raise SystemExit(f'no PNG or JPEG images under {folder}')
    return [open(path, 'rb').read() for path in (paths * count)[:count]]  # pylint: disable=consider-using-with
  from PIL import Image  # pylint: disable=g-import-not-at-top
  generator = np.random.default_rng(0)
  images = []
  for _ in range(count):
    buffer = io.BytesIO()
    Image.fromarray(generator.integers(0, 255, (256, 256), dtype=np.uint8)).save(buffer, 'PNG')
    images.append(buffer.getvalue())
  return images


def latencies(call: Callable[[], object], requests: int) -> np.ndarray:
  for _ in range(10):
    call()
  seconds = []
  for _ in range(requests):
    started = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - started)
  return np.array(seconds)


def rest_call(url: str, images: List[bytes]) -> Callable[[], object]:
  body = json.dumps({'instances': [{'b64': base64.b64encode(image).decode()}
                                   for image in images]}).encode()

  def call():
    request = urllib.request.Request(url, data=body, headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.read()

  return call


def grpc_call(stub, model_name: str, images: List[bytes]) -> Callable[[], object]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto(images))
  return lambda: stub.Predict(request, timeout=120)


def start_server(model_base_path: str, *flags: str):
  """(process, REST predict URL, gRPC address) of `python -m serving.server` on free ports."""
  process = subprocess.Popen(
      [sys.executable, '-m', 'serving.server', '--model-base-path', model_base_path, '--port', '0',
       '--grpc-port', '0', *flags],
      cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  grpc_address = None
  for line in process.stdout:
    if 'gRPC listening on ' in line:
      grpc_address = line.split('gRPC listening on ', 1)[1].strip()
    elif 'listening on ' in line:
      return process, line.split('listening on ', 1)[1].strip() + ':predict', grpc_address
  raise SystemExit('the server did not start')


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model-base-path', required=True)
  parser.add_argument('--images')
  parser.add_argument('--requests', type=int, default=200)
  args = parser.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from serving import model_directory  # pylint: disable=g-import-not-at-top

  images = encoded_images(args.images)
  _, version_dir = model_directory.find_version(args.model_base_path)
  serve = tf.saved_model.load(version_dir).signatures['serving_default']

  def in_process(batch):
    tensor = tf.constant(batch)
    return lambda: serve(image_bytes=tensor)['probabilities'].numpy()

  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  server, url, grpc_address = start_server(args.model_base_path)
  channel = grpc.insecure_channel(grpc_address)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  model_name = os.path.basename(os.path.normpath(args.model_base_path))
  try:
    rows = []
    for name, make_call in (('in process', in_process),
                            ('REST server', lambda batch: rest_call(url, batch)),
                            ('gRPC server', lambda batch: grpc_call(stub, model_name, batch))):
      one = latencies(make_call(images[:1]), args.requests)
      throughput = []
      for size in BATCH_SIZES:
        seconds = latencies(make_call(images[:size]), max(10, args.requests // size))
        throughput.append(size / np.median(seconds))
      rows.append((name, np.percentile(one, 50) * 1000, np.percentile(one, 99) * 1000,
                   throughput))
  finally:
    channel.close()
    server.terminate()
    server.wait(timeout=30)

  print(f'model {version_dir}; {os.cpu_count()} CPUs; {args.requests} requests of one image\n')
  print('| path | p50 ms (1 image) | p99 ms (1 image) | '
        + ' | '.join(f'images/s at batch {size}' for size in BATCH_SIZES) + ' |')
  print('|---|---:|---:|' + '---:|' * len(BATCH_SIZES))
  for name, p50, p99, throughput in rows:
    print(f'| {name} | {p50:.1f} | {p99:.1f} | '
          + ' | '.join(f'{rate:.1f}' for rate in throughput) + ' |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
