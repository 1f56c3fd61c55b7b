"""A TF Serving model base path: numbered version folders, each holding a SavedModel.

This is the layout Pusher writes (`<output-dir>/serving/<model-name>/<version>/`) and TF Serving
reads with `--model_base_path`. Both the prediction CLI and the local server find versions here.
As TF Serving does, only folders named by ASCII digits are versions: a push in progress
(`.1795000000.incomplete`), `tmp`, `3.partial` or `²` is not. A version whose SavedModel is
missing is not listed; one that is present but broken is found when it fails to load.
"""

import os
import re
from typing import List, Optional, Tuple

SAVED_MODEL_FILE = 'saved_model.pb'
_VERSION_NAME = re.compile(r'[0-9]+')  # not str.isdigit, which accepts '²' and '٣'


class ModelDirectoryError(Exception):
  """The model base path or the requested version is not usable; the message says why."""


def list_versions(base_path: str) -> List[int]:
  """The versions in `base_path` that hold a SavedModel, oldest first."""
  if not os.path.isdir(base_path):
    raise ModelDirectoryError(f'model directory {base_path} does not exist or is not a folder')
  return sorted(int(name) for name in os.listdir(base_path)
                if _VERSION_NAME.fullmatch(name)
                and os.path.isfile(os.path.join(base_path, name, SAVED_MODEL_FILE)))


def version_signature(base_path: str, version: int) -> Tuple:
  """What a version folder holds, by file, size and modification time: a version that failed to
  load is tried again only when this changes (a copy still going on, or a fixed model)."""
  folder = os.path.join(base_path, str(version))
  found = []
  for directory, subfolders, files in os.walk(folder):
    subfolders.sort()
    for name in sorted(files):
      try:
        stat = os.stat(os.path.join(directory, name))
      except OSError:
        continue
      found.append((os.path.relpath(os.path.join(directory, name), folder), stat.st_size,
                    stat.st_mtime_ns))
  return tuple(found)


def find_version(base_path: str, version: Optional[int] = None) -> Tuple[int, str]:
  """(version, SavedModel folder): `version`, or the newest when it is None."""
  versions = list_versions(base_path)
  if not versions:
    raise ModelDirectoryError(
        f'model directory {base_path} holds no versions (numbered folders with a SavedModel); '
        'has the pipeline pushed a model?')
  if version is None:
    version = versions[-1]
  elif version not in versions:
    raise ModelDirectoryError(f'model directory {base_path} has no version {version} '
                              f'(it has {", ".join(map(str, versions))})')
  return version, os.path.join(base_path, str(version))
