"""Training–serving skew: the images the server answered against the data the serving model was
trained on.

    python -m runs.skew --output-dir DIR --request-log-dir LOGS [--json]
        [--max-feature-skew 0.15]

The server logs a sample of its requests (`python -m serving.server --request-log-dir LOGS`,
serving/request_log.py). For each model version that answered logged requests, this command
finds the model in ML Metadata (the Pusher's record of the version), computes the features a
served request has under the schema's SERVING environment (the image-content features, width
and height: what ImageExampleGen records, computed by the same code) for the logged images and
for the training split of every span the model was trained on, and compares them with TFDV's
skew comparators (Jensen–Shannon divergence; `validate_statistics` with `serving_statistics`),
under the schema the model was trained with. It prints one table per version, feature by
feature; with `--json`, the same as JSON. Exit code 0 when no feature is beyond its threshold,
1 when one is (for a monitor to alert on), 2 on a usage error.
"""

import json
import os
import sys
from typing import Any, Dict, List, Optional

from cli import command_line

command_line.prepare_environment()

# pylint: disable=g-import-not-at-top
import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.utils import io_utils

from cli import exclusive_run, reader_flags
from components import contracts
from components.drift_check.component import measurements, with_comparators
from inputs import image_files
from models import features
from orchestration import metadata_connection
from pipeline import configs
from runs import metadata_store
from serving import request_log
# pylint: enable=g-import-not-at-top

SERVING_ENVIRONMENT = 'SERVING'
EXIT_SKEW = 1
_NUMERIC_TYPES = (schema_pb2.INT, schema_pb2.FLOAT)


def served_features(schema: schema_pb2.Schema) -> List[str]:
  """The numeric features a served request has under the schema's SERVING environment (a schema
without one, curated before there were environments: `features.SERVING_KEYS`)."""
  if SERVING_ENVIRONMENT not in schema.default_environment:
    return sorted(feature.name for feature in schema.feature
                  if feature.name in features.SERVING_KEYS and feature.type in _NUMERIC_TYPES)
  return sorted(feature.name for feature in schema.feature
                if SERVING_ENVIRONMENT not in feature.not_in_environment
                and feature.type in _NUMERIC_TYPES)


def image_rows(encoded: List[bytes]) -> List[Dict[str, float]]:
  """The served features of each image that decodes (ImageExampleGen's own code computes them)."""
  rows = []
  for content in encoded:
    try:
      image = image_files.check_image(content)
    except image_files.UnusableFile:
      continue
    width, height = image.size
    rows.append({features.WIDTH_KEY: width, features.HEIGHT_KEY: height,
                 **image_files.content_features(image)})
  return rows


def training_rows(examples_uris: List[str], keys: List[str]) -> List[Dict[str, float]]:
  """The served features of every training example of these Examples artifacts."""
  spec = {key: tf.io.FixedLenFeature([], tf.int64 if key in (features.WIDTH_KEY,
                                                             features.HEIGHT_KEY) else tf.float32)
          for key in keys}
  files = [path for uri in examples_uris for path in sorted(tf.io.gfile.glob(
      os.path.join(uri, f'Split-{contracts.TRAIN_SPLIT}', '*.gz')))]
  rows = []
  for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(256):
    parsed = tf.io.parse_example(batch, spec)
    columns = {key: value.numpy().tolist() for key, value in parsed.items()}
    rows += [dict(zip(columns, values)) for values in zip(*columns.values())]
  return rows


def model_data(store, model_id: int):
  """(the schema the model was trained with, the raw Examples artifacts it was trained on)."""
  trainer, transform = metadata_store.trained_on(store, model_id)
  schema_uri = next(artifact.uri for key, artifact in metadata_store.inputs_of(store, trainer.id)
                    if key == 'schema')
  examples = [artifact for key, artifact in metadata_store.inputs_of(store, transform.id)
              if key == 'examples']
  return io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema_uri)), examples


