"""What the pipeline costs against the plain-Keras notebook it replaces, on one machine, in one run.

    python -m benchmarks.pipeline_overhead --data-root ../shared/data/busi [--epochs 15]

Three commands, each in a fresh process tree whose resident memory is summed and polled:

1. the notebook: `image_dataset_from_directory` (180×180, batch 32, an 80/20 split), the seed
   network (`models.networks.seed_cnn`: flip/rotation/zoom, dropout), Adam, `--epochs` epochs;
2. the pipeline, cold: `local_runner.py --network seed --epochs N` on the same folder, into a new
   output directory (every component runs: ExampleGen … Pusher, plus the summary and report);
3. the same pipeline command again: every component cached.

It prints wall time and peak memory of each, their ratios, the training throughput (images per
second over the epochs after the first, validation included, as each prints them) of the
notebook's `fit` against the Trainer's (the pipeline trains on the training split less its
calibration set, the notebook on its 80 %: throughput is per image, so the two compare), and
where the pipeline's time and memory go: each component's wall time as ML Metadata recorded
it, the peak memory while it ran, and the same for the process before the first component
(imports, compiling the pipeline) and after the last (the summary and the report).
"""

import argparse
import os
import re
import sys
import tempfile
from typing import Dict, List, Optional

from benchmarks.process_tree import Measured, mebibytes
from cli import command_line

command_line.prepare_environment()

_NOTEBOOK = """
import sys
from cli import command_line
command_line.prepare_environment()
import tf_keras as keras
from models import networks
data_root, epochs = sys.argv[1], int(sys.argv[2])
training, validation = keras.utils.image_dataset_from_directory(
    data_root, validation_split=0.2, subset='both', seed=123, image_size=(180, 180),
    batch_size=32)
scale = lambda images, labels: (images / 255.0, labels)
model = networks.seed_cnn(180, len(training.class_names))
model.compile(optimizer='adam', loss=keras.losses.SparseCategoricalCrossentropy(),
              metrics=['accuracy'])
model.fit(training.map(scale), validation_data=validation.map(scale), epochs=epochs, verbose=2)
"""


def training_seconds_after_first_epoch(measured: Measured) -> float:
  """From Keras's `Epoch 2/N` line to the last epoch's own log line."""
  starts = [second for second, line in measured.lines if re.match(r'^Epoch \d+/\d+$', line)]
  last_epoch_line = max(second for second, line in measured.lines
                        if re.match(r'^\d+/\d+ - ', line))
  return last_epoch_line - starts[1]


def notebook_training_images(measured: Measured) -> int:
  for _, line in measured.lines:
    found = re.match(r'Using (\d+) files for training', line)
    if found:
      return int(found.group(1))
  raise SystemExit('the notebook did not say how many files it trains on')


def pipeline_training_images(output_dir: str) -> int:
  """Images the Trainer fitted on: the train split less its calibration set (ML Metadata)."""
  from runs import summary  # pylint: disable=g-import-not-at-top
  run = summary.summarize_run(os.path.join(output_dir, 'metadata.sqlite'))
  return sum(run.class_counts['train'].values()) - run.operating_point['calibration_examples']


def component_seconds(output_dir: str) -> List[Dict[str, float]]:
  """{component: seconds} of each recorded run, oldest first, from ML Metadata."""
  from runs import metadata_store, summary  # pylint: disable=g-import-not-at-top
  metadata_path = os.path.join(output_dir, 'metadata.sqlite')
  store = metadata_store.open_store(metadata_path)
  return [{component.node_id: component.seconds
           for component in summary.summarize_run(metadata_path, context.name).components}
          for context in metadata_store.run_contexts(store)]


def print_where_the_time_goes(cold: Measured, cold_seconds: Dict[str, float],
                              cached: Measured, cached_seconds: Dict[str, float]) -> None:
  """Each component's seconds (ML Metadata) and the cold run's peak memory while it ran (the
  progress lines' times), and the same for the process before and after the components."""
  cold_phases, cached_phases = cold.component_phases(), cached.component_phases()
  cold_start = min(start for start, _ in cold_phases.values())
  cold_end = max(end for _, end in cold_phases.values())
  cached_start = min(start for start, _ in cached_phases.values())
  cached_end = max(end for _, end in cached_phases.values())
  print('| where the time goes | cold s | cold peak MiB | cached s |')
  print('|---|---:|---:|---:|')
  print(f'| before the first component (imports, compiling the pipeline) | {cold_start:.1f} | '
        f'{mebibytes(cold.peak_bytes_between(0, cold_start))} | {cached_start:.1f} |')
  for name, seconds in cold_seconds.items():
    start, end = cold_phases.get(name, (0, 0))
    print(f'| {name} | {seconds:.1f} | {mebibytes(cold.peak_bytes_between(start, end))} | '
          f'{cached_seconds.get(name, float("nan")):.1f} |')
  print(f'| after the last component (summary, report) | {cold.seconds - cold_end:.1f} | '
        f'{mebibytes(cold.peak_bytes_between(cold_end, cold.seconds))} | '
        f'{cached.seconds - cached_end:.1f} |')


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root', required=True)
  parser.add_argument('--epochs', type=int, default=15)
  args = parser.parse_args(argv)
  data_root = os.path.abspath(args.data_root)
  python = sys.executable

  with tempfile.TemporaryDirectory(prefix='pipeline_overhead_') as workdir:
    output_dir = os.path.join(workdir, 'output')
    notebook = Measured([python, '-c', _NOTEBOOK, data_root, str(args.epochs)])
    pipeline_command = [python, 'local_runner.py', '--data-root', data_root, '--output-dir',
                        output_dir, '--network', 'seed', '--epochs', str(args.epochs)]
    cold = Measured(pipeline_command)
    cached = Measured(pipeline_command)
    notebook_rate = (notebook_training_images(notebook) * (args.epochs - 1)
                     / training_seconds_after_first_epoch(notebook))
    pipeline_rate = (pipeline_training_images(output_dir) * (args.epochs - 1)
                     / training_seconds_after_first_epoch(cold))
    cold_components, cached_components = component_seconds(output_dir)[-2:]

  print(f'{args.epochs} epochs of the seed network on {data_root}; {os.cpu_count()} CPUs\n')
  print('| run | wall s | peak memory MiB | against the notebook |')
  print('|---|---:|---:|---|')
  print(f'| plain-Keras notebook | {notebook.seconds:.1f} | {mebibytes(notebook.peak_bytes)} | |')
  print(f'| pipeline, cold | {cold.seconds:.1f} | {mebibytes(cold.peak_bytes)} | '
        f'{cold.seconds / notebook.seconds:.2f}× wall, '
        f'{cold.peak_bytes / notebook.peak_bytes:.2f}× memory |')
  print(f'| pipeline, cached rerun | {cached.seconds:.1f} | {mebibytes(cached.peak_bytes)} | '
        f'{100 * cached.seconds / cold.seconds:.1f} % of the cold run |')
  print()
  print('| training throughput (epochs 2…N, validation included) | images/s |')
  print('|---|---:|')
  print(f'| notebook `fit` | {notebook_rate:.1f} |')
  print(f'| Trainer | {pipeline_rate:.1f} ({pipeline_rate / notebook_rate:.2f}×) |')
  print()
  print_where_the_time_goes(cold, cold_components, cached, cached_components)
  return 0


if __name__ == '__main__':
  sys.exit(main())
