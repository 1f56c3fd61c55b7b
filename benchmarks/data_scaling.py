"""How the pipeline's data components scale with the number of images and of Beam workers.

    python -m benchmarks.data_scaling [--counts 1000 5000 20000] [--workers 1 2]
                                      [--image-size 180] [--workdir DIR]

For each count it generates a synthetic set (256×256 PNGs, a third per class, lesion masks
beside them), then for each worker count runs the pipeline's data part through LocalDagRunner,
uncached, into a fresh output directory: ImageExampleGen, DataQualityCheck, StatisticsGen,
CuratedSchemaGen, ExampleValidator, DataValidationGate and Transform (`--image-size` pixels per
side, as the Trainer would get them). One worker is Beam's DirectRunner in this process; more
are its multi-processing mode (`--beam-workers`). It prints wall time, images per second and
the peak resident memory of the whole process tree (Beam's workers included), then that peak
while each component ran.
"""

import argparse
import os
import shutil
import sys
import tempfile
from typing import List, Optional

from benchmarks.process_tree import Measured, mebibytes

_DATA_PART = """
import sys
from cli import command_line
command_line.prepare_environment()
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
import local_runner
local_runner.show_progress_and_warnings()  # the progress lines tell which component peaked
from pipeline import configs
from pipeline.pipeline import create_pipeline
data_root, output_dir, workers, image_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = configs.PipelineConfig(data_root=data_root, output_dir=output_dir, image_size=image_size,
                                beam_pipeline_args=configs.direct_runner_args(workers),
                                enable_cache=False)
LocalDagRunner().run(create_pipeline(
    config, metadata.sqlite_metadata_connection_config(config.metadata_path),
    data_part_only=True))
"""


def print_peaks_by_component(peaks_by_row) -> None:
  """Peak memory of the process tree while each component ran, a column per row above."""
  print('\n| peak memory MiB while it ran (images, workers) | '
        + ' | '.join(title for title, _ in peaks_by_row) + ' |')
  print('|---|' + '---:|' * len(peaks_by_row))
  for name in peaks_by_row[0][1]:
    print(f'| {name} | ' + ' | '.join(mebibytes(peaks.get(name, 0)) for _, peaks in peaks_by_row)
          + ' |')


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--counts', type=int, nargs='+', default=[1000, 5000, 20000])
  parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
  parser.add_argument('--image-size', type=int, default=180)
  parser.add_argument('--workdir', help='where the images and outputs go (default: a temporary '
                      'folder, removed at the end); 20,000 images need about 10 GB')
  args = parser.parse_args(argv)
  from data import synthetic  # pylint: disable=g-import-not-at-top

  workdir = args.workdir or tempfile.mkdtemp(prefix='data_scaling_')
  print(f'{os.cpu_count()} CPUs; Transform to {args.image_size}×{args.image_size}\n')
  print('| images | Beam workers | wall s | images/s | peak memory MiB |')
  print('|---:|---:|---:|---:|---:|', flush=True)
  peaks_by_row = []
  try:
    for count in args.counts:
      data_root = os.path.join(workdir, f'images_{count}')
      if not os.path.isdir(data_root):
        synthetic.generate_dataset(data_root, images_per_class=count // 3, image_size=256)
      for workers in args.workers:
        output_dir = os.path.join(workdir, f'output_{count}_{workers}')
        shutil.rmtree(output_dir, ignore_errors=True)
        measured = Measured([sys.executable, '-c', _DATA_PART, data_root, output_dir,
                             str(workers), str(args.image_size)])
        print(f'| {count:,} | {workers} | {measured.seconds:.1f} | '
              f'{count / measured.seconds:.1f} | {mebibytes(measured.peak_bytes)} |', flush=True)
        peaks_by_row.append((f'{count:,}, {workers}', {
            name: measured.peak_bytes_between(start, end)
            for name, (start, end) in measured.component_phases().items()}))
        shutil.rmtree(output_dir, ignore_errors=True)
    print_peaks_by_component(peaks_by_row)
  finally:
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
