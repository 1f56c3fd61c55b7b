"""The run report: `<output-dir>/report/index.html`, a static page with pictures, no server.

    python -m runs.report --output-dir DIR [--run RUN_ID] [--screenshot PNG]

Written by `local_runner.py` after every run (and by this command for any recorded run), from
ML Metadata and the artifacts it points to: images per class and split, sample images per class
(the seed notebook's grid), the training augmentation applied to them, the data-validation result
(TFDV anomalies, near-duplicates, label conflicts, leaks, the contact sheet), the training curves,
the confusion matrix and per-class metrics, the blessing decision against each threshold, and
what was pushed where. `--screenshot` also renders the page in headless Chromium (Debian's
`chromium`) to a PNG, to see it as a browser shows it.
"""

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from pipeline import command_line

command_line.prepare_environment()

import matplotlib  # pylint: disable=g-import-not-at-top

matplotlib.use('Agg')  # No display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top

from components import contracts  # pylint: disable=g-import-not-at-top
from components.data_quality.report import format_report_line, read_examples  # pylint: disable=g-import-not-at-top
from models import features, model as trainer_module, networks, preprocessing  # pylint: disable=g-import-not-at-top
from pipeline import configs  # pylint: disable=g-import-not-at-top
from runs import metadata_store, summary  # pylint: disable=g-import-not-at-top

INDEX_FILE = 'index.html'
SAMPLES_PER_CLASS = 6
AUGMENTED_PER_CLASS = 5
EXIT_USAGE = command_line.EXIT_USAGE
# Pictures this module writes; the rest of the report folder is left alone.
PICTURES = ('samples.png', 'augmented.png', 'training_curves.png', 'confusion_matrix.png',
            'contact_sheet.png')


def _save(figure, path: str) -> None:
  figure.tight_layout()
  figure.savefig(path, dpi=90)
  plt.close(figure)


def sample_images(split_uri: str, per_class: int) -> Dict[str, List[Tuple[str, bytes]]]:
  """Up to `per_class` (file name, encoded bytes) of each class, in file order."""
  samples = {name: [] for name in features.LABEL_NAMES}
  for example in read_examples(split_uri):
    feature = example.features.feature
    label = feature[features.LABEL_NAME_KEY].bytes_list.value[0].decode()
    if label in samples and len(samples[label]) < per_class:
      samples[label].append((feature[features.FILENAME_KEY].bytes_list.value[0].decode(),
                             feature[features.IMAGE_KEY].bytes_list.value[0]))
    if all(len(found) >= per_class for found in samples.values()):
      break
  return samples


def draw_samples(samples: Dict[str, List[Tuple[str, bytes]]], image_size: int, path: str) -> None:
  """The seed notebook's grid: a row per class, each image titled with its class."""
  columns = max(1, max(len(found) for found in samples.values()))
  figure, axes = plt.subplots(len(samples), columns, figsize=(2.1 * columns, 2.3 * len(samples)),
                              squeeze=False)
  for row, (label, found) in enumerate(samples.items()):
    pixels = (preprocessing.decode_and_resize(tf.constant([image for _, image in found]),
                                              image_size).numpy() if found else [])
    for column in range(columns):
      axis = axes[row][column]
      axis.axis('off')
      if column < len(found):
        axis.imshow(pixels[column])
        axis.set_title(f'{label}\n{os.path.basename(found[column][0])}', fontsize=8)
  _save(figure, path)


