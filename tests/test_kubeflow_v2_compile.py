"""The same pipeline compiles for Kubeflow Pipelines v2 / Vertex AI, offline."""

import json
import subprocess


def test_compiles_with_dotted_paths_and_no_upload(python, project_root, tmp_path):
  output_file = tmp_path / 'pipeline.json'
  completed = subprocess.run(
      [python, 'kubeflow_v2_runner.py', '--data-root', 'gs://bucket/busi',
       '--output-dir', 'gs://bucket/run', '--image', 'registry.example/busi:1',
       '--output-file', str(output_file), '--runner=DataflowRunner'],
      cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  spec = json.loads(output_file.read_text())
  tasks = set(spec['pipelineSpec']['root']['dag']['tasks'])
  assert {'ImageExampleGen', 'StatisticsGen', 'CuratedSchemaGen', 'ExampleValidator',
          'DataValidationGate', 'Transform', 'Trainer', 'Evaluator', 'Pusher'} <= tasks
  # Vertex expresses the baseline resolver as two query tasks.
  assert any(task.startswith('latest_blessed_model_resolver') for task in tasks)
  text = output_file.read_text()
  assert 'models.model.run_fn' in text
  assert 'models.preprocessing.preprocessing_fn' in text
  assert 'module_file' not in text.replace('"module_file": {"type": "STRING"}', '')
  assert 'DataflowRunner' in text
