"""Faults, on one output directory run through in order (the `fault_runs` fixture):

A. `kill -9` while Transform runs.
B. `kill -9` while the Trainer runs; meanwhile a second `local_runner.py` on the same output
   directory refuses at once, naming B.
C. A complete run: a good model (accuracy 1.0 on a separable set), blessed and pushed; a server
   starts on the serving directory.
D. A worse model (one epoch), every absolute gate passable: refused by the comparison with the
   good one alone, so neither blessed nor pushed; the server keeps the good one.
E. `kill -9` during the push: the copy is held on a named pipe planted in the model, so the kill
   lands while the version is half copied.
F. The same command again: it completes, and the new version takes over in the server.
G. A push onto a full filesystem (a tmpfs mounted over the serving directory, where the machine
   allows mounts): one line, exit code 1, the versions already there untouched.
"""

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import conftest
from evaluation import blessing
from orchestration import output_lock
from runs import metadata_store

SEED_RECIPE = ('--network', 'seed', '--image-size', '48', '--min-malignant-recall', '0',
               '--max-calibration-error', '1', '--tflite-weights', 'none')
MODEL_NAME = 'breast_ultrasound'


class Run:
  """`local_runner.py` in a subprocess, its output read line by line."""

  def __init__(self, python, project_root, data_root, output_dir, *flags):
    self.process = subprocess.Popen(
        [python, 'local_runner.py', '--data-root', str(data_root), '--output-dir',
         str(output_dir), *SEED_RECIPE, *flags],
        cwd=project_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.lines = []

  def wait_for(self, text: str) -> None:
    for line in self.process.stdout:
      self.lines.append(line)
      if text in line:
        return
    raise AssertionError(f'{text!r} never came:\n' + ''.join(self.lines[-40:]))

  def kill(self) -> None:
    self.process.kill()  # SIGKILL: no handler, no cleanup
    self.process.wait(timeout=60)

  def finish(self) -> int:
    self.lines.extend(self.process.stdout)
    return self.process.wait(timeout=900)

  @property
  def text(self) -> str:
    return ''.join(self.lines)


def versions(serving_dir):
  return sorted(name for name in os.listdir(serving_dir) if name.isdigit())


def loads(version_dir) -> bool:
  try:
    tf.saved_model.load(str(version_dir))
    return True
  except Exception:  # pylint: disable=broad-except
    return False


def status_and_scores(server, image_bytes):
  """(the server's version status, its probabilities for one image)."""
  with urllib.request.urlopen(server.model_url, timeout=60) as response:
    status = json.load(response)['model_version_status']
  body = json.dumps({'instances': [{'b64': base64.b64encode(image_bytes).decode()}]}).encode()
  with urllib.request.urlopen(urllib.request.Request(server.model_url + ':predict', data=body),
                              timeout=60) as response:
    scores = json.load(response)['predictions'][0]['probabilities']
  return status, scores


def model_of_run(metadata_path, run_index) -> str:
  store = metadata_store.open_store(metadata_path)
  context = metadata_store.run_contexts(store)[run_index]
  trainer = [run for run in metadata_store.component_runs(store, context.id)
             if run.node_id == 'Trainer'][0]
  return [artifact.uri for _, artifact in metadata_store.keyed_artifacts(
      store, trainer.execution_id, metadata_store._OUTPUT_EVENTS)  # pylint: disable=protected-access
          if os.path.isdir(os.path.join(artifact.uri, 'Format-Serving'))][0]


def mount_full_tmpfs(folder, spare_bytes: int) -> bool:
  """Moves `folder`'s content onto a tmpfs just big enough for it, mounted at `folder`."""
  # What the files take on a filesystem of 4 KiB blocks, and a block per folder.
  used = sum(os.stat(os.path.join(directory, name)).st_blocks * 512 + 4096
             for directory, _, files in os.walk(folder) for name in files + ['.'])
  keep = str(folder) + '.before_mount'
  shutil.copytree(folder, keep)
  size_kib = (used + spare_bytes) // 1024 + 64
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size_kib}k', 'tmpfs',
                            str(folder)], capture_output=True, check=False).returncode == 0
  if mounted:
    for name in os.listdir(keep):
      shutil.copytree(os.path.join(keep, name), os.path.join(folder, name))
  return mounted


