"""Shared test set-up: Keras 2 everywhere, small synthetic data sets made per test, and one set of
real pipeline runs that every test of a finished run reads."""

import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

from data import dicom, synthetic  # pylint: disable=g-import-not-at-top
from models import features  # pylint: disable=g-import-not-at-top
from runs import metadata_store  # pylint: disable=g-import-not-at-top

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def require_service(missing: str, how_to_install: str) -> None:
  """A test that needs a service (a browser, a database server) which is not here: under CI
  (`CI=true`) it fails naming the service, elsewhere it is skipped saying how to install it. A
  skipped test is an untested feature that CI would call green."""
  message = f'{missing} not installed: {how_to_install}'
  if os.environ.get('CI', '').lower() in ('true', '1'):
    pytest.fail(f'CI=true and {message}', pytrace=False)
  pytest.skip(message)


@pytest.fixture(scope='session')
def project_root() -> str:
  return PROJECT_ROOT


@pytest.fixture(scope='session')
def python() -> str:
  """The interpreter running the tests, for the CLI subprocesses."""
  return sys.executable


# For the runs whose subject is not the network (spans, the review station, a hospital's export):
# the seed notebook's small CNN and no on-device model. A small run of it takes about 33 s on two
# cores, one of EfficientNet-Lite0 about 78 s, mostly building, tracing and exporting that network
# (docs/performance.md); `first_runs` and `pipeline_runs` keep the default network end to end.
SMALL_NETWORK = ('--network', 'seed', '--tflite-weights', 'none')


def _run_pipeline(python, project_root, data_root, output_dir, *extra_flags, temp_dir=None):
  """`local_runner.py` of the project at `project_root`, small and fast; asserts it succeeded.
  One network instead of the default's ensemble of two: the ensemble has its own run (the
  fourth of `pipeline_runs`), and a flag given in `extra_flags` overrides these. `temp_dir`:
  the run's temporary folder (TMPDIR)."""
  command = [python, 'local_runner.py', '--data-root', str(data_root),
             '--output-dir', str(output_dir), '--epochs', '2', '--image-size', '48',
             '--ensemble-members', '1',
             '--min-malignant-recall', '0', '--max-calibration-error', '1', *extra_flags]
  env = None if temp_dir is None else {**os.environ, 'TMPDIR': str(temp_dir)}
  completed = subprocess.run(command, cwd=project_root, capture_output=True, text=True,
                             timeout=900, check=False, env=env)
  assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
  return completed


@pytest.fixture(scope='session')
def run_pipeline():
  return _run_pipeline


def _once_for_all_workers(tmp_path_factory, worker_id: str, name: str, build):
  """`build()`'s dict, built once however many pytest-xdist workers ask: the first builds it
  under a lock in the directory the workers share and records it as JSON, the others wait for
  the lock and read it. Paths travel as paths; each run's component runs are read again from ML
  Metadata (`runs`)."""
  if worker_id == 'master':  # no pytest-xdist
    return build()
  shared = tmp_path_factory.getbasetemp().parent
  with open(shared / f'{name}.lock', 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
    recorded = shared / f'{name}.json'
    if recorded.exists():
      found = json.loads(recorded.read_text(encoding='utf-8'))
      paths = set(found.pop('__paths__'))
      found = {key: pathlib.Path(value) if key in paths else value for key, value in found.items()}
      return {**found, 'runs': _component_runs(found['output_dir'])}
    built = build()
    simple = {key: str(value) if isinstance(value, pathlib.Path) else value
              for key, value in built.items() if key != 'runs'}
    simple['__paths__'] = [key for key, value in built.items() if isinstance(value, pathlib.Path)]
    recorded.write_text(json.dumps(simple), encoding='utf-8')
    return built


@pytest.fixture(scope='session')
def first_runs(tmp_path_factory, worker_id, python, project_root):
  """The first two runs of `pipeline_runs` (the quick tier's end-to-end test): one run of the
  real pipeline on a small synthetic set, then the same command again."""

  def build():
    base = tmp_path_factory.mktemp('end_to_end')
    data_root = base / 'images'
    synthetic.generate_dataset(str(data_root), images_per_class=15, image_size=64, seed=3)
    output_dir = base / 'output'
    temp_dir = base / 'temp'
    temp_dir.mkdir()
    first = _run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
                          temp_dir=temp_dir)
    serving_after_first = sorted(os.listdir(output_dir / 'serving' / 'breast_ultrasound'))
    second = _run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0')
    return {'base': base, 'data_root': data_root, 'output_dir': output_dir, 'temp_dir': temp_dir,
            'runs': _component_runs(output_dir), 'stdout': [first.stdout, second.stdout],
            'serving_after_first': serving_after_first,
            'metadata_path': str(output_dir / 'metadata.sqlite')}

  return _once_for_all_workers(tmp_path_factory, worker_id, 'first_runs', build)


