"""Labels from a manifest and patients as keyed hashes: a CSV names each image's label (and
patient), its bad rows are named by the input policy like bad files, a file that cannot be a
manifest is refused in one line, and a patient ID never appears as given."""

import os
import re
import subprocess

import pytest
from PIL import Image

from components import contracts
from components.image_example_gen import component
from data import synthetic
from inputs import identifiers, image_files, manifest

KEY = 'an identifier key of more than sixteen characters'


def write_csv(path, text):
  path.write_text(text, encoding='utf-8')
  return str(path)


def test_a_manifest_is_read_whatever_the_spreadsheet_wrote(tmp_path):
  # Semicolons, a byte-order mark, Windows separators and line ends, labels in any case.
  path = tmp_path / 'labels.csv'
  path.write_bytes('\ufeffPath;Label;Patient\r\nscans\\a.png;Benign;P1\r\n./b.png;MALIGNANT;\r\n'
                   '\r\n'.encode('utf-8'))
  labels = manifest.read_manifest(str(path))
  assert labels.rows == {'scans/a.png': manifest.Row(2, 'benign', 'P1', None),
                         'b.png': manifest.Row(3, 'malignant', None, None)}
  assert labels.refused == {} and labels.has_patients


def test_bad_rows_are_named_with_their_line(tmp_path):
  labels = manifest.read_manifest(write_csv(tmp_path / 'labels.csv', (
      'file,label,study\n'
      'a.png,benign,S1\n'
      'b.png,cancer,S1\n'
      'c.png,,\n'
      'a.png,malignant,S2\n'
      '/abs/d.png,normal,\n'
      '../e.png,normal,\n'
      'f.png,normal,S3\n')))
  assert labels.rows == {'f.png': manifest.Row(8, 'normal', None, 'S3')}
  assert labels.refused == {
      'a.png': 'on 2 rows of labels.csv (rows 2, 5): which label holds is a guess',
      'b.png': "row 3 of labels.csv: unknown label 'cancer' (known: benign, malignant, normal)",
      'c.png': 'row 4 of labels.csv: no label',
      'labels.csv:6': "row 6 of labels.csv: absolute path '/abs/d.png' (paths are relative to "
                      'the data root)',
      'labels.csv:7': "row 7 of labels.csv: path '../e.png' climbs out of the data root"}
  assert manifest.patient_of(labels.rows['f.png']) == 'study:S3'


@pytest.mark.parametrize('text, message', [
    ('', 'is empty'),
    ('name,diagnosis\nx.png,benign\n', 'has no file or label column in its header row (found: '
                                       'name, diagnosis;'),
    ('file,label\n', 'has a header row and no rows'),
])
def test_a_file_that_cannot_be_a_manifest_is_refused_in_one_line(tmp_path, text, message):
  with pytest.raises(manifest.ManifestError, match=re.escape(message)):
    manifest.read_manifest(write_csv(tmp_path / 'labels.csv', text))
  (tmp_path / 'latin1.csv').write_bytes('file,label\nn\xe9.png,benign\n'.encode('latin-1'))
  with pytest.raises(manifest.ManifestError, match='is not UTF-8 text'):
    manifest.read_manifest(str(tmp_path / 'latin1.csv'))


def test_a_pseudonym_is_keyed_stable_and_not_the_identifier(monkeypatch, tmp_path):
  first = identifiers.pseudonym('PID-93C7A1', KEY)
  assert first == identifiers.pseudonym(' PID-93C7A1 ', KEY)
  assert first != identifiers.pseudonym('PID-93C7A1', KEY + 'x')
  assert first.startswith('patient-') and '93C7A1' not in first
  monkeypatch.delenv(identifiers.KEY_VARIABLE, raising=False)
  assert identifiers.read_key(None) is None
  monkeypatch.setenv(identifiers.KEY_VARIABLE, KEY)
  assert identifiers.read_key(None) == KEY
  (tmp_path / 'key').write_text('short\n')
  with pytest.raises(ValueError, match='holds a key of 5 characters; use at least 16'):
    identifiers.read_key(str(tmp_path / 'key'))


