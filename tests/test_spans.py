"""New scans arriving as spans: ingestion a span at a time with copies routed across spans, the
resolvers over earlier runs, drift between spans stopping (or warning) a run, the pinned schema
refusing a span, and the spans a model was trained and evaluated on, read back everywhere."""

import json
import os
import shutil
import subprocess

import conftest
import pytest
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import standard_artifacts
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.utils import io_utils

from cli import flags
from components import contracts
from components.data_quality import report
from components.history_strategies import (INFERRED_FROM_PROPERTY, LatestSpansStrategy,
                                           PinnedSchemaStrategy, PreviousSpanStatisticsStrategy)
from components.image_example_gen import component, driver
from data import synthetic
from inputs import image_files
from models import features
from runs import metadata_store

SPLITS = (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT, contracts.EXCLUDED_SPLIT)
# Copies of span-1 images placed in span 2 (one under another label).
COPIES = {'span-2/benign/copy of benign (1).png': 'span-1/benign/benign (1).png',
          'span-2/malignant/copy of malignant (2).png': 'span-1/malignant/malignant (2).png',
          'span-2/benign/copy of benign (3).png': 'span-1/benign/benign (3).png'}  # an eval image
RELABELLED = ('span-2/malignant/relabelled benign (5).png', 'span-1/benign/benign (5).png')


def make_span(data_root, span, drifted=False):
  """Span 1: 12 images a class. Span 2, drifted: 30 malignant, 12 benign, 4 normal, every
  grey level halved (a darker scanner), and copies of span-1 images."""
  folder = os.path.join(str(data_root), f'span-{span}')
  if not drifted:
    synthetic.generate_dataset(folder, images_per_class=12, image_size=64, seed=3)
    return
  synthetic.generate_dataset(folder, images_per_class=12, image_size=64, seed=4,
                             class_counts={'malignant': 30, 'normal': 4}, gain=0.5)
  for copy, source in [*COPIES.items(), RELABELLED]:
    shutil.copy(os.path.join(str(data_root), source), os.path.join(str(data_root), copy))


def split_of_files(examples_uri):
  rows = report.read_image_rows({split: os.path.join(examples_uri, f'Split-{split}')
                                 for split in SPLITS})
  return {row.file: row for row in rows}


def test_a_span_is_ingested_with_copies_of_older_images_in_their_split(tmp_path):
  make_span(tmp_path / 'data', 1)
  first = component.run_executor_directly(str(tmp_path / 'data'), str(tmp_path / 'span1'))
  make_span(tmp_path / 'data', 2, drifted=True)
  second = component.run_executor_directly(str(tmp_path / 'data'), str(tmp_path / 'span2'))

  assert (first.get_int_custom_property('span'), second.get_int_custom_property('span')) == (1, 2)
  then, now = split_of_files(first.uri), split_of_files(second.uri)
  assert all(file.startswith('span-1/') for file in then)
  assert all(file.startswith('span-2/') for file in now)  # the newest span alone is written
  assert len(now) == 30 + 12 + 4 + len(COPIES) + 1
  for copy, source in COPIES.items():
    assert (now[copy].split, now[copy].group) == (then[source].split, source)
  assert {then[source].split for source in COPIES.values()} == {'train', 'eval'}
  relabelled, source = RELABELLED
  assert (now[relabelled].split, now[relabelled].group) == ('excluded', source)

  # The data-quality report sees the span-1 images the copies joined: the relabelled copy is a
  # label conflict, excluded as the policy says, and nothing leaks across the split.
  quality = report.build_report(list(now.values()) + report.read_older_span_rows(second.uri),
                                max_hash_distance=8, label_conflict_policy='exclude')
  assert quality['image_count'] == len(now)
  assert quality['older_span_companion_count'] == len(COPIES) + 1
  assert quality['label_conflict_count'] == 1
  assert (quality['cross_split_leak_count'], quality['violations']) == (0, [])


