"""Labels from a manifest: a CSV file naming each image and its label, instead of class folders.

A hospital's labels come from pathology reports, as a spreadsheet. `--labels labels.csv` reads
one with a header row and the columns

- `file` (or `path`): the image's path relative to the data root, `/` or `\\` between folders;
- `label`: benign, malignant or normal (any case);
- `patient`, `study` (optional): who the image belongs to, so that one patient's images stay on
  one side of the split (inputs/identifiers.py keeps them only as a keyed hash).

Comma-, semicolon- or tab-separated, UTF-8 with or without the byte-order mark a spreadsheet
writes. A file that cannot be a manifest (unreadable, no `file` or `label` column, no rows) is
refused whole (`ManifestError`); a bad row is named, with its line, by the input policy like a
bad image file: an unknown label, an empty or absolute path or one that climbs out of the data
root, a path on two rows; a row naming a file that is not there and a file on no row are named
when the data root is listed (inputs/image_files.py). Light on purpose (standard library only):
the runners check a manifest before TensorFlow loads.
"""

import csv
import dataclasses
import os
from typing import Dict, List, Optional

from models import features

FILE_COLUMNS = ('file', 'path')
LABEL_COLUMN = 'label'
PATIENT_COLUMN = 'patient'
STUDY_COLUMN = 'study'
_DELIMITERS = ',;\t'


class ManifestError(ValueError):
  """The file cannot be read as a manifest; the message says why."""


@dataclasses.dataclass(frozen=True)
class Row:
  line: int
  label: str
  patient: Optional[str]  # as written: pseudonymised when the data root is listed
  study: Optional[str]


@dataclasses.dataclass
class Manifest:
  path: str
  rows: Dict[str, Row]  # by path relative to the data root
  refused: Dict[str, str]  # path → why its rows are not used
  has_patients: bool  # a patient or study column with at least one value

  @property
  def name(self) -> str:
    return os.path.basename(self.path)


def _normalised_path(written: str) -> str:
  return '/'.join(part for part in written.strip().replace('\\', '/').split('/')
                  if part not in ('', '.'))


def _path_problem(written: str) -> Optional[str]:
  path = written.strip().replace('\\', '/')
  if not path:
    return 'no file named'
  if path.startswith('/') or (len(path) > 1 and path[1] == ':'):
    return f'absolute path {written.strip()!r} (paths are relative to the data root)'
  if '..' in path.split('/'):
    return f'path {written.strip()!r} climbs out of the data root'
  return None


def _header(fields: List[str], path: str) -> Dict[str, int]:
  columns = {name.strip().lower(): index for index, name in enumerate(fields)}
  file_column = next((name for name in FILE_COLUMNS if name in columns), None)
  missing = ([] if file_column else ['file']) + ([] if LABEL_COLUMN in columns else ['label'])
  if missing:
    raise ManifestError(f'labels file {path} has no {" or ".join(missing)} column in its header '
                        f'row (found: {", ".join(name.strip() for name in fields) or "nothing"}; '
                        f'expected file, label and optionally patient, study)')
  return {'file': columns[file_column], 'label': columns[LABEL_COLUMN],
          **{name: columns[name] for name in (PATIENT_COLUMN, STUDY_COLUMN) if name in columns}}


def _cell(fields: List[str], columns: Dict[str, int], name: str) -> Optional[str]:
  index = columns.get(name)
  value = fields[index].strip() if index is not None and index < len(fields) else ''
  return value or None


def read_manifest(path: str) -> Manifest:
  """The manifest at `path`; ManifestError when it cannot be one (module docstring)."""
  try:
    with open(path, encoding='utf-8-sig', newline='') as handle:
      text = handle.read()
  except FileNotFoundError:
    raise ManifestError(f'labels file {path} does not exist') from None
  except UnicodeDecodeError as error:
    raise ManifestError(f'labels file {path} is not UTF-8 text (byte {error.start}); save it '
                        'as CSV UTF-8') from None
  except OSError as error:
    raise ManifestError(f'cannot read labels file {path}: {error.strerror}') from None
  first_line = text.split('\n', 1)[0]
  try:
    dialect = csv.Sniffer().sniff(first_line, delimiters=_DELIMITERS)
  except csv.Error:
    dialect = csv.excel
  records = list(csv.reader(text.splitlines(), dialect))
  if not records or not any(field.strip() for field in records[0]):
    raise ManifestError(f'labels file {path} is empty (expected a header row: file,label)')
  columns = _header(records[0], path)
  rows: Dict[str, Row] = {}
  refused: Dict[str, str] = {}
  lines_of: Dict[str, List[int]] = {}
  name = os.path.basename(path)
  for line, fields in enumerate(records[1:], start=2):
    if not any(field.strip() for field in fields):
      continue
    written = fields[columns['file']] if columns['file'] < len(fields) else ''
    problem = _path_problem(written)
    if problem:
      refused[f'{name}:{line}'] = f'row {line} of {name}: {problem}'
      continue
    file = _normalised_path(written)
    lines_of.setdefault(file, []).append(line)
    label = (_cell(fields, columns, 'label') or '').lower()
    if label not in features.LABEL_NAMES:
      shown = _cell(fields, columns, 'label')
      refused[file] = (f'row {line} of {name}: unknown label {shown!r} (known: '
                       f'{", ".join(features.LABEL_NAMES)})' if shown else
                       f'row {line} of {name}: no label')
      continue
    rows[file] = Row(line, label, _cell(fields, columns, PATIENT_COLUMN),
                     _cell(fields, columns, STUDY_COLUMN))
  for file, lines in lines_of.items():
    if len(lines) > 1:
      rows.pop(file, None)
      refused[file] = (f'on {len(lines)} rows of {name} (rows '
                       f'{", ".join(map(str, lines))}): which label holds is a guess')
  if not rows and not refused:
    raise ManifestError(f'labels file {path} has a header row and no rows')
  has_patients = any(row.patient or row.study for row in rows.values())
  return Manifest(os.path.abspath(path), rows, refused, has_patients)


def patient_of(row: Row) -> Optional[str]:
  """Who the row's image belongs to, as written: its patient, else its study (a study is one
  patient's), else None."""
  if row.patient:
    return row.patient
  return f'study:{row.study}' if row.study else None