def labelled_root(tmp_path):
  """Synthetic PNGs moved out of class folders into `scans/`, a manifest beside them with every
  kind of bad row, a file on no row and a mask beside its image."""
  synthetic.generate_dataset(str(tmp_path / 'folders'), images_per_class=6, image_size=48, seed=2)
  root = tmp_path / 'root'
  (root / 'scans').mkdir(parents=True)
  rows = ['file,label,patient']
  for label in ('benign', 'malignant', 'normal'):
    for index in range(6):
      name = f'{label}-{index}.png'
      os.rename(tmp_path / 'folders' / label / f'{label} ({index + 1}).png', root / 'scans' / name)
      rows.append(f'scans/{name},{label},P{index % 3}')
  mask = tmp_path / 'folders' / 'benign' / 'benign (1)_mask.png'
  if mask.exists():
    os.rename(mask, root / 'scans' / 'benign-0_mask.png')
  rows[-1] = 'scans/normal-5.png,tumour,P2'  # an unknown label
  rows.append('scans/benign-1.png,benign,P1')  # a path on two rows
  rows.append('scans/gone.png,normal,P0')  # no such file
  Image.new('L', (48, 48)).save(root / 'scans' / 'extra.png')  # on no row
  return root, write_csv(root / 'labels.csv', '\n'.join(rows) + '\n')


def test_image_example_gen_names_every_bad_row_and_keeps_patients_apart(tmp_path, monkeypatch):
  root, labels = labelled_root(tmp_path)
  monkeypatch.setenv(identifiers.KEY_VARIABLE, KEY)
  examples = component.run_executor_directly(str(root), str(tmp_path / 'out'), labels_file=labels,
                                             max_unreadable_fraction=0.5)
  skipped = {row['file']: row['reason'] for row in
             examples.get_json_value_custom_property(contracts.SKIPPED_FILES_PROPERTY)}
  assert skipped == {
      'scans/benign-1.png': 'on 2 rows of labels.csv (rows 3, 20): which label holds is a guess',
      'scans/normal-5.png': "row 19 of labels.csv: unknown label 'tumour' (known: benign, "
                            'malignant, normal)',
      'scans/gone.png': 'row 21 of labels.csv names a file that is not an image under the data '
                        'root',
      'scans/extra.png': 'on no row of labels.csv'}
  assert examples.get_json_value_custom_property(contracts.IGNORED_FILES_PROPERTY) == [
      {'file': 'labels.csv', 'reason': 'the labels file'}]
  counts = examples.get_json_value_custom_property(contracts.CLASS_COUNTS_PROPERTY)
  assert sum(count for split in counts.values() for count in split.values()) == 16
  assert examples.get_int_custom_property(contracts.PATIENT_COUNT_PROPERTY) == 3
  assert examples.get_int_custom_property(contracts.IMAGES_WITH_PATIENT_PROPERTY) == 16
  with open(tmp_path / 'out' / contracts.PATIENTS_FILE, encoding='utf-8') as handle:
    stored = handle.read()
  assert 'patient-' in stored and 'P1' not in stored.replace('patient-', '')


def test_patients_without_a_key_are_refused(tmp_path, monkeypatch):
  root, labels = labelled_root(tmp_path)
  monkeypatch.delenv(identifiers.KEY_VARIABLE, raising=False)
  with pytest.raises(identifiers.MissingKey, match='the rows of labels.csv name patients, and '
                     'no identifier key was given'):
    image_files.list_labelled_tree(str(root), manifest.read_manifest(labels), None)


def test_the_runner_refuses_a_bad_manifest_or_a_missing_key_in_one_line(
    python, project_root, tmp_path):
  root, labels = labelled_root(tmp_path)
  environment = {name: value for name, value in os.environ.items()
                 if name != identifiers.KEY_VARIABLE}

  def run(*flags):
    completed = subprocess.run(
        [python, 'local_runner.py', '--data-root', str(root), '--output-dir',
         str(tmp_path / 'out'), *flags], cwd=project_root, capture_output=True, text=True,
        timeout=300, check=False, env=environment)
    return completed.returncode, completed.stderr.strip().splitlines()

  code, lines = run('--labels', labels)
  assert code == 2 and lines == [
      'local_runner.py: error: the rows of labels.csv name patients, and no identifier key was '
      f'given: put a secret key in ${identifiers.KEY_VARIABLE} or a file given as '
      "--identifier-key-file, so that a patient's images stay on one side of the split without "
      'the ID being stored']
  bad = write_csv(tmp_path / 'bad.csv', 'name,diagnosis\nx.png,benign\n')
  code, lines = run('--labels', bad)
  assert code == 2 and len(lines) == 1 and 'has no file or label column' in lines[0]
  assert not (tmp_path / 'out').exists()