def draw_augmented(samples: Dict[str, List[Tuple[str, bytes]]], network: str, image_size: int,
                   path: str, seed: int = 0) -> None:
  """One image per class, then what the network's training augmentation makes of it."""
  augmentation = networks.RECIPES[network].build(image_size, len(features.LABEL_NAMES)).get_layer(
      'augmentation')
  tf.random.set_seed(seed)
  firsts = {label: found[0] for label, found in samples.items() if found}
  figure, axes = plt.subplots(len(firsts), AUGMENTED_PER_CLASS + 1,
                              figsize=(2.1 * (AUGMENTED_PER_CLASS + 1), 2.3 * len(firsts)),
                              squeeze=False)
  for row, (label, (_, image)) in enumerate(firsts.items()):
    pixels = preprocessing.decode_and_resize(tf.constant([image]), image_size)
    variants = [pixels[0].numpy()] + [
        augmentation(pixels, training=True)[0].numpy() for _ in range(AUGMENTED_PER_CLASS)]
    for column, variant in enumerate(variants):
      axes[row][column].imshow(np.clip(variant, 0, 1))
      axes[row][column].axis('off')
      axes[row][column].set_title(f'{label}: original' if column == 0 else
                                  f'{label}: augmented {column}', fontsize=8)
  _save(figure, path)


def draw_confusion_matrix(counts: List[List[int]], path: str) -> None:
  matrix = np.array(counts)
  figure, axis = plt.subplots(figsize=(4.6, 4))
  axis.imshow(matrix, cmap='Blues')
  names = features.LABEL_NAMES
  axis.set_xticks(range(len(names)), names)
  axis.set_yticks(range(len(names)), names)
  axis.set_xlabel('predicted class')
  axis.set_ylabel('true class')
  for actual in range(len(names)):
    for predicted in range(len(names)):
      value = matrix[actual, predicted]
      axis.text(predicted, actual, str(value), ha='center', va='center',
                color='white' if value > matrix.max() / 2 else 'black')
  axis.set_title('Confusion matrix (eval split)')
  _save(figure, path)