def test_a_data_root_of_spans_is_checked_by_its_newest_span(tmp_path):
  make_span(tmp_path / 'data', 1)
  assert flags.check_data_root(str(tmp_path / 'data')) is None
  (tmp_path / 'data' / 'span-2' / 'benign').mkdir(parents=True)
  assert 'no images in class folders' in flags.check_data_root(str(tmp_path / 'data'))
  shutil.rmtree(tmp_path / 'data' / 'span-2')
  (tmp_path / 'data' / 'benign').mkdir()
  problem = flags.check_data_root(str(tmp_path / 'data'))
  assert 'span folders and other folders side by side: benign' in problem
  with pytest.raises(image_files.SpanLayoutError, match='side by side'):
    image_files.span_folders(str(tmp_path / 'data'))


def artifact(artifact_type, artifact_id, **custom):
  made = artifact_type()
  made.id = artifact_id
  for name, value in custom.items():
    if isinstance(value, int):
      made.set_int_custom_property(name, value)
    else:
      made.set_string_custom_property(name, value)
  return made


def test_the_spans_trained_on_are_one_artifact_per_span_of_the_same_data_root():
  examples = [artifact(standard_artifacts.Examples, 1, span=1, data_root='/a'),
              artifact(standard_artifacts.Examples, 2, span=2, data_root='/a'),
              artifact(standard_artifacts.Examples, 3, span=1, data_root='/a'),  # re-ingested
              artifact(standard_artifacts.Examples, 4, span=2, data_root='/b'),
              artifact(standard_artifacts.Examples, 5, span=3, data_root='/a')]
  newest = [examples[4]]
  resolved = LatestSpansStrategy().resolve_artifacts(None, {'examples': examples,
                                                              'newest': newest})
  assert [found.id for found in resolved['examples']] == [5, 2, 3]
  resolved = LatestSpansStrategy(num_spans=2).resolve_artifacts(
      None, {'examples': examples, 'newest': newest})
  assert [found.id for found in resolved['examples']] == [5, 2]
  # A rerun whose ImageExampleGen was cached trains on what it produced, not on a newer
  # artifact of its span.
  resolved = LatestSpansStrategy().resolve_artifacts(None, {'examples': examples,
                                                              'newest': [examples[0]]})
  assert [found.id for found in resolved['examples']] == [1]


def test_drift_is_measured_against_the_newest_older_span():
  statistics = [artifact(standard_artifacts.ExampleStatistics, number, span=span)
                for number, span in ((1, 1), (2, 2), (3, 1), (4, 3))]
  resolved = PreviousSpanStatisticsStrategy().resolve_artifacts(
      None, {'statistics': statistics, 'newest': [statistics[3]]})
  assert [found.id for found in resolved['statistics']] == [2]
  resolved = PreviousSpanStatisticsStrategy().resolve_artifacts(
      None, {'statistics': statistics, 'newest': [statistics[0]]})
  assert resolved['statistics'] == []


def test_the_pinned_schema_is_the_newest_inferred_unless_inferred_from_these_statistics():
  schemas = [artifact(standard_artifacts.Schema, 10, **{INFERRED_FROM_PROPERTY: 1}),
             artifact(standard_artifacts.Schema, 11),  # a kept copy
             artifact(standard_artifacts.Schema, 12, **{INFERRED_FROM_PROPERTY: 5})]
  later = [artifact(standard_artifacts.ExampleStatistics, 7)]
  resolved = PinnedSchemaStrategy().resolve_artifacts(None, {'schema': schemas, 'newest': later})
  assert [found.id for found in resolved['schema']] == [12]
  # A rerun on the statistics the pinned schema came from infers it again, as the run before
  # it did, and so stays cached.
  same = [artifact(standard_artifacts.ExampleStatistics, 5)]
  resolved = PinnedSchemaStrategy().resolve_artifacts(None, {'schema': schemas, 'newest': same})
  assert resolved['schema'] == []