def compare(training: List[Dict[str, float]], served: List[Dict[str, float]],
            schema: schema_pb2.Schema, keys: List[str], max_feature_skew: float) -> List[dict]:
  """TFDV's skew measurements of `served` against `training`, feature by feature."""
  compared = schema_pb2.Schema()
  compared.feature.extend(feature for feature in schema.feature if feature.name in keys)
  compared = with_comparators(compared, 0.0, max_feature_skew, kind='skew')
  anomalies = tfdv.validate_statistics(
      tfdv.generate_statistics_from_dataframe(pd.DataFrame(training, columns=keys)), compared,
      serving_statistics=tfdv.generate_statistics_from_dataframe(
          pd.DataFrame(served, columns=keys)))
  return measurements(anomalies, kind='skew')


def skew_report(metadata_path, log_dir: str, max_feature_skew: float,
                pipeline_name: Optional[str] = None) -> List[Dict[str, Any]]:
  """One entry per model version that answered logged requests."""
  store = metadata_store.open_store(metadata_path, pipeline_name)
  model_of_version = {int(push.version): push.model for push in metadata_store.pushes(store)
                      if push.model is not None}
  images: Dict[int, List[bytes]] = {}
  requests: Dict[int, int] = {}
  for record in request_log.read_logs(log_dir):
    version, encoded = request_log.encoded_images(record)
    images.setdefault(version, []).extend(encoded)
    requests[version] = requests.get(version, 0) + 1
  report = []
  for version in sorted(images):
    entry: Dict[str, Any] = {'version': version, 'requests': requests[version],
                             'images': len(images[version])}
    model = model_of_version.get(version)
    if model is None:
      entry['problem'] = 'no push of this version is recorded in this output directory'
      report.append(entry)
      continue
    schema, examples = model_data(store, model.id)
    keys = served_features(schema)
    served = image_rows(images[version])
    training = training_rows([artifact.uri for artifact in examples], keys)
    entry.update({'model_id': model.id, 'decoded_images': len(served),
                  'trained_on_spans': sorted(metadata_store.artifact_property(artifact, 'span')
                                             or 0 for artifact in examples),
                  'training_examples': len(training)})
    entry['measurements'] = compare(training, served, schema, keys, max_feature_skew)
    entry['skewed'] = [row['feature'] for row in entry['measurements'] if row['beyond']]
    report.append(entry)
  return report


def format_report(report: List[Dict[str, Any]]) -> str:
  if not report:
    return 'no logged requests'
  lines = []
  for entry in report:
    lines.append(f'version {entry["version"]}: {entry["requests"]} logged request(s), '
                 f'{entry["images"]} image(s)')
    if 'problem' in entry:
      lines.append(f'  not compared: {entry["problem"]}')
      continue
    lines.append(f'  against model {entry["model_id"]}\'s {entry["training_examples"]} training '
                 f'images (span(s) {", ".join(map(str, entry["trained_on_spans"]))}), '
                 f'{entry["decoded_images"]} served image(s) decoded:')
    for row in entry['measurements']:
      verdict = 'SKEWED' if row['beyond'] else 'within'
      lines.append(f'    {row["feature"]:<16} {row["measure"]:<26} {row["distance"]:>7.3f}  '
                   f'{verdict} (threshold {row["threshold"]:g})')
  return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  parser = command_line.OneLineArgumentParser(prog='python -m runs.skew',
                                              description=__doc__.splitlines()[0])
  parser.add_argument('--request-log-dir', required=True,
                      help="the server's --request-log-dir")
  parser.add_argument('--max-feature-skew', type=float,
                      default=configs.PipelineConfig().max_feature_drift,
                      help='the largest Jensen-Shannon divergence of a served feature from '
                      'training (default: %(default)s, the drift threshold)')
  parser.add_argument('--json', action='store_true', help='print JSON instead of tables')
  reader_flags.add_reader_flags(parser)
  args = parser.parse_args(argv)
  config = reader_flags.reader_config(args)
  problem = metadata_connection.reader_problem(config)
  if problem:
    parser.exit(exclusive_run.exit_code_of_problem(config),
                f'{parser.prog}: error: {problem}\n')
  if not tf.io.gfile.isdir(args.request_log_dir):
    parser.error(f'--request-log-dir {args.request_log_dir} does not exist')
  report = skew_report(metadata_connection.reader_location(config), args.request_log_dir,
                       args.max_feature_skew, config.pipeline_name)
  print(json.dumps(report, indent=1) if args.json else format_report(report))
  return EXIT_SKEW if any(entry.get('skewed') for entry in report) else 0


if __name__ == '__main__':
  sys.exit(main())
