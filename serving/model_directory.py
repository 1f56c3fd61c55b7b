"""A TF Serving model base path, and the one answer to which of its versions is the newest.

This is the layout the Pusher writes (`<output-dir>/serving/<model-name>/<version>/`) and TF
Serving reads with `--model_base_path`. As TF Serving does, only folders named by ASCII digits
are versions: a push in progress (`.1795000000.incomplete`), `tmp`, `3.partial` or `²` is not.
Everyone asks here:

- the Pusher numbers a new version above every numbered folder, SavedModel or not
  (`next_version`), so a push never lands in a folder someone else left;
- the local server and the prediction CLI serve the newest version that holds a SavedModel and
  loads (`list_versions` here; the loading in `model_versions.py`), as TF Serving's default
  version policy; a version whose SavedModel is missing is not listed, one that is present but
  broken is found when it fails to load and the next older one serves;
- `local_runner.py --infer-dir` classifies with the version the server would serve, found the
  same way, and the model ML Metadata recorded as pushed as that version.

Paths with a scheme (`gs://`, ...) are listed through TensorFlow's file system, as the Pusher
writes them; local ones without it, so the CLI and the server's poller stay light.
"""

import os
import re
import time
from typing import List, Optional, Tuple

SAVED_MODEL_FILE = 'saved_model.pb'
_VERSION_NAME = re.compile(r'[0-9]+')  # not str.isdigit, which accepts '²' and '٣'


class ModelDirectoryError(Exception):
  """The model base path or the requested version is not usable; the message says why."""


def _is_remote(path: str) -> bool:
  return '://' in path


def _numbered_folders(base_path: str) -> List[int]:
  """Every version-named entry of `base_path` (none when it does not exist), oldest first."""
  if _is_remote(base_path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    names = ([name.rstrip('/') for name in tf.io.gfile.listdir(base_path)]
             if tf.io.gfile.isdir(base_path) else [])
  else:
    names = os.listdir(base_path) if os.path.isdir(base_path) else []
  return sorted(int(name) for name in names if _VERSION_NAME.fullmatch(name))


def next_version(base_path: str) -> str:
  """The number of a new version: Unix seconds, as TFX's Pusher, or one more than the newest
  numbered folder when that is not lower, so every push is a new, higher version."""
  return str(max([int(time.time())] + [version + 1 for version in _numbered_folders(base_path)]))


def list_versions(base_path: str) -> List[int]:
  """The versions in `base_path` that hold a SavedModel, oldest first."""
  if not os.path.isdir(base_path):
    raise ModelDirectoryError(f'model directory {base_path} does not exist or is not a folder')
  return [version for version in _numbered_folders(base_path)
          if os.path.isfile(os.path.join(base_path, str(version), SAVED_MODEL_FILE))]


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