def local_runner(python, project_root, data_root, output_dir, *flags_given):
  return subprocess.run(
      [python, 'local_runner.py', '--data-root', str(data_root), '--output-dir',
       str(output_dir), '--epochs', '2', '--image-size', '48', '--ensemble-members', '1',
       '--min-accuracy', '0', '--min-malignant-recall', '0', '--max-calibration-error', '1',
       *conftest.SMALL_NETWORK, *flags_given],
      cwd=project_root, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope='module')
def span_runs(tmp_path_factory, python, project_root):
  """Span 1, then a drifted span 2: the run that stops on the drift, the run that only warns,
  and a run refused by a schema file whose width domain the images lie outside; then span 3,
  from the same darker scanner and mix of classes as span 2, under the default `--drift stop`:
  the negative control, which must train and push; last span 4, refused by the first run's
  pinned schema once it has that width domain."""
  base = tmp_path_factory.mktemp('spans')
  data_root, output_dir = base / 'data', base / 'output'
  make_span(data_root, 1)
  first = local_runner(python, project_root, data_root, output_dir)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  make_span(data_root, 2, drifted=True)
  stopped = local_runner(python, project_root, data_root, output_dir)
  warned = local_runner(python, project_root, data_root, output_dir, '--drift', 'warn')
  assert warned.returncode == 0, warned.stdout[-3000:] + warned.stderr[-3000:]

  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  schemas = sorted(store.get_artifacts_by_type('Schema'), key=lambda found: found.id)
  pinned = io_utils.SchemaReader().read(os.path.join(schemas[0].uri, 'schema.pbtxt'))
  for feature in pinned.feature:
    if feature.name == features.WIDTH_KEY:
      feature.int_domain.CopyFrom(schema_pb2.IntDomain(min=100))
  schema_file = base / 'schema.pbtxt'
  io_utils.write_pbtxt_file(str(schema_file), pinned)
  refused = local_runner(python, project_root, data_root, output_dir, '--drift', 'warn',
                         '--schema-file', str(schema_file))
  synthetic.generate_dataset(str(data_root / 'span-3'), images_per_class=12, image_size=64,
                             seed=5, class_counts={'malignant': 30, 'normal': 4}, gain=0.5)
  # Two-epoch networks on 48-pixel images: whether one beats the last is chance, so the paired
  # gate against it is opened; the drift check under test is not.
  undrifted = local_runner(python, project_root, data_root, output_dir,
                           '--non-inferiority-margin', '1')
  undrifted_report = (output_dir / 'report' / 'index.html').read_text()
  # The schema the first run pinned validates every later span: narrowed to the same width
  # domain, as a curator might narrow it, it refuses span 4 (from the same scanner as span 3).
  io_utils.write_pbtxt_file(os.path.join(schemas[0].uri, 'schema.pbtxt'), pinned)
  synthetic.generate_dataset(str(data_root / 'span-4'), images_per_class=12, image_size=64,
                             seed=6, class_counts={'malignant': 30, 'normal': 4}, gain=0.5)
  refused_by_pinned = local_runner(python, project_root, data_root, output_dir, '--drift', 'warn')
  return {'data_root': data_root, 'output_dir': output_dir, 'first': first,
          'stopped': stopped, 'warned': warned, 'refused': refused, 'undrifted': undrifted,
          'undrifted_report': undrifted_report, 'refused_by_pinned': refused_by_pinned,
          'pinned_schema': pinned}