@pytest.fixture(scope='module')
def fault_runs(tmp_path_factory, python, project_root, separable_data_root, start_module_server):
  output_dir = tmp_path_factory.mktemp('faults') / 'output'
  serving_dir = output_dir / 'serving' / MODEL_NAME
  facts = {'output_dir': output_dir, 'serving_dir': serving_dir,
           'metadata_path': str(output_dir / 'metadata.sqlite')}

  def run(*flags):
    return Run(python, project_root, separable_data_root, output_dir, *flags)

  # A: killed in Transform.
  first = run()
  first.wait_for('] Transform ...')
  time.sleep(2)
  first.kill()

  # B: killed in the Trainer; a second run meanwhile refuses.
  second = run()
  second.wait_for('] ImageExampleGen ...')
  started = time.time()
  competitor = subprocess.run(
      [python, 'local_runner.py', '--data-root', str(separable_data_root), '--output-dir',
       str(output_dir)], cwd=project_root, capture_output=True, text=True, timeout=300,
      check=False)
  facts['competitor'] = competitor
  facts['competitor_seconds'] = time.time() - started
  facts['second_pid'] = second.process.pid
  second.wait_for('] Trainer ...')
  time.sleep(3)
  second.kill()

  # C: complete; the good model is pushed, and served.
  complete = run()
  assert complete.finish() == 0, complete.text[-3000:]
  facts['good_stdout'] = complete.text
  facts['good_versions'] = versions(serving_dir)
  server = start_module_server(str(serving_dir), '--poll-seconds', '0.2')
  image = (separable_data_root / 'malignant' / 'malignant (2).png').read_bytes()
  facts['served_after_good'] = status_and_scores(server, image)

  # D: a worse model, with every absolute gate passable.
  worse = run('--epochs', '1', '--min-accuracy', '0')
  assert worse.finish() == 0, worse.text[-3000:]
  facts['worse_stdout'] = worse.text
  facts['versions_after_worse'] = versions(serving_dir)
  time.sleep(1)  # several polls
  facts['served_after_worse'] = status_and_scores(server, image)

  # E: killed during the push, the copy held by a named pipe in the model being pushed.
  blocking_pipe = os.path.join(model_of_run(facts['metadata_path'], 2), 'Format-Serving',
                               'zz_held_copy')
  os.mkfifo(blocking_pipe)
  pushing = run('--min-accuracy', '0.5')
  pushing.wait_for('] Pusher ...')
  deadline = time.time() + 120
  while not [name for name in os.listdir(serving_dir) if name.endswith('.incomplete')]:
    assert time.time() < deadline and pushing.process.poll() is None, pushing.text[-3000:]
    time.sleep(0.05)
  facts['during_push'] = sorted(os.listdir(serving_dir))
  facts['complete_during_push'] = all(loads(serving_dir / name)
                                      for name in versions(serving_dir))
  pushing.kill()
  os.remove(blocking_pipe)
  facts['after_killed_push'] = sorted(os.listdir(serving_dir))
  facts['served_after_killed_push'] = status_and_scores(server, image)

  # F: the same command again.
  again = run('--min-accuracy', '0.5')
  assert again.finish() == 0, again.text[-3000:]
  facts['after_rerun'] = sorted(os.listdir(serving_dir))
  deadline = time.time() + 60
  while status_and_scores(server, image)[0][0]['version'] != versions(serving_dir)[-1]:
    assert time.time() < deadline, 'the new version never took over'
    time.sleep(0.2)
  facts['served_after_rerun'] = status_and_scores(server, image)

  # G: a push onto a full filesystem.
  facts['full_disk'] = None
  serving_parent = output_dir / 'serving'
  if mount_full_tmpfs(serving_parent, spare_bytes=64 * 1024):
    try:
      before = {name: loads(serving_dir / name) for name in versions(serving_dir)}
      full = run('--min-accuracy', '0.4')
      code = full.finish()
      facts['full_disk'] = {'code': code, 'text': full.text, 'before': before,
                            'after': {name: loads(serving_dir / name)
                                      for name in versions(serving_dir)}}
    finally:
      subprocess.run(['umount', str(serving_parent)], check=False)
  return facts


