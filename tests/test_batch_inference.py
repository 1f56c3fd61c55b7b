"""Batch inference (`local_runner.py --infer-dir`, pipeline/inference_pipeline.py): TFX's
BulkInferrer over a folder of unlabelled images with the model a server would serve, recorded in
ML Metadata with lineage to that model, exported as CSV and JSON lines, listed by the inspector.
The run is the last of the shared `pipeline_runs`."""

import csv
import gzip
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import local_runner
from conftest import BETWEEN_IMAGE, DICOM_IMAGE
from data import dicom
from inputs import image_files
from models import features
from runs import inference, metadata_store

# The three classes' images and the blend decided malignant though benign is more probable.
NESTED = sorted([f'nested/{name}.png' for name in features.LABEL_NAMES]
                + [f'nested/{BETWEEN_IMAGE}', f'nested/{DICOM_IMAGE}'])


@pytest.fixture(scope='module')
def inference_run(pipeline_runs):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  [run] = inference.inference_runs(store)
  return store, run


def test_the_newest_pushed_model_classifies_the_folder(pipeline_runs, inference_run):
  store, run = inference_run
  newest_version = sorted(os.listdir(pipeline_runs['output_dir'] / 'serving' /
                                     'breast_ultrasound'))[-1]
  assert run['state'] == 'complete' and run['model_version'] == newest_version
  assert run['input'] == str(pipeline_runs['infer_dir'])
  assert run['images'] == 5
  assert sorted(row['file'] for row in run['skipped']) == [
      'broken.png', 'notes.txt', 'scan (4)_mask.png']
  stdout = pipeline_runs['inference_stdout']
  assert f'pushed as version {newest_version}' in stdout and 'images classified: 5; skipped 3' in (
      stdout)
  assert 'scan (4)_mask.png: a lesion mask (masks are not classified)' in stdout
  # Inference runs are not training runs: the summary, report and `inspect runs` leave them out.
  assert len(metadata_store.run_contexts(store)) == 6


def test_predictions_match_the_pushed_model_in_csv_and_json_lines(pipeline_runs, inference_run):
  _, run = inference_run
  with open(run['predictions'], newline='') as handle:
    table = list(csv.DictReader(handle))
  with open(os.path.join(os.path.dirname(run['predictions']), 'predictions.jsonl')) as handle:
    lines = [json.loads(line) for line in handle]
  assert [row['path'] for row in table] == [line['path'] for line in lines] == NESTED
  version_dir = os.path.join(pipeline_runs['output_dir'], 'serving', 'breast_ultrasound',
                             run['model_version'])
  # What the model is sent for each file: the DICOM file's picture as PNG, the others as they are.
  encoded = [image_files.served_bytes((pipeline_runs['infer_dir'] / path).read_bytes())
             for path in NESTED]
  served = tf.saved_model.load(version_dir).signatures['serving_default'](
      image_bytes=tf.constant(encoded))
  for row, line, probabilities, decision, threshold, review, reason in zip(
      table, lines, served['probabilities'].numpy(), served['decision'].numpy(),
      served['malignant_threshold'].numpy(), served['review'].numpy(),
      served['review_reason'].numpy()):
    scores = [line['scores'][name] for name in features.LABEL_NAMES]
    np.testing.assert_allclose(scores, probabilities, atol=1e-5)
    assert [float(row[name]) for name in features.LABEL_NAMES] == scores
    # The two answers apart: the decision at the operating point, as the server gives it, and
    # the most probable class with its probability.
    assert line['decision'] == row['decision'] == decision.decode()
    most_probable = features.LABEL_NAMES[int(np.argmax(scores))]
    assert line['most_probable_class'] == row['most_probable_class'] == most_probable
    assert line['most_probable_probability'] == max(scores)
    assert float(row['most_probable_probability']) == max(scores)
    assert line['malignant_probability'] == line['scores']['malignant']
    assert line['malignant_threshold'] == pytest.approx(threshold, abs=1e-6)
    assert float(row['malignant_threshold']) == line['malignant_threshold']
    # The review flag, as the server gives it.
    assert line['review'] is bool(review) and row['review'] == str(bool(review))
    assert line['review_reason'] == row['review_reason'] == reason.decode()
    assert bool(reason) == bool(review)
  assert sum(run['decision_counts'].values()) == 5
  assert run['review_count'] == sum(line['review'] for line in lines)
  # The DICOM file is the malignant PNG's picture inside a scanner's screen: the same answer.
  by_path = {line['path']: line for line in lines}
  assert by_path[f'nested/{DICOM_IMAGE}']['scores'] == pytest.approx(
      by_path['nested/malignant.png']['scores'], abs=1e-6)
  assert by_path[f'nested/{DICOM_IMAGE}']['decision'] == by_path['nested/malignant.png']['decision']


