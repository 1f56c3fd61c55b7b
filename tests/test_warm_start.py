"""Warm start: a retrain on a new span starts from the newest blessed model's members, leaves the
images that model saw out of the operating point, and an unchanged rerun of it stays cached."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store as mlmd
from ml_metadata.proto import metadata_store_pb2
from PIL import Image
from tfx.types import standard_artifacts

from components.history_strategies import WarmStartModelStrategy
from models import datasets, features, model, networks, warm_start
from runs import metadata_store


def write_stripes(folder, stripes, seed):
  pixels, labels = stripes(60, seed=seed)
  for number, (image, label) in enumerate(zip(pixels, labels)):
    class_folder = folder / features.LABEL_NAMES[label]
    class_folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(
        class_folder / f'{features.LABEL_NAMES[label]} ({number + 1}).png')


def test_groups_the_base_model_saw_are_trained_on_and_never_held_out():
  labels = [0, 1, 2] * 8
  groups = [f'span-1/x{index}' if index < 12 else f'span-2/x{index}' for index in range(24)]
  examples = tf.data.Dataset.from_tensor_slices(
      (tf.zeros([24, 2, 2, 3]), tf.constant(labels, tf.int64), tf.constant(groups)))
  seen = groups[:12]
  folds = datasets.HeldOutFolds(examples, members=2, calibration_percent=15, seen_groups=seen)
  held_out = [group.numpy().decode() for member in range(2)
              for _, _, group in folds.held_out(member)]
  assert sorted(held_out) == sorted(groups[12:])
  for member in range(2):
    trained = {group.numpy().decode() for _, _, group in folds.training(member)}
    assert set(seen) <= trained
  assert folds.seen_held_out == 12
  assert sum(len(labels) for labels in folds.labels_of_fold) == 12
  assert folds.groups == sorted(groups)


def test_a_base_model_of_another_network_or_size_starts_cold(tmp_path):
  recipe = networks.RECIPES['seed']
  member = recipe.build(32, len(features.LABEL_NAMES), **recipe.options)
  model_dir = tmp_path / 'model'
  warm_start.save_members([member], str(model_dir), 'seed', 32, ['a', 'b'])
  serving = str(model_dir / 'Format-Serving')
  base, reason = warm_start.read_base_model(serving, 'seed', 32)
  assert (base.training_groups, len(base.weights), reason) == (['a', 'b'], 1, '')
  base, reason = warm_start.read_base_model(serving, 'seed', 48)
  assert base is None and reason == ('the blessed model is a seed at 32 px, this run trains a '
                                     'seed at 48 px')
  base, reason = warm_start.read_base_model(str(tmp_path / 'older' / 'Format-Serving'), 'seed', 32)
  assert base is None and 'kept no member weights' in reason


@pytest.fixture(scope='module')
def warm_runs(tmp_path_factory, python, project_root, separable_images):
  """Span 1 of stripes trained cold for six epochs, then span 2 warm for one, twice."""
  base = tmp_path_factory.mktemp('warm_start')
  data_root, output_dir = base / 'data', base / 'output'
  write_stripes(data_root / 'span-1', separable_images, seed=0)

  def run(*flags_given):
    completed = subprocess.run(
        [python, 'local_runner.py', '--data-root', str(data_root), '--output-dir',
         str(output_dir), '--image-size', '48', '--ensemble-members', '1', '--min-accuracy', '0',
         '--min-malignant-recall', '0', '--max-calibration-error', '1', '--drift', 'warn',
         *flags_given],
        cwd=project_root, capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed

  cold = run('--epochs', '6')
  write_stripes(data_root / 'span-2', separable_images, seed=1)
  warm = run('--epochs', '6', '--warm-start', '--warm-start-epochs', '1')
  again = run('--epochs', '6', '--warm-start', '--warm-start-epochs', '1')
  return {'output_dir': output_dir, 'cold': cold, 'warm': warm, 'again': again}


def models_and_histories(output_dir):
  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  models = sorted(store.get_artifacts_by_type('Model'), key=lambda found: found.id)
  histories = []
  for model_run in sorted(store.get_artifacts_by_type('ModelRun'), key=lambda found: found.id):
    with open(os.path.join(model_run.uri, model.HISTORY_FILE)) as handle:
      histories.append(json.load(handle))
  return store, models, histories


def test_a_warm_start_begins_from_the_blessed_models_weights(warm_runs):
  store, models, histories = models_and_histories(warm_runs['output_dir'])
  assert len(models) == 2
  cold, warm = models
  record = metadata_store.artifact_property(warm, 'warm_start')
  assert record == {'base_model': cold.uri, 'epochs': 1}
  assert metadata_store.spans_of_model(store, warm.id) == [1, 2]
  [cold_history], [warm_history] = histories
  assert len(warm_history['loss']) == 1
  # The cold start's first epoch is near chance (ln 3 ≈ 1.1); the warm one starts trained.
  assert cold_history['loss'][0] > 0.5
  assert warm_history['loss'][0] < cold_history['loss'][0] / 10
  point = metadata_store.artifact_property(warm, 'operating_point')
  assert point['seen_by_base_model'] > 0  # span 1's calibration images, which the base saw
  assert point['calibration_examples'] > 0  # span 2's
  assert 'warm start: 1 member(s) from' in warm_runs['warm'].stdout
  page = (warm_runs['output_dir'] / 'report' / 'index.html').read_text()
  assert f'every network started from the members of the blessed model <code>{cold.uri}' in page


def test_an_unchanged_warm_rerun_starts_from_the_same_model_and_is_cached(warm_runs):
  store = metadata_store.open_store(str(warm_runs['output_dir'] / 'metadata.sqlite'))
  last = metadata_store.run_contexts(store)[-1]
  states = {component.node_id: component.state
            for component in metadata_store.component_runs(store, last.id)}
  assert states['Trainer'] == 'cached'
  assert {state for node, state in states.items() if not node.endswith('resolver')} == {'cached'}


def test_the_warm_start_is_the_newest_blessed_model_not_trained_on_this_span():
  """WarmStartModelStrategy over a real ML Metadata store with four models, each traced back
  through its Trainer and Transform to the span it trained on: it takes the newest blessed one
  whose lineage does not reach this run's examples."""
  config = metadata_store_pb2.ConnectionConfig()
  config.fake_database.SetInParent()
  store = mlmd.MetadataStore(config)
  artifact_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name='Thing'))
  execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name='Step'))

  def new_artifact():
    return store.put_artifacts([metadata_store_pb2.Artifact(type_id=artifact_type)])[0]

  def step(inputs, output):
    """An execution that read `inputs` and wrote `output` (artifact ids)."""
    events = [(metadata_store_pb2.Artifact(id=artifact_id),
               metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT))
              for artifact_id in inputs]
    events.append((metadata_store_pb2.Artifact(id=output),
                   metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)))
    store.put_execution(metadata_store_pb2.Execution(type_id=execution_type), events, [])

  spans = {span: new_artifact() for span in (1, 2, 3)}  # ImageExampleGen's examples

  def trained_on(span):
    """A model whose Trainer read what Transform made of `span`'s examples."""
    transformed, model_id = new_artifact(), new_artifact()
    step([spans[span]], transformed)
    step([transformed], model_id)
    return model_id

  # Oldest to newest: blessed on span 1, blessed on span 2, refused on span 2, blessed on span 3.
  model_ids = [trained_on(1), trained_on(2), trained_on(2), trained_on(3)]
  blessed = [True, True, False, True]
  models, blessings = [], []
  for model_id, is_blessed in zip(model_ids, blessed):
    models.append(standard_artifacts.Model())
    models[-1].id = model_id
    blessings.append(standard_artifacts.ModelBlessing())
    blessings[-1].id = new_artifact()
    blessings[-1].set_int_custom_property('current_model_id', model_id)
    blessings[-1].set_int_custom_property('blessed', int(is_blessed))

  def warm_start_for(span):
    newest = standard_artifacts.Examples()
    newest.id = spans[span]
    chosen = WarmStartModelStrategy().resolve_artifacts(
        store, {'model': models, 'model_blessing': blessings, 'newest': [newest]})
    return ([model_ids.index(model.id) for model in chosen['model']],
            [blessings.index(blessing) for blessing in chosen['model_blessing']])

  assert warm_start_for(3) == ([1], [1])  # models[2] was refused, models[3] saw span 3
  assert warm_start_for(2) == ([3], [3])  # the newest blessed, trained on another span
  new_span = standard_artifacts.Examples()
  new_span.id = new_artifact()
  spans[4] = new_span.id
  assert warm_start_for(4) == ([3], [3])
  blessings[3].set_int_custom_property('blessed', 0)
  assert warm_start_for(4) == ([1], [1])
  assert warm_start_for(1) == ([1], [1])
  blessings[1].set_int_custom_property('blessed', 0)
  assert warm_start_for(1) == ([], [])  # only span 1's own model is left blessed
