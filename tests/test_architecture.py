"""The import rules of docs/architecture.md, read from the code: every import across the rooms
that breaks a rule is one of the exceptions that page lists, and every listed exception is still
there (so the page cannot go stale either way)."""

import ast
import os

import pytest

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOMS = ('models', 'serving', 'components', 'pipeline', 'cli', 'orchestration', 'evaluation',
         'presentation', 'inputs', 'runs', 'review', 'data')

# The rooms a room must not import (docs/architecture.md, "What never imports what").
FORBIDDEN = {
    'models': {'pipeline', 'components', 'serving', 'runs'},
    'serving': {'pipeline', 'components', 'models', 'runs'},
    'components': {'serving', 'runs'},
    'inputs': {'pipeline', 'cli', 'orchestration', 'evaluation', 'components', 'serving', 'runs'},
    'evaluation': {'pipeline', 'cli', 'orchestration', 'presentation', 'components', 'serving',
                   'runs'},
    'presentation': {'pipeline', 'cli', 'orchestration', 'components', 'serving', 'runs'},
    'orchestration': {'cli', 'pipeline', 'evaluation', 'components', 'models', 'serving', 'runs'},
    'cli': {'serving', 'runs', 'review'},
    'review': {'pipeline', 'evaluation'},
}
# components/, inputs/ and review/ may take from models/ only the shared contract.
CONTRACT_ONLY = ('components', 'inputs', 'review')
MODELS_CONTRACT = ('models.features',)

# (importing module, imported module): the exceptions docs/architecture.md lists and explains.
EXCEPTIONS = {
    ('inputs/image_files.py', 'models.image_decoding'),
    ('components/image_example_gen/split_plan.py', 'models.group_split'),
    ('components/inference_export/component.py', 'models.answer'),
    ('components/pusher/executor.py', 'serving.model_directory'),
    ('components/inference_export/component.py', 'models.calibration'),
    ('components/trainer/executor.py', 'models.calibration'),
    ('components/trainer/executor.py', 'models.model'),
    ('components/trainer/executor.py', 'models.on_device'),
    ('components/trainer/executor.py', 'models.warm_start'),
    ('serving/model_versions.py', 'models.serving_warmup'),
    ('serving/predict.py', 'models.answer'),
    ('serving/request_log.py', 'models.features'),
}


def imported_modules(path: str):
  """The project modules a file imports (absolute imports; `from a.b import c` gives `a.b.c`
  when c is a module, else `a.b`)."""
  tree = ast.parse(open(os.path.join(PROJECT_ROOT, path), encoding='utf-8').read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        candidate = f'{node.module}.{alias.name}'
        as_file = os.path.join(PROJECT_ROOT, *candidate.split('.'))
        yield candidate if (os.path.isfile(as_file + '.py') or os.path.isdir(as_file)) \
            else node.module


def broken_rules():
  found = set()
  for room in FORBIDDEN:
    for folder, _, files in os.walk(os.path.join(PROJECT_ROOT, room)):
      for name in files:
        if not name.endswith('.py'):
          continue
        path = os.path.relpath(os.path.join(folder, name), PROJECT_ROOT)
        for module in imported_modules(path):
          target = module.split('.')[0]
          if target not in ROOMS or target == room:
            continue
          if target in FORBIDDEN[room] or (
              room in CONTRACT_ONLY and target == 'models'
              and not module.startswith(MODELS_CONTRACT)):
            found.add((path, module))
  return found


@pytest.mark.quick
def test_every_import_across_the_rules_is_a_listed_exception():
  found = broken_rules()
  assert found - EXCEPTIONS == set(), 'not in docs/architecture.md: add it there, or move code'
  assert EXCEPTIONS - found == set(), 'listed in docs/architecture.md but gone: take it out'


@pytest.mark.quick
def test_the_architecture_page_names_every_exception():
  rows = open(os.path.join(PROJECT_ROOT, 'docs', 'architecture.md'),
              encoding='utf-8').read().splitlines()
  for path, module in EXCEPTIONS:
    # Both in one row of the exceptions' table, where the reason is given.
    assert any(row.startswith(f'| `{path}` |') and f'`{module}`' in row for row in rows), (
        path, module)