def read_anomalies(anomalies_uri: str) -> Dict[str, List[str]]:
  """{split: ['feature: description', ...]} of ExampleValidator's output."""
  found = {}
  for name in sorted(os.listdir(anomalies_uri)):
    split_file = os.path.join(anomalies_uri, name, 'SchemaDiff.pb')
    if not name.startswith('Split-') or not os.path.isfile(split_file):
      continue
    anomalies = anomalies_pb2.Anomalies()
    with open(split_file, 'rb') as handle:
      anomalies.ParseFromString(handle.read())
    lines = [f'{feature}: {info.short_description or info.description}'
             for feature, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField('dataset_anomaly_info'):
      lines.append(f'dataset: {anomalies.dataset_anomaly_info.description}')
    found[name[len('Split-'):]] = lines
  return found


def _metric_key(class_name: str) -> str:
  """TFMA metric class name → the key it is reported under ('SparseCategoricalAccuracy' →
  'sparse_categorical_accuracy', 'MalignantRecall' → 'malignant_recall')."""
  return re.sub(r'(?<!^)(?=[A-Z])', '_', class_name).lower()


def blessing_thresholds(eval_config: Dict[str, Any], metrics: Dict[str, float],
                        failed: List[str]) -> List[Dict[str, Any]]:
  """Each threshold of the Evaluator's configuration, the measured value and whether it held."""
  rows = []
  for spec in eval_config.get('metrics_specs', []):
    for metric in spec.get('metrics', []):
      key = _metric_key(metric['class_name'])
      thresholds = [entry['threshold'] for entry in metric.get('per_slice_thresholds', [])]
      thresholds += [metric['threshold']] if 'threshold' in metric else []
      for threshold in thresholds:
        bound = threshold.get('value_threshold', {}).get('lower_bound')
        if bound is not None:
          rows.append({'check': f'{key} ≥ {float(bound):g}', 'value': metrics.get(key),
                       'passed': key not in failed})
        change = threshold.get('change_threshold')
        if change is not None:
          diff = metrics.get(f'{key}_diff')
          rows.append({'check': f'{key} not below the baseline model\'s',
                       'value': diff, 'passed': f'{key}_diff' not in failed,
                       'note': 'difference to the baseline' if diff is not None else
                       'no baseline yet: the first blessed model'})
  return rows


def failed_metrics(evaluation_uri: str) -> List[str]:
  """Names of the metrics whose threshold TFMA found not met ('<name>_diff' for a change)."""
  result = tfma.load_validation_result(evaluation_uri)
  names = []
  for per_slice in result.metric_validations_per_slice:
    for failure in per_slice.failures:
      key = failure.metric_key
      names.append(key.name + ('_diff' if key.is_diff else ''))
  return names


def _table(headers: List[str], rows: List[List[Any]]) -> str:
  head = ''.join(f'<th>{html.escape(str(header))}</th>' for header in headers)
  body = ''.join('<tr>' + ''.join(f'<td>{cell}</td>' for cell in row) + '</tr>' for row in rows)
  return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _split_order(item) -> Tuple[int, str]:
  order = ('train', 'eval')
  return (order.index(item[0]) if item[0] in order else len(order), item[0])


def _number(value: Optional[float]) -> str:
  return '—' if value is None or value != value else f'{value:.3f}'


_STYLE = '''
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.pass { color: #17702a; font-weight: bold; } .fail { color: #b3261e; font-weight: bold; }
.muted { color: #666; } img.sheet { max-width: 440px; }
'''


def write_report(metadata_path: str, report_dir: str, run_id: Optional[str] = None) -> str:
  """Writes index.html and its pictures for the run (default: the latest); returns its path."""
  run = summary.summarize_run(metadata_path, run_id)
  store = metadata_store.open_store(metadata_path)
  outputs = {(component.node_id, type_name): artifact for component, type_name, artifact
             in metadata_store.run_outputs(store, run.components)}
  executions = {component.node_id: store.get_executions_by_id([component.execution_id])[0]
                for component in run.components}
  os.makedirs(report_dir, exist_ok=True)
  for picture in PICTURES:
    if os.path.exists(os.path.join(report_dir, picture)):
      os.remove(os.path.join(report_dir, picture))

  trainer_config = trainer_module.train_config(metadata_store.execution_json_property(
      executions['Trainer'], 'custom_config') if 'Trainer' in executions else {})
  transform_config = (metadata_store.execution_json_property(executions['Transform'],
                                                             'custom_config')
                      if 'Transform' in executions else None) or {}
  image_size = int(transform_config.get(preprocessing.IMAGE_SIZE_CONFIG_KEY,
                                        features.DEFAULT_IMAGE_SIZE))
  network = trainer_config[trainer_module.NETWORK_KEY]
  sections = []

  # Data
  rows = [[html.escape(split)] + [str(int(counts.get(name, 0))) for name in features.LABEL_NAMES]
          + [str(int(sum(counts.values())))]
          for split, counts in sorted(run.class_counts.items(), key=_split_order)]
  data = _table(['split', *features.LABEL_NAMES, 'total'], rows)
  if run.skipped_files:
    data += (f'<p>{len(run.skipped_files)} input files were skipped:</p><ul>' + ''.join(
        f'<li>{html.escape(row["file"])}: {html.escape(row["reason"])}</li>'
        for row in run.skipped_files) + '</ul>')
  sections.append(('Data', data))

  examples = outputs.get(('ImageExampleGen', 'Examples'))
  if examples is not None:
    samples = sample_images(os.path.join(examples.uri, 'Split-train'), SAMPLES_PER_CLASS)
    draw_samples(samples, image_size, os.path.join(report_dir, 'samples.png'))
    sections.append(('Sample images per class', f'<p class="muted">Training split, as the model '
                     f'sees them ({image_size}×{image_size} px).</p><img src="samples.png" '
                     'alt="sample images per class">'))
    draw_augmented(samples, network, image_size, os.path.join(report_dir, 'augmented.png'))
    sections.append(('Augmented samples', f'<p class="muted">The training augmentation of the '
                     f'<code>{html.escape(network)}</code> network, applied to one training '
                     'image per class.</p><img src="augmented.png" alt="augmented samples">'))

  validation = []
  anomalies = outputs.get(('ExampleValidator', 'ExampleAnomalies'))
  if anomalies is not None:
    for split, lines in read_anomalies(anomalies.uri).items():
      found = ('<span class="pass">no anomalies</span>' if not lines else
               '<span class="fail">anomalies:</span><ul>' + ''.join(
                   f'<li>{html.escape(line)}</li>' for line in lines) + '</ul>')
      validation.append(f'<p>TFDV, split <b>{html.escape(split)}</b>, against the schema '
                        f'inferred from the training split: {found}</p>')
  if run.data_quality:
    validation.append(f'<p>Data quality: {html.escape(format_report_line(run.data_quality))}</p>')
    sheet = os.path.join(run.data_quality_uri, contracts.CONTACT_SHEET_FILE)
    if os.path.isfile(sheet):
      shutil.copyfile(sheet, os.path.join(report_dir, 'contact_sheet.png'))
      validation.append('<p class="muted">Label conflicts first, then the largest '
                        'near-duplicate groups (kept on one side of the split):</p>'
                        '<img class="sheet" src="contact_sheet.png" '
                        'alt="near-duplicate contact sheet">')
  gate = executions.get('DataValidationGate')
  if gate is not None:
    passed = gate.last_known_state in (gate.COMPLETE, gate.CACHED)
    validation.append('<p>Data validation gate: ' + (
        '<span class="pass">passed</span>' if passed else
        '<span class="fail">stopped the run</span>') + '</p>')
  sections.append(('Data validation', ''.join(validation) or '<p>not run</p>'))

  model_run = outputs.get(('Trainer', 'ModelRun'))
  curves = model_run and os.path.join(model_run.uri, trainer_module.TRAINING_CURVES_FILE)
  if curves and os.path.isfile(curves):
    shutil.copyfile(curves, os.path.join(report_dir, 'training_curves.png'))
    epochs = trainer_config[trainer_module.EPOCHS_KEY] or networks.RECIPES[network].epochs
    sections.append(('Training', f'<p>Network <code>{html.escape(network)}</code>, {epochs} '
                     f'epochs, batch size {trainer_config[trainer_module.BATCH_SIZE_KEY]}.</p>'
                     '<img src="training_curves.png" alt="training curves">'))

  if run.metrics:
    metrics = run.metrics
    overall = _table(['metric', 'value'], [
        ['accuracy', _number(metrics.get('sparse_categorical_accuracy'))],
        ['macro-F1', _number(metrics.get('macro_f1'))],
        ['one-vs-rest macro AUC', _number(metrics.get('macro_auc'))],
        ['malignant recall', _number(metrics.get('malignant_recall'))],
        ['examples', str(int(metrics.get('example_count', 0)))]])
    per_class = _table(['class', 'precision', 'recall', 'AUC (one vs rest)'], [
        [name, _number(metrics.get(f'precision_{name}')), _number(metrics.get(f'recall_{name}')),
         _number(metrics.get(f'auc/{name}'))] for name in features.LABEL_NAMES])
    evaluation = f'<p>Eval split, overall.</p>{overall}{per_class}'
    if any(any(row) for row in run.confusion_matrix):
      draw_confusion_matrix(run.confusion_matrix, os.path.join(report_dir, 'confusion_matrix.png'))
      evaluation += '<img src="confusion_matrix.png" alt="confusion matrix">'
    sections.append(('Evaluation', evaluation))

  evaluation_artifact = outputs.get(('Evaluator', 'ModelEvaluation'))
  if evaluation_artifact is not None and 'Evaluator' in executions:
    eval_config = metadata_store.execution_json_property(executions['Evaluator'], 'eval_config')
    rows = blessing_thresholds(eval_config or {}, run.metrics,
                               failed_metrics(evaluation_artifact.uri))
    table = _table(['check', 'value', 'result'], [
        [html.escape(row['check']), _number(row['value']) + (
            f' <span class="muted">({html.escape(row["note"])})</span>' if row.get('note')
            else ''),
         '<span class="pass">passed</span>' if row['passed'] else
         '<span class="fail">failed</span>'] for row in rows])
    decision = ('<p class="pass">Blessed</p>' if run.blessed else
                '<p class="fail">Not blessed</p>')
    sections.append(('Blessing', decision + table))

  if run.pushed_destination:
    pushed = (f'<p>Pushed to <code>{html.escape(run.pushed_destination)}</code>, version '
              f'{html.escape(os.path.basename(run.pushed_destination))}. Serve it with '
              '<code>python -m serving.server --model-base-path '
              f'{html.escape(os.path.dirname(run.pushed_destination))}</code>.</p>')
  else:
    pushed = ('<p>Nothing pushed: the model was not blessed.</p>' if run.blessed is False else
              '<p>Nothing pushed.</p>')
  sections.append(('Pushed', pushed))

  components = _table(['component', 'status', 'seconds'], [
      [component.node_id, component.state, f'{component.seconds:.1f}']
      for component in run.components])
  sections.append(('Components', components))

  body = ''.join(f'<section><h2>{html.escape(title)}</h2>{content}</section>'
                 for title, content in sections)
  page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Pipeline run '
          f'{html.escape(run.run_id)}</title><style>{_STYLE}</style></head><body>'
          f'<h1>Breast-ultrasound pipeline, run {html.escape(run.run_id)}</h1>'
          f'<p class="muted">Read from ML Metadata at {html.escape(metadata_path)}.</p>'
          f'{body}</body></html>')
  index = os.path.join(report_dir, INDEX_FILE)
  with open(index, 'w', encoding='utf-8') as handle:
    handle.write(page)
  return index