def test_drift_stops_the_run_naming_the_label_distribution_and_the_darker_images(span_runs):
  stopped = span_runs['stopped']
  assert stopped.returncode == 1
  last_line = stopped.stderr.strip().splitlines()[-1]
  assert last_line.startswith('local_runner.py: pipeline failed: DataDriftError: data drift: '
                              'span 2 against 1:')
  assert 'label_name drifted, L-infinity distance' in last_line
  assert 'mean_intensity drifted, Jensen-Shannon divergence' in last_line
  assert 'Traceback' not in stopped.stderr
  store = metadata_store.open_store(str(span_runs['output_dir'] / 'metadata.sqlite'))
  run = metadata_store.run_contexts(store)[1]
  states = {component.node_id: component.state
            for component in metadata_store.component_runs(store, run.id)}
  assert states['DataValidationGate'] == 'failed'
  assert 'Trainer' not in states  # stopped before training


def test_with_the_warn_flag_the_drifted_span_is_trained_on_with_the_first(span_runs):
  summary = span_runs['warned'].stdout
  assert 'span 2 ingested; trained on span(s) 1, 2; evaluated on the eval split of span(s) 1, 2' \
      in summary
  assert 'drift of span 2 from span 1 (train split):' in summary
  drifted = [line.split()[0] for line in summary.splitlines() if 'DRIFTED' in line]
  assert {'label_name', 'mean_intensity', 'dark_fraction'} <= set(drifted)
  assert 'width' not in drifted

  store = metadata_store.open_store(str(span_runs['output_dir'] / 'metadata.sqlite'))
  drift = [found for found in store.get_artifacts_by_type('breast_ultrasound.DriftReport')
           if metadata_store.artifact_property(found, 'compared_spans') == '2 against 1']
  assert drift and metadata_store.artifact_property(drift[-1], 'drifted')
  [model] = [found for found in store.get_artifacts_by_type('Model')
             if metadata_store.spans_of_model(store, found.id) == [1, 2]]
  assert model is not None


def test_copies_of_span_one_images_land_in_span_ones_split_in_the_pipeline(span_runs):
  store = metadata_store.open_store(str(span_runs['output_dir'] / 'metadata.sqlite'))
  examples = {metadata_store.artifact_property(found, 'span'): found
              for found in store.get_artifacts_by_type('Examples')
              if metadata_store.artifact_property(found, 'span')}
  then, now = split_of_files(examples[1].uri), split_of_files(examples[2].uri)
  for copy, source in COPIES.items():
    assert now[copy].split == then[source].split
  assert now[RELABELLED[0]].split == 'excluded'


def test_later_spans_are_validated_against_the_first_runs_schema(span_runs):
  store = metadata_store.open_store(str(span_runs['output_dir'] / 'metadata.sqlite'))
  schemas = sorted(store.get_artifacts_by_type('Schema'), key=lambda found: found.id)
  origins = [metadata_store.artifact_property(found, 'schema_origin') for found in schemas]
  # The stopped run kept the first run's schema and the warned run reused that execution; the
  # refused run imported its schema file; span 3's and span 4's runs kept the first run's
  # schema again (narrowed before span 4's: test_a_span_outside_the_pinned_schema_...).
  assert origins == ['inferred', 'pinned', None, 'pinned', 'pinned']
  kept = [io_utils.SchemaReader().read(os.path.join(schemas[index].uri, 'schema.pbtxt'))
          for index in (1, 3, 4)]
  assert kept[0] == kept[1] != kept[2] == span_runs['pinned_schema']


def test_a_span_outside_the_given_schema_is_refused_naming_the_span_feature_and_value(span_runs):
  refused = span_runs['refused']
  assert refused.returncode == 1
  last_line = refused.stderr.strip().splitlines()[-1]
  assert 'DataAnomaliesError: data validation failed: span 2 train: feature \'width\'' in last_line
  assert '64' in last_line


