"""The same pipeline compiles for Kubeflow Pipelines v2 / Vertex AI, offline, from the flags every
runner shares; a flag it does not know is an error, not an argument silently passed to Beam."""

import json
import subprocess

import pytest

REQUIRED = ('--data-root', 'gs://bucket/busi', '--output-dir', 'gs://bucket/run',
            '--image', 'registry.example/busi:1')


def compile_pipeline(python, project_root, *flags):
  return subprocess.run([python, 'kubeflow_v2_runner.py', *flags], cwd=project_root,
                        capture_output=True, text=True, timeout=300, check=False)


def test_compiles_with_dotted_paths_and_no_upload(python, project_root, tmp_path):
  output_file = tmp_path / 'pipeline.json'
  completed = compile_pipeline(python, project_root, *REQUIRED, '--output-file', str(output_file),
                               '--epochs', '7', '--beam-arg=--runner=DataflowRunner',
                               '--beam-arg=--region=europe-west4')
  assert completed.returncode == 0, completed.stderr[-3000:]
  spec = json.loads(output_file.read_text())
  tasks = set(spec['pipelineSpec']['root']['dag']['tasks'])
  assert {'ImageExampleGen', 'StatisticsGen', 'CuratedSchemaGen', 'ExampleValidator',
          'DataValidationGate', 'Transform', 'Trainer', 'Evaluator', 'ServingCheck',
          'EvalExplainer', 'Pusher', 'ModelCardGenerator'} <= tasks
  # Vertex expresses the baseline resolver as two query tasks.
  assert any(task.startswith('latest_blessed_model_resolver') for task in tasks)
  text = output_file.read_text()
  assert 'models.model.run_fn' in text
  assert 'models.preprocessing.preprocessing_fn' in text
  assert 'module_file' not in text.replace('"module_file": {"type": "STRING"}', '')
  assert '--runner=DataflowRunner' in text and '--region=europe-west4' in text
  # Dataflow's workers need TFX, which TFX packs for them when no image is named
  # (the DirectRunner's own arguments name one to stop that packing).
  assert '--direct_num_workers=1' in text and '--sdk_container_image' not in text
  assert '\\"epochs\\": 7' in text


@pytest.mark.parametrize('flags, expected', [
    (('--runner=DataflowRunner',), 'unrecognized arguments: --runner=DataflowRunner'),
    (('--epochs', '0'), '--epochs'),
    (('--network', 'resnet9000'), '--network'),
])
def test_unknown_flags_and_bad_values_are_one_line_errors(python, project_root, tmp_path, flags,
                                                          expected):
  completed = compile_pipeline(python, project_root, *REQUIRED,
                               '--output-file', str(tmp_path / 'pipeline.json'), *flags)
  assert completed.returncode == 2
  lines = [line for line in completed.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('kubeflow_v2_runner.py: error:'), lines
  assert expected in lines[0]
  assert not (tmp_path / 'pipeline.json').exists()