def runs_from_inspector(python, project_root, output_dir):
  completed = subprocess.run(
      [python, '-m', 'runs.inspect', '--output-dir', str(output_dir), '--json', 'runs'],
      cwd=project_root, capture_output=True, text=True, timeout=300, check=True)
  return [{component['component']: component['status'] for component in run['components']}
          for run in json.loads(completed.stdout)]


def test_killed_runs_are_shown_as_interrupted_and_a_rerun_completes(fault_runs, python,
                                                                   project_root):
  runs = runs_from_inspector(python, project_root, fault_runs['output_dir'])
  assert len(runs) == (7 if fault_runs['full_disk'] else 6)  # the competitor started no run
  assert runs[0]['Transform'] == 'interrupted' and 'Trainer' not in runs[0]
  assert runs[1]['Transform'] == 'complete' and runs[1]['Trainer'] == 'interrupted'
  assert set(runs[2].values()) <= {'complete', 'cached'} and runs[2]['Trainer'] == 'complete'
  assert runs[2]['Transform'] == 'cached'  # B's Transform finished before B was killed
  assert runs[4]['Evaluator'] == 'complete' and runs[4]['Pusher'] == 'interrupted'
  assert runs[5]['Pusher'] == 'complete' and runs[5]['Evaluator'] == 'cached'
  assert output_lock.running_holder(str(fault_runs['output_dir'])) is None


def test_a_second_run_on_a_busy_output_dir_refuses_at_once_naming_the_first(fault_runs):
  competitor = fault_runs['competitor']
  assert competitor.returncode == 3
  lines = competitor.stderr.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in competitor.stderr
  assert lines[0].startswith(f'local_runner.py: error: output dir {fault_runs["output_dir"]} is '
                             f'in use by run pid {fault_runs["second_pid"]}')
  assert '--wait-for-output-dir' in lines[0]
  assert fault_runs['competitor_seconds'] < 60  # it did not wait for the run


def test_a_worse_model_is_neither_blessed_nor_pushed_and_the_good_one_keeps_serving(fault_runs):
  assert len(fault_runs['good_versions']) == 1
  assert 'sparse_categorical_accuracy              1.0000' in fault_runs['good_stdout']
  difference = float(fault_runs['worse_stdout'].split('sparse_categorical_accuracy_diff')[1]
                     .split()[0])
  assert difference < 0
  assert 'blessed: no' in fault_runs['worse_stdout']
  # Refused by the paired comparison with the good model alone.
  store = metadata_store.open_store(fault_runs['metadata_path'])
  worse_run = metadata_store.component_runs(store, metadata_store.run_contexts(store)[3].id)
  evaluation = [artifact for _, type_name, artifact in metadata_store.run_outputs(
      store, worse_run) if type_name == 'ModelEvaluation'][0]
  assert blessing.failed_metrics(evaluation.uri) == ['accuracy_versus_baseline_lower_diff']
  assert ("FAILED  accuracy against the baseline model's on the same eval images"
          in fault_runs['worse_stdout'])
  assert 'pushed to: nothing pushed' in fault_runs['worse_stdout']
  assert fault_runs['versions_after_worse'] == fault_runs['good_versions']
  good_status, good_scores = fault_runs['served_after_good']
  status, scores = fault_runs['served_after_worse']
  assert [entry['version'] for entry in status] == fault_runs['good_versions']
  assert scores == pytest.approx(good_scores, abs=1e-6)
  assert np.argmax(good_scores) == 1  # the good model calls the malignant image malignant


