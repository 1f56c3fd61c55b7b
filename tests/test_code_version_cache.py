"""Editing the project's code reruns exactly the components whose output depends on it; the others
stay cached. Run in a copy of the project, so the test can edit its code."""

import os
import shutil

from data import synthetic
from pipeline import code_version
from runs import metadata_store

COPY_IGNORES = shutil.ignore_patterns('.venv', '.git', 'outputs', 'busi_synthetic', '__pycache__',
                                      '.pytest_cache')


def relative_modules(*entry_modules):
  return {os.path.relpath(path, code_version.PROJECT_ROOT)
          for path in code_version.project_modules(*entry_modules)}


def test_fingerprint_covers_what_a_component_imports_and_nothing_else():
  trainer = relative_modules('models.model')
  assert {'models/model.py', 'models/training.py', 'models/networks.py', 'models/calibration.py',
          'models/group_split.py', 'models/explanation.py', 'models/features.py',
          'models/augmentation.py', 'models/backbones.py', 'models/self_supervised.py',
          'models/on_device.py', 'models/efficientnet_lite.py', 'models/torch_checkpoint.py',
          'models/serving_warmup.py', 'models/datasets.py', 'models/export.py',
          'models/training_curves.py', 'models/warm_start.py', 'models/defaults.py',
          'models/__init__.py'} == trainer
  # The Tuner's code is the Trainer's and its own.
  assert relative_modules('models.tuning') == trainer | {'models/tuning.py'}
  quality = relative_modules('components.data_quality.component')
  # Through other modules: the report module imports the hash library.
  assert {'components/data_quality/report.py', 'components/near_duplicates.py',
          'components/contracts.py', 'models/features.py'} <= quality
  assert not any(path.startswith(('pipeline/', 'runs/', 'serving/')) for path in quality)
  # The Evaluator's metrics: their maths, the names they report under and the model's calibration.
  assert relative_modules('evaluation.tfma_metrics') == {
      'evaluation/__init__.py', 'evaluation/tfma_metrics.py',
      'evaluation/classification_statistics.py', 'evaluation/metric_names.py',
      'models/__init__.py', 'models/calibration.py', 'models/features.py'}


def test_editing_a_metric_module_and_an_executor_reruns_only_what_uses_them(
    tmp_path, python, project_root, run_pipeline):
  project = tmp_path / 'project'
  shutil.copytree(project_root, project, ignore=COPY_IGNORES)
  data_root = tmp_path / 'images'
  synthetic.generate_dataset(str(data_root), images_per_class=8, image_size=48, seed=5)
  output_dir = tmp_path / 'output'
  # The small seed CNN and no on-device model: what is cached is under test, not the network.
  flags = ('--min-accuracy', '0', '--epochs', '1', '--network', 'seed', '--tflite-weights', 'none')
  run_pipeline(python, project, data_root, output_dir, *flags)
  # The Evaluator's custom metrics, and a module that DataQualityCheck's code imports.
  for module in ('evaluation/tfma_metrics.py', 'components/data_quality/report.py'):
    with open(project / module, 'a', encoding='utf-8') as handle:
      handle.write('\n# Edited by the test: the same behaviour, other code.\n')
  run_pipeline(python, project, data_root, output_dir, *flags)

  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  first, second = [
      {run.node_id: run.state for run in metadata_store.component_runs(store, context.id)}
      for context in metadata_store.run_contexts(store)]
  assert set(first.values()) == {'complete'}
  # EvalExplainer reads the examples with DataQualityCheck's reader.
  rerun = {'DataQualityCheck', 'DataValidationGate', 'Evaluator', 'EvalExplainer', 'Pusher',
           'ModelCardGenerator'}
  assert {node: state for node, state in second.items() if node in rerun} == {
      node: 'complete' for node in rerun}
  # Resolvers read ML Metadata afresh every run: never cached.
  assert {node: state for node, state in second.items()
          if node not in rerun and not node.endswith('_resolver')} == {
              node: 'cached' for node in ('ImageExampleGen', 'StatisticsGen', 'CuratedSchemaGen',
                                          'ExampleValidator', 'DriftCheck', 'Transform', 'Trainer',
                                          'ServingCheck')}
