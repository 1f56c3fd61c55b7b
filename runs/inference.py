"""Batch inference runs, read from ML Metadata: which model to use, and what each run did.

`pushed_as` finds the Model the Pusher published as a version, with the blessing it was pushed on:
`local_runner.py --infer-dir` classifies with the version a model server would serve (the newest
that loads: serving/model_directory.py) and asks here which model that is. `inference_runs`
describes each run of the inference pipeline (pipeline/inference_pipeline.py): the images it read
and skipped, the model that served it (its artifact, the training run that made it and the version
it was pushed as), and its predictions.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional

import ml_metadata as mlmd

from components import contracts
from components.artifact_types import Predictions
from models import features
from runs import metadata_store
from runs.metadata_store import artifact_property


@dataclasses.dataclass
class PushedModel:
  model_uri: str
  model_blessing_uri: str
  model_id: int
  version: str


def pushed_as(store: mlmd.MetadataStore, version: int) -> Optional[PushedModel]:
  """The model the Pusher published as `version`, with the blessing it was pushed on; None when
  ML Metadata records no such push (a version copied into the serving directory by hand)."""
  for push in reversed(metadata_store.pushes(store)):
    if (push.model is not None and push.model_blessing is not None
        and str(push.version) == str(version)):
      return PushedModel(push.model.uri, push.model_blessing.uri, push.model.id, push.version)
  return None


def inference_runs(store: mlmd.MetadataStore) -> List[Dict[str, Any]]:
  """Every inference run, oldest first: its state, images, model and predictions."""
  versions = {push.model.id: push.version for push in metadata_store.pushes(store)
              if push.model is not None}
  rows = []
  for context in metadata_store.run_contexts(store, inference=True):
    components = metadata_store.component_runs(store, context.id)
    row = {'run': context.name, 'state': 'complete', 'images': None, 'skipped': [],
           'model_id': None, 'model_run': None, 'model_version': None, 'predictions': None,
           'predictions_id': None,
           'decision_counts': None, 'review_count': None, 'input': None}
    for component in components:
      if component.state not in ('complete', 'cached'):
        row['state'] = component.state
      execution = store.get_executions_by_id([component.execution_id])[0]
      if component.node_id == 'UnlabelledImageExampleGen':
        input_base = execution.custom_properties.get('input_base')
        row['input'] = input_base.string_value if input_base else None
      for key, artifact in metadata_store.inputs_of(store, component.execution_id):
        if component.node_id == 'BulkInferrer' and key == 'model':
          producer = metadata_store.producer_of(store, artifact.id)
          row.update(model_id=artifact.id, model_version=versions.get(artifact.id),
                     model_run=metadata_store.run_of(store, producer.id) if producer else None)
      for component_run, type_name, artifact in metadata_store.run_outputs(store, [component]):
        if type_name == 'Examples':
          row['images'] = artifact_property(artifact, contracts.EXAMPLE_COUNT_PROPERTY)
          row['skipped'] = artifact_property(artifact, contracts.SKIPPED_FILES_PROPERTY) or []
        elif type_name == Predictions.TYPE_NAME:
          row['predictions'] = os.path.join(artifact.uri, contracts.PREDICTIONS_CSV_FILE)
          row['predictions_id'] = artifact.id
          counts = artifact_property(artifact, 'decision_counts') or {}
          row['decision_counts'] = {name: int(counts[name]) for name in features.LABEL_NAMES
                                 if name in counts}
          row['review_count'] = artifact_property(artifact, 'review_count')
    rows.append(row)
  return rows


def format_inference_run(row: Dict[str, Any]) -> str:
  """The end-of-run lines of an inference run."""
  lines = [f'Inference run {row["run"]}: {row["state"]}',
           f'  model: artifact {row["model_id"]} (trained in run {row["model_run"]}, pushed as '
           f'version {row["model_version"]})',
           f'  images classified: {row["images"]}'
           + (f'; skipped {len(row["skipped"])}:' if row['skipped'] else '')]
  lines += [f'    {skipped["file"]}: {skipped["reason"]}' for skipped in row['skipped']]
  if row['decision_counts']:
    lines.append('  decisions at the operating point: ' + ', '.join(
        f'{name} {count}' for name, count in row['decision_counts'].items())
        + ('' if row['review_count'] is None else
           f'; {int(row["review_count"])} flagged for review (a person looks first)'))
  if row['predictions']:
    lines.append(f'  predictions: {row["predictions"]}')
    lines.append('               ' + os.path.join(os.path.dirname(row['predictions']),
                                                 contracts.PREDICTIONS_JSONL_FILE))
  return '\n'.join(lines)
