"""A fingerprint of the model code, so that editing it invalidates the cached Transform/Trainer.

TFX caches a component when its inputs and execution properties are unchanged. With the
dotted-path `preprocessing_fn` and `run_fn` the templates use, the code itself is not among them,
so a changed network would silently reuse the old model. The pipeline puts this fingerprint in
their custom_config instead.
"""

import hashlib
import os

from pipeline.configs import PROJECT_ROOT


def source_fingerprint(package: str) -> str:
  """SHA-256 over the .py files of a project package, by relative path and content."""
  digest = hashlib.sha256()
  package_dir = os.path.join(PROJECT_ROOT, package)
  for folder, subfolders, files in os.walk(package_dir):
    subfolders.sort()
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        digest.update(os.path.relpath(path, package_dir).encode())
        with open(path, 'rb') as handle:
          digest.update(handle.read())
  return digest.hexdigest()[:16]