def _component_runs(output_dir):
  """Each recorded run's component runs, oldest run first."""
  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  return [metadata_store.component_runs(store, context.id)
          for context in metadata_store.run_contexts(store)]


@pytest.fixture(scope='session')
def pipeline_runs(first_runs, tmp_path_factory, worker_id, python, project_root):
  """Six runs of the real pipeline on one small synthetic set, shared by the tests that look
  at a finished run (end to end, inspector, report, prediction, server): see
  test_pipeline_end_to_end.py for what each run does; then one batch inference run. The first
  two are `first_runs`."""

  def build():
    base, data_root = first_runs['base'], first_runs['data_root']
    output_dir = first_runs['output_dir']
    third = _run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '1.01')
    serving_after_third = sorted(os.listdir(output_dir / 'serving' / 'breast_ultrasound'))
    # A non-inferiority margin of 1: compared with the baseline on the same images, and
    # certainly blessed.
    # Tuned by a two-trial search, then an ensemble of two one-epoch networks trained with the
    # best hyperparameters (test_ensemble.py, test_tuning.py); no on-device model
    # (test_serving_check.py).
    fourth = _run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
                          '--epochs', '1', '--ensemble-members', '2',
                          '--non-inferiority-margin', '1',
                          '--tune', '--tuning-trials', '2', '--tuning-epochs', '1',
                          '--tflite-weights', 'none')
    # Every gate passable but the calibration error's, which no model meets (it is never 0).
    fifth = _run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
                          '--non-inferiority-margin', '1', '--max-calibration-error', '0')
    serving_after_fifth = sorted(os.listdir(output_dir / 'serving' / 'breast_ultrasound'))
    # The first run's model, blessed, and a latency ceiling no model meets: the serving check
    # fails it (test_serving_check.py).
    sixth = _run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
                          '--non-inferiority-margin', '1', '--serving-latency-ceiling-ms', '0.01')
    serving_after_sixth = sorted(os.listdir(output_dir / 'serving' / 'breast_ultrasound'))
    # Batch inference with the newest pushed model (run 4's) over a folder of unlabelled images
    # (test_batch_inference.py).
    infer_dir = base / 'to_classify'
    (infer_dir / 'nested').mkdir(parents=True)
    for name in features.LABEL_NAMES:
      shutil.copy(data_root / name / f'{name} (4).png', infer_dir / 'nested' / f'{name}.png')
    shutil.copy(data_root / 'benign' / 'benign (4).png', infer_dir / 'scan (4)_mask.png')
    # An image the newest pushed model decides malignant while another class is the most
    # probable, for every output to show (test_batch_inference.py, test_serving*.py).
    between = decided_malignant_yet_not_most_probable(
        output_dir / 'serving' / 'breast_ultrasound', data_root)
    (infer_dir / 'nested' / BETWEEN_IMAGE).write_bytes(between)
    # The malignant image as a PACS exports it: DICOM without an extension, JPEG-LS, the middle
    # frame of a clip inside the scanner's screen, a patient's identifiers in its header
    # (test_batch_inference.py).
    pixels = np.asarray(Image.open(data_root / 'malignant' / 'malignant (4).png').convert('RGB'))
    screen, region = dicom.in_scanner_interface(pixels)
    dicom.write_ultrasound(str(infer_dir / 'nested' / DICOM_IMAGE), screen,
                           transfer_syntax=dicom.JPEG_LS, frames=3, region=region,
                           identifiers=dicom.IDENTIFIERS)
    (infer_dir / 'notes.txt').write_text('not an image')
    (infer_dir / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'truncated')
    inference = subprocess.run(
        [python, 'local_runner.py', '--output-dir', str(output_dir), '--infer-dir', str(infer_dir)],
        cwd=project_root, capture_output=True, text=True, timeout=900, check=False)
    assert inference.returncode == 0, inference.stdout[-3000:] + inference.stderr[-3000:]
    return {
        'data_root': data_root, 'output_dir': output_dir, 'runs': _component_runs(output_dir),
        'stdout': first_runs['stdout'] + [third.stdout, fourth.stdout, fifth.stdout, sixth.stdout],
        'serving_after_first': first_runs['serving_after_first'],
        'serving_after_third': serving_after_third,
        'serving_after_fifth': serving_after_fifth, 'serving_after_sixth': serving_after_sixth,
        'metadata_path': str(output_dir / 'metadata.sqlite'),
        'infer_dir': infer_dir, 'inference_stdout': inference.stdout,
    }

  return _once_for_all_workers(tmp_path_factory, worker_id, 'pipeline_runs', build)


