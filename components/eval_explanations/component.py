"""EvalExplainer: where the candidate looked, on the eval images it got wrong and a few it got
right.

It runs the trained model's `serving_default` over the eval split, keeps the images it got wrong
(the most confident first, at most `most_wrong`) and `right_per_class` it got right of each class,
and asks the model's `explain` signature for each one's Grad-CAM heat map. The arrays go into an
`EvalExplanations` artifact (explanations.npz), with lineage to the model and the examples, for
the run report to draw; nothing outside the pipeline loads the model to make them. A model
exported without an `explain` signature gets an artifact with no rows.
"""

import io
import os
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components import contracts
from components.artifact_types import EvalExplanations
from components.data_quality.report import read_examples
from models import features

_BATCH = 16


def _in_batches(signature, rows: List[Dict[str, Any]]):
  """(rows, the signature's outputs as arrays) for each batch of rows' encoded images."""
  for start in range(0, len(rows), _BATCH):
    batch = rows[start:start + _BATCH]
    outputs = signature(image_bytes=tf.constant([row['image'] for row in batch]))
    yield batch, {name: value.numpy() for name, value in outputs.items()}


def explain_eval_images(saved_model_dir: str, eval_split_uri: str, most_wrong: int,
                        right_per_class: int) -> List[Dict[str, Any]]:
  """Rows of file, true, predicted (the decision at the operating point), most_probable (the most
  probable class) and confidence (its calibrated probability), review_reason (why the review flag
  sends it to a person first, or ''), heat (the heat map) and pixels (the image as the model saw
  it): the eval images the model got wrong, then those it got right,
  per class."""
  loaded = tf.saved_model.load(saved_model_dir)
  if 'explain' not in loaded.signatures:
    return []
  rows = []
  for example in read_examples(eval_split_uri):
    feature = example.features.feature
    rows.append({'file': feature[features.FILENAME_KEY].bytes_list.value[0].decode(),
                 'true': feature[features.LABEL_NAME_KEY].bytes_list.value[0].decode(),
                 'image': feature[features.IMAGE_KEY].bytes_list.value[0]})
  for batch, outputs in _in_batches(loaded.signatures['serving_default'], rows):
    # A model exported before the answers were told apart calls its decision `label`.
    decisions = outputs['decision'] if 'decision' in outputs else outputs['label']
    # A model exported before the review flag has no reason to give.
    reasons = outputs.get('review_reason', [b''] * len(batch))
    for row, decision, probabilities, reason in zip(batch, decisions, outputs['probabilities'],
                                                    reasons):
      row['predicted'] = decision.decode()
      row['review_reason'] = reason.decode()
      row['most_probable'] = features.LABEL_NAMES[int(np.argmax(probabilities))]
      row['confidence'] = float(np.max(probabilities))
  wrong = sorted((row for row in rows if row['predicted'] != row['true']),
                 key=lambda row: -row['confidence'])[:most_wrong]
  right = [row for name in features.LABEL_NAMES
           for row in [row for row in rows
                       if row['true'] == name and row['predicted'] == name][:right_per_class]]
  chosen = wrong + right
  for batch, outputs in _in_batches(loaded.signatures['explain'], chosen):
    for row, heat, pixels in zip(batch, outputs['heat_map'], outputs['image_pixels']):
      row.update(heat=heat, pixels=pixels)
      del row['image']
  return chosen


def write_explanations(rows: List[Dict[str, Any]], path: str) -> None:
  buffer = io.BytesIO()  # a zip file is written with seeks, which GFile does not do
  # `file` is savez's own argument: the file names are stored as `file_name`.
  np.savez_compressed(
      buffer, file_name=np.array([row['file'] for row in rows], dtype=str),
      true=np.array([row['true'] for row in rows], dtype=str),
      predicted=np.array([row['predicted'] for row in rows], dtype=str),
      most_probable=np.array([row['most_probable'] for row in rows], dtype=str),
      confidence=np.array([row['confidence'] for row in rows], dtype=np.float32),
      review_reason=np.array([row['review_reason'] for row in rows], dtype=str),
      heat=np.array([row['heat'] for row in rows], dtype=np.float32),
      pixels=np.array([row['pixels'] for row in rows], dtype=np.float32))
  with tf.io.gfile.GFile(path, 'wb') as handle:
    handle.write(buffer.getvalue())


def read_explanations(artifact_uri: str) -> List[Dict[str, Any]]:
  """The rows `explain_eval_images` made, as the component wrote them."""
  with tf.io.gfile.GFile(os.path.join(artifact_uri, contracts.EXPLANATIONS_FILE), 'rb') as handle:
    arrays = np.load(io.BytesIO(handle.read()))
    columns = {('file' if name == 'file_name' else name): arrays[name] for name in arrays.files}
  return [{name: (column[index].item() if column[index].ndim == 0 else column[index])
           for name, column in columns.items()} for index in range(len(columns['file']))]


@component
def EvalExplainer(model: InputArtifact[standard_artifacts.Model],
                  examples: InputArtifact[standard_artifacts.Examples],
                  explanations: OutputArtifact[EvalExplanations],
                  most_wrong: Parameter[int] = 8,
                  right_per_class: Parameter[int] = 2,
                  code_version: Parameter[str] = ''):
  """Writes explanations.npz; the custom property `explained` counts its rows."""
  del code_version  # only keys TFX's cache
  rows = explain_eval_images(
      os.path.join(model.uri, contracts.SAVED_MODEL_DIR),
      os.path.join(examples.uri, f'Split-{contracts.EVAL_SPLIT}'), most_wrong, right_per_class)
  write_explanations(rows, os.path.join(explanations.uri, contracts.EXPLANATIONS_FILE))
  explanations.set_int_custom_property(contracts.EXPLAINED_PROPERTY, len(rows))
