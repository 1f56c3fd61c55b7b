"""Patient identifiers kept only as a keyed hash (a pseudonym), never as they were given.

A patient's images must stay on one side of the split, so the pipeline has to know which images
share a patient, but not who the patient is. The ID from a manifest's `patient` column or a DICOM
header's PatientID becomes `HMAC-SHA256(key, ID)`, truncated: the same patient gives the same
pseudonym under the same key, and without the key nobody can test a guessed ID against it. The key
is a secret like the metadata password: the first line of `--identifier-key-file`, or the
environment variable BREAST_ULTRASOUND_IDENTIFIER_KEY; it never enters an exec property, an
artifact or a log. Light on purpose (standard library only): the runners use it before
TensorFlow loads.
"""

import hashlib
import hmac
import os
from typing import Optional

KEY_VARIABLE = 'BREAST_ULTRASOUND_IDENTIFIER_KEY'
PSEUDONYM_PREFIX = 'patient-'
_PSEUDONYM_HEX_DIGITS = 16  # 64 bits: no collision expected below billions of patients
MIN_KEY_CHARACTERS = 16


class MissingKey(ValueError):
  """Patients are named but no key to pseudonymise them was given."""


def read_key(key_file: Optional[str]) -> Optional[str]:
  """The key from the file's first line, else from KEY_VARIABLE, else None. A key shorter than
  MIN_KEY_CHARACTERS is refused: a short key can be guessed and the pseudonyms reversed."""
  if key_file:
    with open(key_file, encoding='utf-8') as handle:
      key = handle.readline().strip()
    source = f'the identifier key file {key_file}'
  else:
    key = os.environ.get(KEY_VARIABLE, '').strip()
    source = f'${KEY_VARIABLE}'
  if not key:
    return None
  if len(key) < MIN_KEY_CHARACTERS:
    raise ValueError(f'{source} holds a key of {len(key)} characters; use at least '
                     f'{MIN_KEY_CHARACTERS} (a random string, e.g. from `openssl rand -hex 32`)')
  return key


def missing_key_message(what: str) -> str:
  return (f'{what} name patients, and no identifier key was given: put a secret key in '
          f'${KEY_VARIABLE} or a file given as --identifier-key-file, so that a patient\'s '
          'images stay on one side of the split without the ID being stored')


def pseudonym(identifier: str, key: str) -> str:
  """The patient's pseudonym: `patient-` and the keyed hash's first 16 hex digits."""
  digest = hmac.new(key.encode('utf-8'), identifier.strip().encode('utf-8'), hashlib.sha256)
  return PSEUDONYM_PREFIX + digest.hexdigest()[:_PSEUDONYM_HEX_DIGITS]
