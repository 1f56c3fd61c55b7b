"""Compiles the same pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

    python kubeflow_v2_runner.py --data-root gs://BUCKET/busi --output-dir gs://BUCKET/run \
        --image IMAGE [--output-file pipeline.json] [pipeline flags...] [--beam-arg=ARG ...]

Writes a pipeline-spec JSON to submit with Vertex AI (`aiplatform.PipelineJob`) or a KFP v2
client. It compiles offline: model code is referenced by dotted path, nothing is uploaded. IMAGE
is a container with this project and its requirements installed, its root on PYTHONPATH. The
pipeline flags are local_runner.py's (`cli/flags.py`; `--help` lists them); each
`--beam-arg=ARG` goes to Beam, e.g. `--beam-arg=--runner=DataflowRunner
--beam-arg=--project=P --beam-arg=--region=R --beam-arg=--temp_location=gs://BUCKET/tmp` to run
the data components on Dataflow. An unknown flag is an error, never passed on silently.
"""

import os
import sys
from typing import List, Optional

from cli import command_line

command_line.prepare_environment()

from cli import flags  # pylint: disable=g-import-not-at-top


def main(argv: Optional[List[str]] = None) -> int:
  parser = command_line.OneLineArgumentParser(
      prog='kubeflow_v2_runner.py', description=__doc__.splitlines()[0])
  flags.add_pipeline_flags(parser, paths_required=True)
  parser.add_argument('--image', required=True,
                      help='container image with this project and its requirements')
  parser.add_argument('--output-file', default='pipeline.json',
                      help='where the pipeline spec goes (default: %(default)s)')
  args = flags.parse_flags(parser, argv)

  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top

  # Vertex compiles only TFX's built-in resolver strategies.
  config = flags.config_from_flags(args, custom_resolver_strategies=False)
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=args.image),
      output_dir=os.path.dirname(os.path.abspath(args.output_file)),
      output_filename=os.path.basename(args.output_file))
  runner.run(create_pipeline(config))
  print(f'wrote {args.output_file}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
