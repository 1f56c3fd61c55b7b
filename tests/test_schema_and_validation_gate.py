"""The curated schema, and the gate that stops a run on anomalies, with real TFDV statistics."""

import os

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tfx.types import standard_artifacts

from components.contracts import ANOMALIES_FILE
from components.curated_schema_gen.component import (SCHEMA_ORIGIN_PROPERTY, Executor,
                                                     curate_schema)
from components.data_validation_gate.component import (DataAnomaliesError,
                                                       check_no_anomalies)
from models import features


def statistics_of(rows):
  return tfdv.generate_statistics_from_dataframe(pd.DataFrame(rows))


def example_rows(count, label_offset=0, mask_count=1):
  return [{
      features.FILENAME_KEY: f'benign/benign ({number}).png',
      features.LABEL_KEY: number % 3 + label_offset,
      features.LABEL_NAME_KEY: features.LABEL_NAMES[number % 3],
      features.HEIGHT_KEY: 256,
      features.WIDTH_KEY: 256,
      features.MASK_COUNT_KEY: mask_count,
  } for number in range(count)]


def test_curated_schema_knows_images_labels_and_not_file_names():
  inferred = tfdv.infer_schema(statistics_of(example_rows(12)))
  assert tfdv.get_domain(inferred, features.FILENAME_KEY)  # TFDV's guess: a file-name enum.
  curated = curate_schema(inferred)
  label = tfdv.get_feature(curated, features.LABEL_KEY)
  assert (label.int_domain.min, label.int_domain.max) == (0, len(features.LABEL_NAMES) - 1)
  assert list(tfdv.get_domain(curated, features.LABEL_NAME_KEY).value) == list(
      features.LABEL_NAMES)
  assert tfdv.get_feature(curated, features.FILENAME_KEY).WhichOneof('domain_info') is None
  assert tfdv.get_feature(curated, features.MASK_COUNT_KEY).int_domain.min == 0
  # New file names and more masks per image are not anomalies; an unknown label is.
  unseen_files = example_rows(5, mask_count=3)
  for row in unseen_files:
    row[features.FILENAME_KEY] = row[features.FILENAME_KEY].replace('benign', 'other')
  assert not tfdv.validate_statistics(statistics_of(unseen_files), curated).anomaly_info
  bad_labels = example_rows(5, label_offset=5)
  anomalies = tfdv.validate_statistics(statistics_of(bad_labels), curated)
  assert features.LABEL_KEY in anomalies.anomaly_info


def write_anomalies(tmp_path, anomalies_by_split):
  artifact = standard_artifacts.ExampleAnomalies()
  artifact.uri = str(tmp_path)
  artifact.split_names = '["' + '","'.join(anomalies_by_split) + '"]'
  for split, anomalies in anomalies_by_split.items():
    os.makedirs(tmp_path / f'Split-{split}')
    (tmp_path / f'Split-{split}' / ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())
  return artifact


def test_gate_names_each_anomaly(tmp_path):
  schema = curate_schema(tfdv.infer_schema(statistics_of(example_rows(12))))
  clean = tfdv.validate_statistics(statistics_of(example_rows(6)), schema)
  broken = tfdv.validate_statistics(statistics_of(example_rows(6, label_offset=4)), schema)
  artifact = write_anomalies(tmp_path, {'train': clean, 'eval': broken})
  with pytest.raises(DataAnomaliesError, match=r"eval: feature 'label'"):
    check_no_anomalies(artifact)


def test_gate_passes_clean_data(tmp_path):
  schema = curate_schema(tfdv.infer_schema(statistics_of(example_rows(12))))
  clean = tfdv.validate_statistics(statistics_of(example_rows(6)), schema)
  check_no_anomalies(write_anomalies(tmp_path, {'train': clean, 'eval': clean}))


