"""The whole pipeline on a hospital's export, through `local_runner.py`: DICOM files without an
extension in patient/study folders, mixed transfer syntaxes, cine clips inside the scanner's
interface (every frame an example, `--clip-frames all`), labels from a manifest instead of class
folders, and every patient identifier planted in every header (data/dicom.write_hospital_export).
The run trains, is evaluated and pushes with no patient and no clip on both sides of the split,
says how many patients there were, and no
identifier reaches any file under the output directory, ML Metadata or a log line, neither from
the training run nor from batch inference over the same export.
"""

import collections
import gzip
import json
import os
import pathlib
import subprocess

import conftest
import pytest

from components import artifact_types, contracts
from components.data_quality import report
from data import dicom, synthetic
from runs import metadata_store

PATIENTS = 9
CLIPS = 9  # every fifth of 45 files: 3 frames each, every frame an example (--clip-frames all)


def example_count(written):
  return len(written) + 2 * CLIPS


@pytest.fixture(scope='module')
def hospital_run(tmp_path_factory, python, project_root, run_pipeline):
  base = tmp_path_factory.mktemp('hospital')
  synthetic.generate_dataset(str(base / 'png'), images_per_class=15, image_size=64, seed=5)
  export = base / 'export'
  written = dicom.write_hospital_export(str(export), str(base / 'png'), patients=PATIENTS)
  key_file = base / 'identifier.key'
  key_file.write_text('0123456789abcdef0123456789abcdef\n')
  output_dir = base / 'output'
  # An ensemble of two, as by default: its members hold out one another's folds of patients.
  training = run_pipeline(python, project_root, export, output_dir, '--min-accuracy', '0',
                          '--ensemble-members', '2', '--clip-frames', 'all',
                          '--labels', str(export / dicom.LABELS_FILE),
                          '--identifier-key-file', str(key_file), *conftest.SMALL_NETWORK)
  inference = subprocess.run(
      [python, 'local_runner.py', '--output-dir', str(output_dir), '--infer-dir', str(export)],
      cwd=project_root, capture_output=True, text=True, timeout=900, check=False)
  assert inference.returncode == 0, inference.stdout[-3000:] + inference.stderr[-3000:]
  return {'export': export, 'written': written, 'output_dir': output_dir,
          'logs': [training.stdout, training.stderr, inference.stdout, inference.stderr],
          'store': metadata_store.open_store(str(output_dir / 'metadata.sqlite'))}


def artifact_of(store, type_name):
  """The training run's one artifact of the type (batch inference makes Examples of its own,
  with no class counts)."""
  [artifact] = [artifact for artifact in store.get_artifacts_by_type(type_name)
                if type_name != 'Examples' or contracts.CLASS_COUNTS_PROPERTY in
                artifact.custom_properties]
  return artifact


def test_no_patient_is_on_both_sides_of_the_split_and_the_model_is_pushed(hospital_run):
  store, written = hospital_run['store'], hospital_run['written']
  examples = artifact_of(store, 'Examples')
  uris = {split: os.path.join(examples.uri, f'Split-{split}')
          for split in (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT, contracts.EXCLUDED_SPLIT)}
  rows = report.read_image_rows(uris)
  file_of = lambda row: row.file.split('#frame')[0]
  assert {file_of(row) for row in rows} == set(written)  # every file
  assert len(rows) == example_count(written)  # a clip's every frame
  assert all(row.label == written[file_of(row)][0] for row in rows)  # labels from the manifest
  clip_groups = collections.defaultdict(set)
  for row in rows:
    if '#frame' in row.file:
      clip_groups[file_of(row)].add((row.split, row.group))
  assert len(clip_groups) == CLIPS and all(len(found) == 1 for found in clip_groups.values())
  sides = collections.defaultdict(set)
  for row in rows:
    sides[written[file_of(row)][1]].add(row.split)
  assert len(sides) == PATIENTS
  assert all(len(splits) == 1 for splits in sides.values()), dict(sides)
  assert {frozenset(splits) for splits in sides.values()} == {
      frozenset({contracts.TRAIN_SPLIT}), frozenset({contracts.EVAL_SPLIT})}
  assert len(os.listdir(hospital_run['output_dir'] / 'serving' / 'breast_ultrasound')) == 1


def test_the_data_quality_report_and_the_model_card_count_the_patients(hospital_run):
  store = hospital_run['store']
  quality = artifact_of(store, artifact_types.DataQualityReport.TYPE_NAME)
  assert metadata_store.artifact_property(quality, 'patient_count') == PATIENTS
  assert metadata_store.artifact_property(quality, 'images_with_patient') == example_count(
      hospital_run['written'])
  card = json.loads((pathlib.Path(artifact_of(store, artifact_types.ModelCard.TYPE_NAME).uri)
                     / contracts.MODEL_CARD_JSON_FILE).read_text())
  assert card['data']['quality']['patient_count'] == PATIENTS
  assert not [caveat for caveat in card['caveats'] if 'patient' in caveat.lower()]
  html = (pathlib.Path(artifact_of(store, artifact_types.ModelCard.TYPE_NAME).uri)
          / contracts.MODEL_CARD_HTML_FILE).read_text()
  assert f'{example_count(hospital_run["written"])} images of {PATIENTS} patients' in html


def identifiers_in(data: bytes):
  return [token for token in dicom.identifier_tokens() if token.encode() in data]


def test_no_identifier_reaches_a_file_ml_metadata_or_a_log_line(hospital_run):
  export = hospital_run['export']
  assert identifiers_in((export / next(iter(hospital_run['written']))).read_bytes())  # planted
  found = {}
  for folder, _, names in os.walk(hospital_run['output_dir']):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as handle:
        data = handle.read()
      if name.endswith('.gz'):
        data = gzip.decompress(data)
      if identifiers_in(data):
        found[path] = identifiers_in(data)
  assert not found
  store = hospital_run['store']
  properties = [
      {**dict(item.properties), **dict(item.custom_properties), 'uri': getattr(item, 'uri', ''),
       'name': item.name}
      for item in [*store.get_artifacts(), *store.get_executions(), *store.get_contexts()]]
  assert len(properties) > 30
  assert not identifiers_in(str(properties).encode())
  assert not [log for log in hospital_run['logs'] if identifiers_in(log.encode())]
  # Batch inference classified the export's images too (what the search above covered).
  predictions = [path for path in hospital_run['output_dir'].rglob(contracts.PREDICTIONS_CSV_FILE)]
  assert predictions
  assert sum(1 for line in predictions[0].read_text().splitlines()[1:] if line) == len(
      hospital_run['written'])