BETWEEN_IMAGE = 'between.png'
DICOM_IMAGE = 'IM0001'  # the malignant image (4) as DICOM


def decided_malignant_yet_not_most_probable(model_base_path, data_root) -> bytes:
  """A PNG whose malignant probability, under the newest version in `model_base_path`, lies
  between the threshold and the most probable class's probability: a benign image blended with a
  malignant one, on a grid of blends and, where the decision turns malignant between two of
  them, by bisection on the encoded image just past the threshold. Fails if no pair of images
  gives one."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  version = sorted(os.listdir(model_base_path))[-1]
  serve = tf.saved_model.load(os.path.join(model_base_path, version)).signatures[
      'serving_default']
  answer = lambda png: {name: value.numpy()[0] for name, value in serve(
      image_bytes=tf.constant([png])).items()}
  for number in range(1, 6):
    benign, malignant = (np.asarray(Image.open(data_root / name / f'{name} ({number}).png')
                                    .convert('L'), np.float32)
                         for name in ('benign', 'malignant'))
    encoded = lambda share: _png((benign * (1 - share) + malignant * share).astype(np.uint8))
    between = lambda found: (found['decision'] == b'malignant'
                             and found['most_probable_class'] != b'malignant')
    shares = np.linspace(0, 1, 11)
    found = [answer(encoded(share)) for share in shares]
    for share, answered in zip(shares, found):
      if between(answered):
        return encoded(share)
    for index in range(len(shares) - 1):
      low, high = shares[index], shares[index + 1]
      if found[index]['decision'] == b'malignant' or found[index + 1]['decision'] != b'malignant':
        continue
      for _ in range(16):  # the blend just past the threshold
        middle = (low + high) / 2
        low, high = (low, middle) if answer(encoded(middle))['decision'] == b'malignant' else (
            middle, high)
      if between(answer(encoded(high))):
        return encoded(high)
  raise AssertionError(f'no blend of benign and malignant images in {data_root} is decided '
                       'malignant while another class is the most probable')


def _png(pixels: np.ndarray) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.fixture(scope='session')
def pushed_model_dir(pipeline_runs) -> str:
  """The model base path the pipeline runs pushed into (TF Serving's --model_base_path)."""
  return str(pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound')


class RunningServer:
  """`python -m serving.server` in a subprocess, stopped at the end of the test."""

  def __init__(self, python: str, project_root: str, base_path: str, *flags: str):
    self.process = subprocess.Popen(
        [python, '-m', 'serving.server', *(['--model-base-path', base_path] if base_path else []),
         '--port', '0', '--grpc-port', '0', *flags],
        cwd=project_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.log = []
    for line in self.process.stdout:  # Ends when the server exits.
      self.log.append(line)
      if 'gRPC listening on ' in line:
        self.grpc_address = line.split('gRPC listening on ', 1)[1].strip()
      elif 'listening on ' in line:
        self.model_url = line.split('listening on ', 1)[1].strip()
        self.address = self.model_url.split('/v1/')[0]
        return
    raise AssertionError('server did not start: ' + ''.join(self.log))

  def stop(self) -> None:
    self.process.terminate()
    self.process.wait(timeout=30)


def _starter(python, project_root):
  servers = []

  def start(base_path: str, *flags: str) -> RunningServer:
    servers.append(RunningServer(python, project_root, base_path, *flags))
    return servers[-1]

  return start, servers


@pytest.fixture
def start_server(python, project_root):
  """Starts servers that stop at the end of the test."""
  start, servers = _starter(python, project_root)
  yield start
  for server in servers:
    server.stop()


@pytest.fixture(scope='module')
def start_module_server(python, project_root):
  """Starts servers that stop at the end of the test module."""
  start, servers = _starter(python, project_root)
  yield start
  for server in servers:
    server.stop()


def stripes(count: int, seed: int, size: int = 48, ambiguous: int = 0):
  """A separable set: horizontal stripes (benign), vertical stripes (malignant), none (normal),
  each at a random grey level, period, phase and noise; ([count, size, size, 3] floats in
  [0, 1], labels). Mirroring and small rotations, which the augmentation applies, keep the
  stripes' direction. `ambiguous` more images are cross-hatched, half labelled benign and half
  malignant: no network can tell them apart, so two of them disagree on some."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for index in range(count + ambiguous):
    label = index % 3 if index < count else index % 2
    image = np.full((size, size), rng.uniform(0.3, 0.6), dtype=np.float32)
    period = rng.integers(8, 14)
    bars = ((np.arange(size) + rng.integers(0, period)) % period < period // 2) * 0.35
    if index >= count:
      image += bars[:, None] / 2 + bars[None, :] / 2
    elif label == 0:
      image += bars[:, None]
    elif label == 1:
      image += bars[None, :]
    image += rng.normal(0, 0.05, image.shape)
    images.append(np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2))
    labels.append(label)
  return np.stack(images).astype(np.float32), np.array(labels)


@pytest.fixture(scope='session')
def separable_images():
  """`stripes`: images a network learns to tell apart in a few epochs."""
  return stripes


def _write_stripes(root, pixels, labels):
  for number, (image, label) in enumerate(zip(pixels, labels)):
    folder = root / features.LABEL_NAMES[label]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(
        folder / f'{features.LABEL_NAMES[label]} ({number + 1}).png')
  return root


@pytest.fixture(scope='session')
def separable_data_root(tmp_path_factory):
  """A BUSI-layout data root of `stripes` PNGs, 20 per class at 48 px: the seed network's recipe
  reaches accuracy 1.0 on its eval split, one epoch of it stays far below."""
  return _write_stripes(tmp_path_factory.mktemp('separable') / 'images', *stripes(60, seed=0))


@pytest.fixture(scope='module')
def nearly_separable_data_root(tmp_path_factory):
  """`stripes`: 40 per class and 15 cross-hatched (benign or malignant by chance). The seed
  network at 30 epochs gets the stripes right, the rest by chance: accuracy about 0.93, a
  calibration error under 0.10, and two seeds disagree on a few eval images."""
  return _write_stripes(tmp_path_factory.mktemp('nearly_separable') / 'images',
                        *stripes(120, seed=0, ambiguous=15))


SERVING_MODULES = ('tests/test_serving.py', 'tests/test_serving_grpc.py', 'tests/test_skew.py',
                   'tests/test_serving_rest_conformance.py')


# First: pytest-xdist reads the groups in its own pytest_collection_modifyitems.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """`make test` runs on two pytest-xdist workers with `--dist loadgroup`. The shared pipeline
  runs are built once, by the first worker that needs them (`_once_for_all_workers`); the tests
  that read them are one group, but for the serving tests, which are spread over several so that
  both workers can take them (the only cost: each group starts its module's servers); every
  other test stays with its module, so its module-scoped fixtures are built once.

  The quick tier (`make test-quick`, `-m quick`) is every test that starts no process (none
  asks for the `python` fixture, which every subprocess-starting fixture and test uses) and the
  tests marked `quick` by hand: the end-to-end ones on `first_runs`."""
  served_in_module = {}
  for item in items:
    module = item.nodeid.split('::')[0]
    group = module
    if 'pipeline_runs' in item.fixturenames or 'first_runs' in item.fixturenames:
      group = 'pipeline_runs'
      if module in SERVING_MODULES:
        # The servers and clients only read the pushed models, so they run on whichever worker
        # is free, a group per module (test_serving.py's tests in two), beside the tests that
        # add runs to the shared output directory.
        index = served_in_module[module] = served_in_module.get(module, -1) + 1
        group = f'served_models:{module}' + (f':{index % 2}' if module == SERVING_MODULES[0]
                                             else '')
    item.add_marker(pytest.mark.xdist_group(group))
    item.user_properties.append(('group', group))
    if 'python' not in item.fixturenames:
      item.add_marker(pytest.mark.quick)
  # The order the workers take the groups in (the Makefile turns off pytest-xdist's reordering
  # by size): the tests that build the shared runs first, so one worker starts on them at once;
  # the serving tests last, so the other worker reaches them after its own, once the runs exist.
  def order(item):
    group = dict(item.user_properties)['group']
    return 0 if group == 'pipeline_runs' else 2 if group.startswith('served_models') else 1

  items.sort(key=order)