def test_a_killed_push_never_leaves_a_partial_version(fault_runs):
  good = fault_runs['good_versions']
  during = fault_runs['during_push']
  staging = [name for name in during if name.endswith('.incomplete')]
  assert len(staging) == 1 and staging[0].startswith('.')
  assert [name for name in during if not name.startswith('.')] == good
  assert fault_runs['complete_during_push']
  assert [name for name in fault_runs['after_killed_push'] if not name.startswith('.')] == good
  status, _ = fault_runs['served_after_killed_push']
  assert [entry['version'] for entry in status] == good
  # The rerun removed the leftover staging folder and pushed a whole new version.
  after = fault_runs['after_rerun']
  assert not [name for name in after if name.startswith('.')]
  assert len(after) == 2 and after[0] == good[0] and int(after[1]) > int(good[0])
  assert loads(fault_runs['serving_dir'] / after[1])
  status, _ = fault_runs['served_after_rerun']
  assert status[0]['version'] == after[1] and status[0]['state'] == 'AVAILABLE'


def test_a_full_disk_ends_the_run_with_one_line_and_harms_nothing_pushed(fault_runs):
  full = fault_runs['full_disk']
  if full is None:
    conftest.require_service('mounting a tmpfs (root, as in CI) to make a full disk',
                             'run the tests as root')
  assert full['code'] == 1
  last = full['text'].strip().splitlines()[-1]
  assert last.startswith('local_runner.py: error: no space left on the device writing '), last
  assert 'versions pushed before are untouched' in last
  assert full['after'] == full['before'] and all(full['before'].values())


def test_a_read_only_output_dir_ends_with_one_line(python, project_root, separable_data_root,
                                                   tmp_path):
  output_dir = tmp_path / 'read_only'
  output_dir.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs',
                            str(output_dir)], capture_output=True, check=False).returncode == 0
  if not mounted:
    if os.geteuid() == 0:  # root ignores file permissions: only a read-only mount shows it
      conftest.require_service('mounting a tmpfs read-only', 'allow root to mount')
    output_dir.chmod(0o555)
  try:
    completed = subprocess.run(
        [python, 'local_runner.py', '--data-root', str(separable_data_root), '--output-dir',
         str(output_dir)], cwd=project_root, capture_output=True, text=True, timeout=300,
        check=False)
  finally:
    if mounted:
      subprocess.run(['umount', str(output_dir)], check=False)
  assert completed.returncode == 1
  reason = 'Read-only file system' if mounted else 'Permission denied'
  assert completed.stderr.strip().splitlines() == [
      f'local_runner.py: error: cannot write to {output_dir}/.run.lock: {reason}']


def test_waiting_for_a_busy_output_dir(tmp_path, python):
  holder = subprocess.Popen(
      [python, '-c', 'import sys, time; from orchestration import output_lock\n'
       'with output_lock.exclusive_output_dir(sys.argv[1]):\n'
       '  print("holding", flush=True); time.sleep(3)', str(tmp_path)],
      stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert holder.stdout.readline().strip() == 'holding'
  assert output_lock.running_holder(str(tmp_path))['pid'] == holder.pid
  with pytest.raises(output_lock.OutputDirectoryBusy, match=f'run pid {holder.pid} on '):
    with output_lock.exclusive_output_dir(str(tmp_path)):
      pass
  started = time.time()
  with output_lock.exclusive_output_dir(str(tmp_path), wait=True):
    waited = time.time() - started
  assert waited > 1 and holder.wait(timeout=30) == 0
  assert output_lock.running_holder(str(tmp_path)) is None