def screenshot(index_path: str, png_path: str, width: int = 1200, height: int = 5000) -> None:
  """Renders the page in headless Chromium to a PNG."""
  browser = shutil.which('chromium') or shutil.which('chromium-browser')
  if browser is None:
    raise FileNotFoundError('chromium is not installed (Debian: apt install chromium)')
  # No background networking: on a closed network Chromium's own connections only fail.
  with tempfile.TemporaryDirectory() as profile:
    subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    '--disable-quic', '--no-first-run', '--disable-background-networking',
                    '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
                    f'--window-size={width},{height}',
                    f'--screenshot={os.path.abspath(png_path)}',
                    'file://' + os.path.abspath(index_path)],
                   check=True, capture_output=True, timeout=120)


def main(argv: Optional[List[str]] = None) -> int:
  parser = command_line.OneLineArgumentParser(prog='python -m runs.report',
                                   description='Write the HTML report of a pipeline run.')
  parser.add_argument('--output-dir', default=configs.DEFAULT_OUTPUT_DIR,
                      help="the pipeline's --output-dir (default: %(default)s)")
  parser.add_argument('--run', help='run id (default: the latest run); see '
                      '`python -m runs.inspect runs`')
  parser.add_argument('--screenshot', metavar='PNG',
                      help='also render the page in headless Chromium to this PNG')
  args = parser.parse_args(argv)
  config = configs.PipelineConfig(output_dir=args.output_dir)
  if not os.path.isfile(config.metadata_path):
    print(f'runs.report: error: no ML Metadata at {config.metadata_path}', file=sys.stderr)
    return EXIT_USAGE
  try:
    index = write_report(config.metadata_path, config.report_dir, args.run)
  except ValueError as error:
    print(f'runs.report: error: {error}', file=sys.stderr)
    return EXIT_USAGE
  print(f'report: {index}')
  if args.screenshot:
    try:
      screenshot(index, args.screenshot)
    except (FileNotFoundError, subprocess.SubprocessError) as error:
      print(f'runs.report: error: no screenshot: {error}', file=sys.stderr)
      return 1
    print(f'screenshot: {args.screenshot}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
