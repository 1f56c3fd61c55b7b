"""A TF Serving model base path: numbered version folders, each holding a SavedModel.

This is the layout Pusher writes (`<output-dir>/serving/<model-name>/<version>/`) and TF Serving
reads with `--model_base_path`. Both the prediction CLI and the local server find versions here.
"""

import os
from typing import List, Optional, Tuple

SAVED_MODEL_FILE = 'saved_model.pb'


class ModelDirectoryError(Exception):
  """The model base path or the requested version is not usable; the message says why."""


def list_versions(base_path: str) -> List[int]:
  """The versions in `base_path` that hold a SavedModel, oldest first."""
  if not os.path.isdir(base_path):
    raise ModelDirectoryError(f'model directory {base_path} does not exist or is not a folder')
  return sorted(int(name) for name in os.listdir(base_path)
                if name.isdigit()
                and os.path.isfile(os.path.join(base_path, name, SAVED_MODEL_FILE)))


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
