"""Mistakes a user can make on the command line: one clear line, exit code 2, no traceback.

Flags refused before anything runs are checked in this process (`main`, as the command calls
it), and one of them through the real command; every mistake found later runs the command."""

import os
import subprocess
import types

import pytest

import local_runner
from models import networks


def run_cli(python, project_root, *flags, env=None):
  return subprocess.run([python, 'local_runner.py', *flags], cwd=project_root, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def run_main(capsys, *flags):
  """`local_runner.main` on `flags` in this process, as `run_cli` reports a command."""
  try:
    returncode = local_runner.main(list(flags))
  except SystemExit as exit_:
    returncode = exit_.code
  captured = capsys.readouterr()
  return types.SimpleNamespace(returncode=returncode, stdout=captured.out, stderr=captured.err)


def assert_one_line_error(completed, expected_text):
  assert completed.returncode == 2, completed.stderr
  assert 'Traceback' not in completed.stderr
  lines = [line for line in completed.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, completed.stderr
  assert expected_text in lines[0]
  assert completed.stdout == ''


def test_missing_data_root(capsys, tmp_path):
  completed = run_main(capsys, '--data-root', str(tmp_path / 'nowhere'),
                       '--output-dir', str(tmp_path / 'out'))
  assert_one_line_error(completed, 'does not exist')


def test_data_root_without_images(capsys, tmp_path):
  (tmp_path / 'images' / 'benign').mkdir(parents=True)
  (tmp_path / 'images' / 'benign' / 'notes.txt').write_text('no images here')
  completed = run_main(capsys, '--data-root', str(tmp_path / 'images'),
                       '--output-dir', str(tmp_path / 'out'))
  assert_one_line_error(completed, 'has no images')


def test_data_root_with_a_folder_that_is_not_a_class(capsys, tmp_path):
  (tmp_path / 'images' / 'benign').mkdir(parents=True)
  (tmp_path / 'images' / 'scans_2019').mkdir()
  (tmp_path / 'images' / '__MACOSX').mkdir()  # left by macOS's archiver: not named
  completed = run_main(capsys, '--data-root', str(tmp_path / 'images'))
  assert_one_line_error(completed, 'not classes: scans_2019 (expected')


def test_data_root_missing_a_class(capsys, tmp_path):
  from data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate_dataset(str(tmp_path / 'images'), images_per_class=1, image_size=32)
  for path in (tmp_path / 'images' / 'normal').iterdir():
    path.unlink()
  completed = run_main(capsys, '--data-root', str(tmp_path / 'images'),
                       '--output-dir', str(tmp_path / 'out'))
  assert_one_line_error(completed, 'has no images of class normal')


@pytest.mark.parametrize('flags, expected', [
    (('--epochs', '0'), '--epochs'),
    (('--epochs', 'many'), '--epochs'),
    (('--label-conflicts', 'ignore'), '--label-conflicts'),
    (('--max-hash-distance', '35'), '--max-hash-distance'),
    (('--image-size', '5000'), '--image-size'),
    (('--min-accuracy', '-0.1'), '--min-accuracy'),
    (('--min-accuracy', 'nan'), '--min-accuracy'),
    (('--model-name', '../escape'), '--model-name'),
    (('--network', 'resnet9000'), '--network'),
    (('--ensemble-members', '0'), '--ensemble-members'),
    (('--tune', '--network', 'seed'), "--tune: network 'seed' has no search space"),
    (('--tune', '--ensemble-members', '1'), '--ensemble-members must be at least 2'),
    (('--tuning-trials', '0'), '--tuning-trials'),
    (('--network', 'mobilenet_v3_small', '--backbone-weights', '/no/such.h5'), 'no such file'),
    (('--network', 'sepconv_residual', '--backbone-weights', 'random'),
     "network 'sepconv_residual' has no pretrained backbone"),
    (('--serving-latency-ceiling-ms', '0'), '--serving-latency-ceiling-ms'),
    (('--tflite-weights', 'int8'), '--tflite-weights'),
    (('--min-tflite-agreement', '1.5'), '--min-tflite-agreement'),
    (('--no-such-flag',), 'unrecognized arguments'),
])
def test_bad_flag_values(capsys, flags, expected):
  assert_one_line_error(run_main(capsys, *flags), expected)


def test_the_old_name_of_network_still_works_and_says_its_new_name(capsys):
  """`--model` chose the network before `--network` did (beside `--model-name`, the serving
  name): it still chooses it, and says so once."""
  completed = run_main(capsys, '--model', 'resnet9000')
  assert completed.returncode == 2
  assert completed.stderr.splitlines() == [
      'local_runner.py: --model is the old name of --network; it still works',
      'local_runner.py: error: argument --network: unknown network \'resnet9000\' (choose from '
      + ', '.join(sorted(networks.RECIPES)) + ')']


def test_a_bad_flag_through_the_command(python, project_root):
  assert_one_line_error(run_cli(python, project_root, '--epochs', '0'), '--epochs')


def test_a_backbone_without_weights_says_where_to_put_them(python, project_root, tmp_path):
  """Nothing is downloaded: with an empty Keras cache and no --backbone-weights, one line."""
  completed = run_cli(python, project_root, '--network', 'efficientnet_b0',
                      '--output-dir', str(tmp_path / 'out'),
                      env={**os.environ, 'HOME': str(tmp_path)})
  assert_one_line_error(completed, 'no pretrained weights for efficientnet_b0: put '
                        f'efficientnetb0_notop.h5 in {tmp_path}/.keras/models')
  assert not (tmp_path / 'out').exists()


def test_too_many_corrupt_images_stop_the_run_naming_them(python, project_root, tmp_path):
  from data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate_dataset(str(tmp_path / 'images'), images_per_class=4, image_size=32)
  for number in (1, 2):
    (tmp_path / 'images' / 'benign' / f'scan ({number}).png').write_text('not an image')
  completed = run_cli(python, project_root, '--data-root', str(tmp_path / 'images'),
                      '--output-dir', str(tmp_path / 'out'), '--max-unreadable-fraction', '0.1')
  assert completed.returncode == 1
  assert 'Traceback' not in completed.stderr
  last_line = completed.stderr.strip().splitlines()[-1]
  assert last_line.startswith('local_runner.py: pipeline failed: UnusableInputError: 2 of 14')
  assert 'benign/scan (1).png' in last_line and 'benign/scan (2).png' in last_line
  # The failed run still gets its report, showing how far it got.
  assert 'no run report' not in completed.stderr
  report = (tmp_path / 'out' / 'report' / 'index.html').read_text()
  assert '<td>ImageExampleGen</td><td>failed</td>' in report


def test_label_conflicts_stop_the_run_under_the_fail_policy(python, project_root, tmp_path):
  from data import synthetic  # pylint: disable=g-import-not-at-top
  images = tmp_path / 'images'
  synthetic.generate_dataset(str(images), images_per_class=4, image_size=64)
  synthetic.save_near_duplicate(str(images / 'benign' / 'benign (2).png'),
                                str(images / 'malignant' / 'malignant (5)'), 'exact')
  completed = run_cli(python, project_root, '--data-root', str(images),
                      '--output-dir', str(tmp_path / 'out'), '--label-conflicts', 'fail')
  assert completed.returncode == 1
  assert 'Traceback' not in completed.stderr
  last_line = completed.stderr.strip().splitlines()[-1]
  assert last_line.startswith('local_runner.py: pipeline failed: DataAnomaliesError: data quality')
  assert 'benign/benign (2).png (benign), malignant/malignant (5).png (malignant)' in last_line
  assert 'no run report' not in completed.stderr
  report = (tmp_path / 'out' / 'report' / 'index.html').read_text()
  assert 'Data validation gate: <span class="fail">stopped the run</span>' in report
  assert '1 label conflicts (2 images, policy fail)' in report


def test_output_dir_that_cannot_be_created(capsys, tmp_path):
  from data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate_dataset(str(tmp_path / 'images'), images_per_class=1, image_size=32)
  (tmp_path / 'a_file').write_text('in the way')
  completed = run_main(capsys, '--data-root', str(tmp_path / 'images'),
                       '--output-dir', str(tmp_path / 'a_file' / 'out'))
  assert_one_line_error(completed, 'cannot create output dir')
