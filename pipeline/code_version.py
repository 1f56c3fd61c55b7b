"""Fingerprints of the code each component's output depends on, so that editing that code makes
the component run again instead of reusing a cached output.

TFX reuses a component's outputs when its inputs and its configuration are unchanged. The code
behind a dotted-path `preprocessing_fn` or `run_fn`, a custom executor, or the Evaluator's custom
TFMA metrics is part of neither, so a changed network or metric would silently reuse the old
model or evaluation. The pipeline therefore puts `code_version(entry module)` into each such
component's configuration: a SHA-256 over every project module the entry module imports,
directly or through other project modules (read from the import statements, nothing is
imported), so editing any of them changes the fingerprint of exactly the components that use it.
"""

import ast
import hashlib
import os
from typing import List, Optional, Sequence, Set

from pipeline.configs import PROJECT_ROOT


def _module_file(module: str) -> Optional[str]:
  """The project file of a dotted module name, or None when it is not the project's."""
  base = os.path.join(PROJECT_ROOT, *module.split('.'))
  for candidate in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.isfile(candidate):
      return candidate
  return None


def _imported_modules(path: str, module: str) -> Set[str]:
  """Every dotted name the file's import statements may load, packages along the way included
  (`from a.b import c` may load a, a.b and a.b.c)."""
  with open(path, 'rb') as handle:
    tree = ast.parse(handle.read(), filename=path)
  is_package = path.endswith('__init__.py')
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # relative: from the file's own package upwards
        package = module.split('.') if is_package else module.split('.')[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = '.'.join(package + ([base] if base else []))
      names.add(base)
      names.update(f'{base}.{alias.name}' for alias in node.names)
  with_parents = set()
  for name in names:
    parts = name.split('.')
    with_parents.update('.'.join(parts[:end]) for end in range(1, len(parts) + 1))
  return with_parents


def project_modules(*entry_modules: str) -> List[str]:
  """The project files that `entry_modules` load, transitively, in a stable order."""
  seen, files = set(), {}
  # An entry module's packages load with it.
  pending = ['.'.join(module.split('.')[:end]) for module in entry_modules
             for end in range(1, module.count('.') + 2)]
  while pending:
    module = pending.pop()
    if module in seen:
      continue
    seen.add(module)
    path = _module_file(module)
    if path is None:
      continue
    files[module] = path
    pending.extend(_imported_modules(path, module) - seen)
  return [files[module] for module in sorted(files)]


def code_version(*entry_modules: str, files: Sequence[str] = ()) -> str:
  """SHA-256 (16 hex digits) over the project modules `entry_modules` load, and the project's
  `files` (e.g. a template a module renders), by path and content."""
  digest = hashlib.sha256()
  for path in [*project_modules(*entry_modules),
               *(os.path.join(PROJECT_ROOT, file) for file in files)]:
    digest.update(os.path.relpath(path, PROJECT_ROOT).encode())
    with open(path, 'rb') as handle:
      digest.update(handle.read())
  return digest.hexdigest()[:16]