def test_the_inference_result_leads_back_to_the_trained_model(inference_run):
  store, run = inference_run
  [result] = store.get_artifacts_by_type('InferenceResult')
  bulk_inferrer = metadata_store.producer_of(store, result.id)
  assert metadata_store.node_id_of(store, bulk_inferrer.id) == 'BulkInferrer'
  inputs = dict(metadata_store.inputs_of(store, bulk_inferrer.id))
  assert inputs['model'].id == run['model_id']
  # The Importer reused the Trainer's artifact: its producer is the Trainer.
  trainer = metadata_store.producer_of(store, inputs['model'].id)
  assert metadata_store.node_id_of(store, trainer.id) == 'Trainer'
  assert metadata_store.artifact_property(inputs['model_blessing'], 'blessed') == 1


def test_inspect_lists_inference_runs(python, project_root, pipeline_runs, inference_run):
  _, run = inference_run
  completed = subprocess.run(
      [python, '-m', 'runs.inspect', '--output-dir', str(pipeline_runs['output_dir']), '--json',
       'inferences'], cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  [listed] = json.loads(completed.stdout)
  assert listed['model_id'] == run['model_id'] and listed['images'] == 5
  assert listed['predictions'] == run['predictions']


def test_no_identifier_in_a_dicom_header_reaches_any_output(pipeline_runs, inference_run):
  """IM0001's header carries a patient's name, IDs, birth date, accession number, institution
  and station (data/dicom.py's IDENTIFIERS): none reaches a file under the output directory
  (examples, predictions, ML Metadata's database, reports, model cards) or the run's output."""
  tokens = dicom.identifier_tokens()
  planted = (pipeline_runs['infer_dir'] / 'nested' / DICOM_IMAGE).read_bytes()
  assert all(token.encode() in planted for token in tokens)
  found = []
  for folder, _, names in os.walk(pipeline_runs['output_dir']):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as handle:
        data = handle.read()
      if name.endswith('.gz'):  # the examples' TFRecords
        data = gzip.decompress(data)
      found += [(path, token) for token in tokens if token.encode() in data]
  found += [('output', token) for token in tokens if token in pipeline_runs['inference_stdout']]
  assert found == []


def run_local_runner(python, project_root, *flags):
  return subprocess.run([python, 'local_runner.py', *map(str, flags)], cwd=project_root,
                        capture_output=True, text=True, timeout=300, check=False)


def test_the_model_is_the_version_a_server_would_serve(pipeline_runs, pushed_model_dir, tmp_path):
  """--infer-dir asks the serving directory which version is served (the newest that loads, as
  the server and the prediction CLI) and ML Metadata which model was pushed as it."""
  serving_dir = tmp_path / 'serving'
  shutil.copytree(pushed_model_dir, serving_dir)
  versions = sorted(int(name) for name in os.listdir(serving_dir))
  assert len(versions) >= 2, versions  # the shared runs pushed more than one version
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  # The newest pushed version no longer loads: the one before it is served, and used.
  (serving_dir / str(versions[-1]) / 'saved_model.pb').write_bytes(b'not a SavedModel')
  lines = []
  pushed, why_not = local_runner.model_to_infer_with(store, str(serving_dir), log=lines.append)
  assert why_not is None and pushed.version == str(versions[-2])
  assert lines[0].startswith(f'skipped version {versions[-1]}, which does not load: ')
  assert lines[1:] == [f'serving version {versions[-2]}']
  [push] = [push for push in metadata_store.pushes(store) if push.version == str(versions[-2])]
  assert pushed.model_id == push.model.id and pushed.model_blessing_uri == push.model_blessing.uri
  # A version copied in by hand loads and would be served, but no push made it: refused.
  shutil.copytree(serving_dir / str(versions[-2]), serving_dir / str(versions[-1] + 1))
  pushed, why_not = local_runner.model_to_infer_with(store, str(serving_dir), log=lines.append)
  assert pushed is None and why_not == (
      f'version {versions[-1] + 1} in {serving_dir}, which a model server would serve, was not '
      'pushed by this pipeline (ML Metadata records no push of it): remove it, or push a model')


def test_inference_errors_are_one_line(python, project_root, tmp_path, pipeline_runs):
  output_dir = pipeline_runs['output_dir']
  missing = run_local_runner(python, project_root, '--output-dir', output_dir,
                         '--infer-dir', tmp_path / 'nowhere')
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines() == [
      f'local_runner.py: error: --infer-dir {tmp_path / "nowhere"} does not exist or is not a '
      'folder']
  (tmp_path / 'images').mkdir()
  (tmp_path / 'images' / 'notes.txt').write_text('not an image')
  nothing = run_local_runner(python, project_root, '--output-dir', output_dir,
                         '--infer-dir', tmp_path / 'images')
  assert nothing.returncode == 2
  assert nothing.stderr.strip().splitlines() == [
      f'local_runner.py: error: --infer-dir {tmp_path / "images"} has no PNG, JPEG, BMP or '
      'DICOM image to classify (1 other files)']
  (tmp_path / 'images' / 'scan.png').write_bytes(
      (pipeline_runs['infer_dir'] / 'nested' / 'benign.png').read_bytes())
  untrained = run_local_runner(python, project_root, '--output-dir', tmp_path / 'empty',
                           '--infer-dir', tmp_path / 'images')
  assert untrained.returncode == 2
  assert 'no ML Metadata at' in untrained.stderr and len(untrained.stderr.splitlines()) == 1


def test_the_prediction_cli_and_batch_inference_treat_a_folder_alike(python, project_root,
                                                                    pipeline_runs, inference_run):
  """One policy for which files of a folder are classified: `serving.predict DIR` skips what
  `--infer-dir DIR` skips by name (a lesion mask, a file that is not an image), with the same
  reasons, and classifies the same images; the corrupt image, an image by name, is refused by
  each on reading (inference skips it, the CLI answers it with an error line)."""
  _, run = inference_run
  infer_dir = pipeline_runs['infer_dir']
  completed = subprocess.run(
      [python, '-m', 'serving.predict', '--model-dir',
       str(pipeline_runs['output_dir'] / 'serving' / 'breast_ultrasound'), str(infer_dir)],
      cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 1, completed.stderr  # the corrupt image
  lines = [json.loads(line) for line in completed.stdout.splitlines()]
  classified = sorted(os.path.relpath(line['path'], infer_dir) for line in lines
                      if 'error' not in line)
  refused = [os.path.relpath(line['path'], infer_dir) for line in lines if 'error' in line]
  assert classified == sorted(NESTED) and refused == ['broken.png']
  by_inference = {row['file']: row['reason'] for row in run['skipped']}
  [said] = [line for line in completed.stderr.splitlines() if line.startswith('skipped ')]
  assert said == 'skipped 2 files: ' + '; '.join(
      f'{infer_dir / name}: {by_inference[name]}' for name in ('notes.txt', 'scan (4)_mask.png'))
