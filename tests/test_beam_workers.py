"""`--beam-workers 2`: the whole small pipeline with Beam's DirectRunner in multi-processing mode
(every Beam step pickled into two worker processes, as Dataflow, Flink and Spark run it) makes the
same examples, the same schema and the same blessing as the in-process first run (`first_runs`)."""

import glob
import os

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from runs import metadata_store, summary


def examples_by_split(output_dir):
  """{split: sorted serialized tf.Examples} written by ImageExampleGen."""
  found = {}
  for split_dir in glob.glob(os.path.join(output_dir, 'pipeline', 'ImageExampleGen', 'examples',
                                          '*', 'Split-*')):
    files = sorted(glob.glob(os.path.join(split_dir, '*.gz')))
    records = tf.data.TFRecordDataset(files, compression_type='GZIP') if files else []
    # Re-serialized deterministically: a proto map's order on the wire is not fixed.
    found[os.path.basename(split_dir)] = sorted(
        tf.train.Example.FromString(record.numpy()).SerializeToString(deterministic=True)
        for record in records)
  return found


def schema_features(output_dir):
  """The curated schema's features by name (their order follows how statistics came back)."""
  [path] = glob.glob(os.path.join(output_dir, 'pipeline', 'CuratedSchemaGen', '*', '*',
                                  'schema.pbtxt'))
  with open(path, encoding='utf-8') as handle:
    schema = text_format.Parse(handle.read(), schema_pb2.Schema())
  return {feature.name: feature for feature in schema.feature}


def test_two_beam_workers_make_the_same_examples_schema_and_blessing(
    tmp_path, python, project_root, run_pipeline, first_runs):
  output_dir = tmp_path / 'two_workers'
  # The small seed CNN and no on-device model: the Beam components are under test, not the
  # network.
  completed = run_pipeline(python, project_root, first_runs['data_root'], output_dir,
                           '--min-accuracy', '0', '--beam-workers', '2', '--network', 'seed',
                           '--tflite-weights', 'none')
  # Beam's worker processes reported in: the run really was split across processes.
  assert 'sdk_worker_main' in completed.stderr + completed.stdout

  one_worker = examples_by_split(first_runs['output_dir'])
  two_workers = examples_by_split(output_dir)
  assert set(two_workers) == {'Split-train', 'Split-eval', 'Split-excluded'}
  assert sum(map(len, two_workers.values())) == 45
  assert two_workers == one_worker
  two_worker_schema = schema_features(output_dir)
  assert {'image', 'label', 'filename'} <= set(two_worker_schema)
  assert two_worker_schema == schema_features(first_runs['output_dir'])

  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  [run] = metadata_store.run_contexts(store)
  two = summary.summarize_run(str(output_dir / 'metadata.sqlite'), run_id=run.name)
  first_run = metadata_store.run_contexts(metadata_store.open_store(
      first_runs['metadata_path']))[0].name
  one = summary.summarize_run(first_runs['metadata_path'], run_id=first_run)
  assert two.blessed is True and one.blessed is True
  assert two.class_counts == one.class_counts
