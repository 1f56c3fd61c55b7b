"""Compiles the same pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

    python kubeflow_v2_runner.py --data-root gs://BUCKET/busi --output-dir gs://BUCKET/run \
        --image IMAGE [--output-file pipeline.json] [--beam-runner DataflowRunner ...]

Writes a pipeline-spec JSON to submit with Vertex AI (`aiplatform.PipelineJob`) or a KFP v2
client. It compiles offline: model code is referenced by dotted path, nothing is uploaded. IMAGE
is a container with this project and its requirements installed, its root on PYTHONPATH.
Extra arguments after the flags are passed to Beam, e.g. `--runner=DataflowRunner
--project=P --region=R --temp_location=gs://BUCKET/tmp` to run the data components on Dataflow.
"""

import argparse
import os
import sys
from typing import List, Optional

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from pipeline import configs  # pylint: disable=g-import-not-at-top


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root', required=True)
  parser.add_argument('--output-dir', required=True)
  parser.add_argument('--image', required=True, help='container image with this project')
  parser.add_argument('--output-file', default='pipeline.json')
  parser.add_argument('--epochs', type=int, default=configs.PipelineConfig.epochs)
  parser.add_argument('--min-accuracy', type=float, default=configs.PipelineConfig.min_accuracy)
  args, beam_pipeline_args = parser.parse_known_args(argv)

  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top

  config = configs.PipelineConfig(
      data_root=args.data_root, output_dir=args.output_dir, epochs=args.epochs,
      min_accuracy=args.min_accuracy, baseline_excludes_candidate=False,
      beam_pipeline_args=beam_pipeline_args or configs.PipelineConfig().beam_pipeline_args)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=args.image),
      output_dir=os.path.dirname(os.path.abspath(args.output_file)),
      output_filename=os.path.basename(args.output_file))
  runner.run(create_pipeline(config))
  print(f'wrote {args.output_file}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