def test_a_span_outside_the_pinned_schema_is_refused(span_runs):
  """No schema file given: span 4 is validated against the schema the first run pinned, whose
  width domain (narrowed after span 3's run) its 64-pixel images lie outside. A run that
  inferred its schema afresh would pass."""
  refused = span_runs['refused_by_pinned']
  assert refused.returncode == 1
  last_line = refused.stderr.strip().splitlines()[-1]
  assert 'DataAnomaliesError: data validation failed: span 4 train: feature \'width\'' in last_line
  assert '64' in last_line
  store = metadata_store.open_store(str(span_runs['output_dir'] / 'metadata.sqlite'))
  run = metadata_store.run_contexts(store)[-1]
  states = {component.node_id: component.state
            for component in metadata_store.component_runs(store, run.id)}
  assert states['DataValidationGate'] == 'failed' and 'Trainer' not in states


def test_the_inspector_and_the_report_show_each_span_and_its_drift(span_runs, python,
                                                                    project_root):
  listed = subprocess.run(
      [python, '-m', 'runs.inspect', '--output-dir', str(span_runs['output_dir']), '--json',
       'spans'], cwd=project_root, capture_output=True, text=True, timeout=300, check=True)
  rows = json.loads(listed.stdout)
  assert [row['span'] for row in rows] == [1, 2, 3, 4]
  assert rows[0]['compared_with_span'] is None
  assert rows[1]['compared_with_span'] == 1
  assert any('label_name drifted' in line for line in rows[1]['drifted'])
  assert rows[2]['compared_with_span'] == 2 and rows[2]['drifted'] == []
  models = subprocess.run(
      [python, '-m', 'runs.inspect', '--output-dir', str(span_runs['output_dir']), '--json',
       'models'], cwd=project_root, capture_output=True, text=True, timeout=300, check=True)
  assert [row['trained_spans'] for row in json.loads(models.stdout)] == [[1], [1, 2], [1, 2, 3]]
  page = span_runs['undrifted_report']  # the page after span 3's run
  assert 'Drift of span 3 from span 2' in page
  assert 'This run ingested <b>span 3</b>' in page


def test_an_undrifted_span_trains_and_pushes_under_the_default_drift_stop(span_runs):
  """The negative control of the drift check: span 3 is like span 2, so a check that always
  fired would stop this run."""
  undrifted = span_runs['undrifted']
  assert undrifted.returncode == 0, undrifted.stdout[-3000:] + undrifted.stderr[-3000:]
  assert 'drift of span 3 from span 2 (train split):' in undrifted.stdout
  assert 'DRIFTED' not in undrifted.stdout
  store = metadata_store.open_store(str(span_runs['output_dir'] / 'metadata.sqlite'))
  run = metadata_store.run_contexts(store)[-2]  # span 4's run is the last
  states = {component.node_id: component.state
            for component in metadata_store.component_runs(store, run.id)}
  assert states['DataValidationGate'] == states['Trainer'] == states['Pusher'] == 'complete'
  [model] = [found for found in store.get_artifacts_by_type('Model')
             if metadata_store.spans_of_model(store, found.id) == [1, 2, 3]]
  assert metadata_store.pushes(store)[-1].model.id == model.id


def test_the_newest_span_is_ingested_unless_another_is_named(tmp_path):
  make_span(tmp_path / 'data', 1)
  make_span(tmp_path / 'data', 2, drifted=True)
  splits = [example_gen_pb2.Input.Split(name='images', pattern=component.DEFAULT_INPUT_PATTERN)]

  def processor(span=None):
    ranges = None if span is None else range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span))
    return driver.ImageFolderInputProcessor(str(tmp_path / 'data'), splits, ranges)

  newest = processor()
  assert newest.resolve_span_and_version() == (2, None)
  assert newest.get_pattern_for_span_version('*/*', 2, None) == 'span-2/*/*'
  assert processor(1).resolve_span_and_version() == (1, None)
  with pytest.raises(image_files.SpanLayoutError, match='there is no folder span-5'):
    processor(5).resolve_span_and_version()
  older = component.run_executor_directly(str(tmp_path / 'data'), str(tmp_path / 'out'), span=1)
  assert older.get_int_custom_property('span') == 1
  assert all(file.startswith('span-1/') for file in split_of_files(older.uri))