def test_statistics_show_image_format_sizes_and_class_counts_per_split(tmp_path):
  from components.image_example_gen import component  # pylint: disable=g-import-not-at-top
  from data import synthetic  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import statistics_options  # pylint: disable=g-import-not-at-top
  synthetic.generate_dataset(str(tmp_path / 'images'), images_per_class=45, image_size=40)
  examples = component.run_executor_directly(str(tmp_path / 'images'), str(tmp_path / 'out'),
                                             eval_percent=20)
  counts = examples.get_json_value_custom_property('class_counts')
  train_files = os.path.join(examples.uri, 'Split-train', '*.gz')
  statistics = tfdv.generate_statistics_from_tfrecord(
      train_files, stats_options=statistics_options()).datasets[0]
  assert statistics.num_examples == 108  # 80% of 135: enough for TFDV's image statistics
  by_name = {feature.path.step[0]: feature for feature in statistics.features}
  image_stats = {stat.name: stat for stat in by_name[features.IMAGE_KEY].custom_stats}
  formats = {bucket.label: bucket.sample_count
             for bucket in image_stats['image_format_histogram'].rank_histogram.buckets}
  assert formats == {'png': 108}
  for key in (features.HEIGHT_KEY, features.WIDTH_KEY):
    assert by_name[key].num_stats.min == by_name[key].num_stats.max == 40
    assert by_name[key].num_stats.histograms
  label_counts = {value.value: value.frequency
                  for value in by_name[features.LABEL_NAME_KEY].string_stats.top_values}
  assert label_counts == counts['train']


def run_curated_schema_gen(tmp_path, name, rows, pinned=None, reinfer=False):
  """CuratedSchemaGen's executor on TFDV statistics of `rows`, as the launcher runs it."""
  statistics = standard_artifacts.ExampleStatistics()
  statistics.uri = str(tmp_path / name / 'statistics')
  statistics.id = len(name)
  statistics.split_names = '["train"]'
  os.makedirs(os.path.join(statistics.uri, 'Split-train'))
  with open(os.path.join(statistics.uri, 'Split-train', 'FeatureStats.pb'), 'wb') as handle:
    handle.write(statistics_of(rows).SerializeToString())
  schema = standard_artifacts.Schema()
  schema.uri = str(tmp_path / name / 'schema')
  os.makedirs(schema.uri)
  inputs = {'statistics': [statistics], **({'pinned_schema': [pinned]} if pinned else {})}
  Executor().Do(inputs, {'schema': [schema]},
                {'infer_feature_shape': 1, 'exclude_splits': '[]', 'reinfer': int(reinfer)})
  return schema, tfdv.load_schema_text(os.path.join(schema.uri, 'schema.pbtxt'))


def test_the_schema_is_kept_once_pinned_and_inferred_again_when_asked(tmp_path):
  first, first_schema = run_curated_schema_gen(tmp_path, 'first', example_rows(12))
  assert first.get_string_custom_property(SCHEMA_ORIGIN_PROPERTY) == 'inferred'
  wider = [{**row, features.MASK_COUNT_KEY: 2, 'scanner': 'new'} for row in example_rows(12)]
  kept, kept_schema = run_curated_schema_gen(tmp_path, 'kept', wider, pinned=first)
  assert kept.get_string_custom_property(SCHEMA_ORIGIN_PROPERTY) == 'pinned'
  assert kept_schema == first_schema
  assert 'scanner' not in {feature.name for feature in kept_schema.feature}
  again, again_schema = run_curated_schema_gen(tmp_path, 'again', wider, pinned=first,
                                               reinfer=True)
  assert again.get_string_custom_property(SCHEMA_ORIGIN_PROPERTY) == 'inferred'
  assert 'scanner' in {feature.name for feature in again_schema.feature}
  # Served requests have the image and what is computed from it, never the label.
  label = tfdv.get_feature(again_schema, features.LABEL_KEY)
  assert list(label.not_in_environment) == ['SERVING']
  assert list(again_schema.default_environment) == ['TRAINING', 'SERVING']
