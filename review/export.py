"""A reviewed batch inference run exported as the next span of a data root, recorded in ML
Metadata.

`export_span` copies every image a reviewer labelled benign, malignant or normal from the run's
input folder into `<data root>/span-<N>/<label>/` (N one above the newest span; 1 for an empty or
new data root), so the next `local_runner.py` run ingests them as it ingests any new span: their
near-duplicate groups reach into the older spans, the drift check compares them with the span
before. Images reviewed as not usable, or flagged for a second look, are left out and counted. The span folder appears whole or
not at all (written under a hidden name, then renamed). A file's name in the span is its path in
the input folder with `/` as `__` (`nested/IM0001` → `nested__IM0001`).

The export is recorded in ML Metadata as a `ReviewExport` execution in the inference run's
context (and its pipeline's), whose inputs are the run's Predictions and the Model that made them and whose output is
the `ReviewedSpan` (the span folder, with how many images of each label, how many reviews agreed
with the model's decision, and who reviewed): the lineage from a training example back to the
model whose call a clinician corrected.
"""

import dataclasses
import json
import os
import shutil
from typing import Any, Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from components import contracts
from inputs import image_files
from models import features
from review import reviews as review_records
from runs import metadata_store

EXPORT_EXECUTION_TYPE = 'breast_ultrasound.ReviewExport'
REVIEWED_SPAN_TYPE = 'breast_ultrasound.ReviewedSpan'


@dataclasses.dataclass
class ExportedSpan:
  span: int
  folder: str
  counts: Dict[str, int]  # exported images per label
  left_out: Dict[str, List[str]]  # files left out, by their review (not usable, second look)
  agreed: int  # reviews whose label is the model's decision
  reviewers: List[str]
  artifact_id: Optional[int] = None


def answers_of(run: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
  """{file: the model's answer} of an inference run (runs/inference.py's row)."""
  if not run.get('predictions'):
    raise review_records.ReviewError(f'batch inference run {run["run"]} recorded no predictions')
  path = os.path.join(os.path.dirname(run['predictions']), contracts.PREDICTIONS_JSONL_FILE)
  with open(path, encoding='utf-8') as handle:
    rows = [json.loads(line) for line in handle if line.strip()]
  return {row['path']: row for row in rows}


def next_span(data_root: str) -> int:
  """The span number an export adds; ReviewError for a data root whose class folders sit at its
  top (a span beside them would be refused)."""
  if not os.path.isdir(data_root) or not os.listdir(data_root):
    return 1
  spans = image_files.span_folders(data_root)
  if spans:
    return max(spans) + 1
  classes, _ = image_files.list_data_root(data_root)
  if classes:
    raise review_records.ReviewError(
        f'{data_root} has class folders at its top ({", ".join(classes)}): move them into '
        f'{data_root}/span-1/ first, so that the reviewed images can be its span 2')
  return 1


def _destination_name(file: str) -> str:
  return file.replace('/', '__')


def export_span(output_dir: str, run: Dict[str, Any], data_root: str) -> ExportedSpan:
  """Copies the run's reviewed images into the data root's next span (module docstring);
  ReviewError when there is nothing to export or the span would lack a class."""
  reviews = review_records.read_reviews(output_dir, run['run'])
  if not reviews:
    raise review_records.ReviewError(f'batch inference run {run["run"]} has no reviews yet')
  input_folder = run['input']
  labelled = [review for review in reviews if review.label in features.LABEL_NAMES]
  gone = [review.file for review in labelled
          if not os.path.isfile(os.path.join(input_folder, review.file))]
  if gone:
    raise review_records.ReviewError(
        f'{len(gone)} reviewed image(s) are no longer in {input_folder}: {", ".join(gone[:5])}')
  missing = [name for name in features.LABEL_NAMES
             if not any(review.label == name for review in labelled)]
  if missing:
    raise review_records.ReviewError(
        f'no image is reviewed as {", ".join(missing)}: a span needs every class (the pipeline '
        'refuses one without), so review more images of run ' + run['run'])
  span = next_span(data_root)
  folder = os.path.join(data_root, f'span-{span}')
  partial = os.path.join(data_root, f'.span-{span}.partial')
  shutil.rmtree(partial, ignore_errors=True)  # a killed export's
  for review in labelled:
    destination = os.path.join(partial, review.label, _destination_name(review.file))
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copy2(os.path.join(input_folder, review.file), destination)
  os.replace(partial, folder)
  return ExportedSpan(
      span=span, folder=folder,
      counts={name: sum(review.label == name for review in labelled)
              for name in features.LABEL_NAMES},
      left_out={label: [review.file for review in reviews if review.label == label]
                for label in review_records.NO_CLASS},
      agreed=sum(review.label == review.answer.get('decision') for review in reviews),
      reviewers=sorted({review.reviewer for review in reviews}))


def _json_value(value: Any) -> metadata_store_pb2.Value:
  proto = metadata_store_pb2.Value()
  proto.string_value = json.dumps(value)
  return proto


def record_export(store: mlmd.MetadataStore, run: Dict[str, Any],
                  exported: ExportedSpan) -> int:
  """Records the export in ML Metadata (module docstring); returns the ReviewedSpan's id."""
  artifact_type = store.put_artifact_type(
      metadata_store_pb2.ArtifactType(name=REVIEWED_SPAN_TYPE), can_add_fields=True)
  execution_type = store.put_execution_type(
      metadata_store_pb2.ExecutionType(name=EXPORT_EXECUTION_TYPE), can_add_fields=True)
  artifact = metadata_store_pb2.Artifact(type_id=artifact_type, uri=exported.folder,
                                         state=metadata_store_pb2.Artifact.LIVE)
  execution = metadata_store_pb2.Execution(
      type_id=execution_type, last_known_state=metadata_store_pb2.Execution.COMPLETE)
  facts = {'span': exported.span, 'inference_run': run['run'], 'label_counts': exported.counts,
           'left_out': {label: len(files) for label, files in exported.left_out.items()},
           'agreed_with_decision': exported.agreed,
           'reviewers': exported.reviewers}
  for proto in (artifact, execution):
    for name, value in facts.items():
      proto.custom_properties[name].CopyFrom(_json_value(value))
  inputs = store.get_artifacts_by_id([run['predictions_id'], run['model_id']])
  pairs = [(artifact, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT))]
  pairs += [(found, metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT))
            for found in inputs]
  contexts = [context for context in metadata_store.run_contexts(store, inference=True)
              if context.name == run['run']]
  # The inference pipeline's own context too, as every execution of its runs has.
  contexts += [store.get_context_by_type_and_name(
      metadata_store.PIPELINE_CONTEXT, metadata_store.pipeline_of_run(store, context))
               for context in contexts]
  _, [artifact_id, *_], _ = store.put_execution(execution, pairs, contexts)
  return artifact_id

