"""The facts of a run report, gathered from ML Metadata and the artifacts it points to.

Nothing here draws or writes HTML: `gather_report_facts` answers what the run did (data, data
validation, training, evaluation, blessing, push) as plain values, which `report_pictures.py`
draws and `report.py` renders.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from components import contracts
from components.artifact_types import EvalExplanations
from components.curated_schema_gen.component import SCHEMA_ORIGIN_PROPERTY
from components.data_quality.report import format_report_line, read_examples
from components.data_validation_gate.anomalies import read_anomalies
from components.eval_explanations.component import read_explanations
from evaluation import blessing, results
from models import backbones, features, model as trainer_module, networks, preprocessing
from runs import metadata_store, summary

SAMPLES_PER_CLASS = 6


@dataclasses.dataclass
class ReportFacts:
  run: summary.RunSummary
  metadata_location: str  # a path or a URL, never a password
  image_size: int
  network: str
  epochs: int
  batch_size: int
  ensemble_members: int = 1
  pretrained_weights: Optional[str] = None  # a pretrained backbone's: models/backbones.py
  # Up to SAMPLES_PER_CLASS (file name, encoded bytes) training images of each class.
  samples: Dict[str, List[Tuple[str, bytes]]] = dataclasses.field(default_factory=dict)
  # {split: anomaly lines}; None when ExampleValidator did not run.
  anomalies: Optional[Dict[str, List[str]]] = None
  data_quality_line: Optional[str] = None
  contact_sheet_path: Optional[str] = None
  gate_passed: Optional[bool] = None  # DataValidationGate; None when it did not run
  # What the examples were validated against: the schema this run inferred, an earlier run's
  # (pinned) or an imported file.
  schema_origin: Optional[str] = None
  training_curves_path: Optional[str] = None
  blessing_checks: Optional[List[blessing.BlessingCheck]] = None  # None when nothing was evaluated
  # The Evaluator's arrays: reliability diagrams before and after calibration, the ROC curve.
  evaluation_arrays: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # Eval images the model got wrong, and a few it got right per class, with Grad-CAM, as the
  # pipeline's EvalExplainer recorded them: dicts of file, true and predicted label,
  # confidence, heat map and the pixels the model saw.
  explained: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  # Where `samples` and `explained` come from; `add_picture_sources` reads them (the slow part).
  train_examples_uri: Optional[str] = None
  explanations_uri: Optional[str] = None
  # (id, creation time in ms) of every artifact the run's components output: a report drawn
  # for the same artifacts shows the same pictures (a cached rerun outputs the same ones).
  output_artifacts: List[Tuple[int, int]] = dataclasses.field(default_factory=list)

  @property
  def class_count_rows(self) -> List[Tuple[str, List[int], int]]:
    """(split, images per class in vocabulary order, total), train first, then eval."""
    order = (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT)
    splits = sorted(self.run.class_counts, key=lambda split: (
        order.index(split) if split in order else len(order), split))
    rows = []
    for split in splits:
      counts = [int(self.run.class_counts[split].get(name, 0)) for name in features.LABEL_NAMES]
      rows.append((split, counts, sum(counts)))
    return rows


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


def _existing(path: Optional[str]) -> Optional[str]:
  return path if path and tf.io.gfile.exists(path) else None


def gather_report_facts(metadata_path, run_id: Optional[str] = None,
                        with_picture_sources: bool = True,
                        pipeline_name: Optional[str] = None,
                        output_dir: Optional[str] = None) -> ReportFacts:
  """Everything the report of a run (default: the latest) shows, from ML Metadata; without
  `with_picture_sources`, all but the sample and explained images (`add_picture_sources`)."""
  run = summary.summarize_run(metadata_path, run_id, pipeline_name, output_dir)
  store = metadata_store.open_store(metadata_path, pipeline_name)
  outputs = {(component.node_id, type_name): artifact for component, type_name, artifact
             in metadata_store.run_outputs(store, run.components)}
  executions = {component.node_id: store.get_executions_by_id([component.execution_id])[0]
                for component in run.components}

  def custom_config(node_id: str) -> Dict[str, Any]:
    return (metadata_store.execution_json_property(executions[node_id], 'custom_config')
            if node_id in executions else None) or {}

  trainer_config = trainer_module.train_config(custom_config('Trainer'))
  network = trainer_config[trainer_module.NETWORK_KEY]
  facts = ReportFacts(
      run=run, metadata_location=metadata_store.location_text(metadata_path),
      image_size=int(custom_config('Transform').get(preprocessing.IMAGE_SIZE_CONFIG_KEY,
                                                    features.DEFAULT_IMAGE_SIZE)),
      network=network,
      epochs=trainer_config[trainer_module.EPOCHS_KEY] or networks.RECIPES[network].epochs,
      ensemble_members=(trainer_config[trainer_module.ENSEMBLE_MEMBERS_KEY]
                        or networks.RECIPES[network].members),
      batch_size=trainer_config[trainer_module.BATCH_SIZE_KEY],
      pretrained_weights=backbones.weights_description(
          network, trainer_config[trainer_module.BACKBONE_WEIGHTS_KEY]),
      output_artifacts=sorted((artifact.id, artifact.create_time_since_epoch)
                              for artifact in outputs.values()))

  examples = outputs.get(('ImageExampleGen', 'Examples'))
  if examples is not None:
    facts.train_examples_uri = os.path.join(examples.uri, f'Split-{contracts.TRAIN_SPLIT}')
  anomalies = outputs.get(('ExampleValidator', 'ExampleAnomalies'))
  if anomalies is not None:
    split_names = json.loads(anomalies.properties['split_names'].string_value or '[]')
    facts.anomalies = read_anomalies(anomalies.uri, split_names)
  if run.data_quality:
    facts.data_quality_line = format_report_line(run.data_quality)
    facts.contact_sheet_path = _existing(
        os.path.join(run.data_quality_uri, contracts.CONTACT_SHEET_FILE))
  schema = outputs.get(('CuratedSchemaGen', 'Schema'))
  if schema is not None:
    pinned = metadata_store.artifact_property(schema, SCHEMA_ORIGIN_PROPERTY) == 'pinned'
    facts.schema_origin = ('the schema pinned by an earlier run' if pinned
                           else 'the schema inferred from this run\'s training split')
  elif 'ImportSchemaGen' in executions:
    imported = executions['ImportSchemaGen']
    path = (imported.custom_properties.get('schema_file')
            or imported.properties.get('schema_file'))
    facts.schema_origin = 'the imported schema file ' + (path.string_value if path else '')
  gate = executions.get('DataValidationGate')
  if gate is not None:
    facts.gate_passed = gate.last_known_state in (gate.COMPLETE, gate.CACHED)
  model_run = outputs.get(('Trainer', 'ModelRun'))
  if model_run is not None:
    facts.training_curves_path = _existing(
        os.path.join(model_run.uri, trainer_module.TRAINING_CURVES_FILE))
  evaluation = outputs.get(('Evaluator', 'ModelEvaluation'))
  if evaluation is not None and 'Evaluator' in executions:
    facts.blessing_checks = run.blessing_checks
    facts.evaluation_arrays = results.read_overall_arrays(evaluation.uri)
  explanations = outputs.get(('EvalExplainer', EvalExplanations.TYPE_NAME))
  if explanations is not None:
    facts.explanations_uri = explanations.uri
  if with_picture_sources:
    add_picture_sources(facts)
  return facts


def add_picture_sources(facts: ReportFacts) -> None:
  """Reads the sample images and the explained eval images: what only the pictures need."""
  if facts.train_examples_uri:
    facts.samples = sample_images(facts.train_examples_uri, SAMPLES_PER_CLASS)
  if facts.explanations_uri:
    facts.explained = read_explanations(facts.explanations_uri)
