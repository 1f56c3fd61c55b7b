"""`create_pipeline(config)`: the components of the breast-ultrasound pipeline and their wiring.

- `data_components`: ImageExampleGen (the newest span; near-duplicate-aware split) →
  DataQualityCheck, and StatisticsGen → SchemaGen (curated on the first run, pinned from then
  on) → ExampleValidator, and DriftCheck (against the previous span's statistics);
  DataValidationGate stops the run on an anomaly, a cross-split leak, a forbidden label conflict
  or drift → Transform (of the newest `--train-spans` spans).
- `training_components`: (Tuner, with `--tune`) → Trainer (from the newest blessed model's
  weights, with `--warm-start`).
- `release_components`: Evaluator (baseline: the latest other blessed model), ServingCheck
  (canary requests to the candidate in a fresh process: TFX's InfraValidator without Docker) and
  EvalExplainer (Grad-CAM of eval images, for the report) → Pusher (atomic: a version appears
  whole or not at all, only with both blessings) → ModelCardGenerator (each pushed version's
  card under model_cards/).

The `excluded` split (label conflicts left out) is neither analysed nor trained on. Model code
is referenced by dotted path, so the pipeline compiles for Kubeflow or Vertex offline. Every
component whose output depends on the project's code carries a fingerprint of that code in its
configuration (`pipeline/code_version.py`), so editing the code reruns exactly those.
"""

import dataclasses
import json
from typing import Any

import tensorflow_data_validation as tfdv
# TFX's public API from the modules `tfx.v1` re-exports: importing `tfx.v1` also loads the Google
# Cloud extensions, about 5 s of every run's start-up.
from tfx.components import Evaluator, ExampleValidator, Pusher, StatisticsGen
from tfx.components import Trainer, Transform, Tuner
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.orchestration.pipeline import Pipeline
from tfx.proto.pusher_pb2 import PushDestination
from tfx.proto.trainer_pb2 import EvalArgs, TrainArgs
from tfx.proto.transform_pb2 import SplitsConfig
from tfx.types import standard_artifacts
from tfx.types.channel import Channel
from tensorflow_metadata.proto.v0 import schema_pb2

from components import contracts
from components.baseline_model_strategy import LatestBlessedOtherModelStrategy
from components.curated_schema_gen.component import CuratedSchemaGen
from components.data_quality.component import DataQualityCheck
from components.data_validation_gate.component import DataValidationGate
from components.drift_check.component import DriftCheck
from components.history_strategies import (LatestSpansStrategy, PinnedSchemaStrategy,
                                           PreviousSpanStatisticsStrategy, WarmStartModelStrategy)
from components.eval_explanations.component import EvalExplainer
from components.model_card.component import ModelCardGenerator
from components.image_example_gen.component import ImageExampleGen
from components.pusher import executor as atomic_pusher
from components.serving_check.component import ServingCheck
from components.trainer import executor as trainer_executor
from models import backbones, features, model, networks, preprocessing, tuning
from pipeline.code_version import code_version
from pipeline.configs import PipelineConfig
from pipeline.eval_config import CUSTOM_METRICS_MODULE, build_eval_config


def statistics_options() -> tfdv.StatsOptions:
  """TFDV options of StatisticsGen: with image statistics (format, and the domain) for the
  encoded-bytes features, the image and the mask.

  Both are declared images before any schema exists: otherwise TFDV takes them for categorical
  strings and counts their distinct values exactly, holding every image's bytes in memory (the
  data part peaked at 9.6 GB on 5,000 images), and it finds the image domain only in splits of
  100 images or more, so a small span's schema would lack the domain a larger span's statistics
  then report as an anomaly ("Updated semantic domain")."""
  declared = schema_pb2.Schema()
  for key in (features.IMAGE_KEY, features.MASK_KEY):
    declared.feature.add(name=key, type=schema_pb2.BYTES).image_domain.SetInParent()
  return tfdv.StatsOptions(enable_semantic_domain_stats=True, schema=declared)


@dataclasses.dataclass
class DataPart:
  """The data part's components, in pipeline order, and what the later parts read from it."""
  components: list
  example_gen: ImageExampleGen
  data_quality_check: Any
  schema_gen: Any
  transform: Transform
  # The examples trained and evaluated on: the newest `train_spans` spans' (this run's alone
  # without the project's resolver strategies).
  training_examples: Any


def schema_components(config: PipelineConfig, statistics_gen) -> list:
  """The schema: imported from `schema_file`, or curated from the training split's statistics
  on the first run and pinned from then on (`reinfer_schema` infers it again)."""
  if config.schema_file:
    return [ImportSchemaGen(schema_file=config.schema_file)]
  pinned_resolver = None
  if config.custom_resolver_strategies:
    pinned_resolver = Resolver(
        strategy_class=PinnedSchemaStrategy,
        schema=Channel(type=standard_artifacts.Schema, producer_component_id='CuratedSchemaGen'),
        newest=statistics_gen.outputs['statistics'],
    ).with_id('pinned_schema_resolver')
  # Inferred from the training split only, so the eval split is validated against it.
  schema_gen = CuratedSchemaGen(
      statistics=statistics_gen.outputs['statistics'], infer_feature_shape=True,
      exclude_splits=[contracts.EVAL_SPLIT],
      pinned_schema=pinned_resolver.outputs['schema'] if pinned_resolver else None,
      reinfer=config.reinfer_schema,
      code_version=code_version('components.curated_schema_gen.component'))
  return [*([pinned_resolver] if pinned_resolver else []), schema_gen]


def data_components(config: PipelineConfig) -> DataPart:
  """ImageExampleGen to Transform: the examples, their checks, and the gate before training,
  in the order the docstring draws them."""
  example_gen = ImageExampleGen(
      input_base=config.data_root,
      eval_percent=config.eval_percent,
      max_unreadable_fraction=config.max_unreadable_fraction,
      max_hash_distance=config.max_hash_distance,
      label_conflict_policy=config.label_conflict_policy,
      span=config.span,
      labels_file=config.labels_file,
      identifier_key_file=config.identifier_key_file,
      clip_frames=config.clip_frames,
      code_version=code_version('components.image_example_gen.executor'))

  data_quality_check = DataQualityCheck(
      examples=example_gen.outputs['examples'],
      code_version=code_version('components.data_quality.component'))

  statistics_gen = StatisticsGen(
      examples=example_gen.outputs['examples'],
      stats_options=statistics_options(),
      exclude_splits=[contracts.EXCLUDED_SPLIT])

  schema_nodes = schema_components(config, statistics_gen)
  schema = schema_nodes[-1].outputs['schema']

  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema)

  previous_statistics = None
  if config.custom_resolver_strategies:
    previous_statistics = Resolver(
        strategy_class=PreviousSpanStatisticsStrategy,
        statistics=Channel(type=standard_artifacts.ExampleStatistics,
                           producer_component_id=statistics_gen.id),
        newest=statistics_gen.outputs['statistics'],
    ).with_id('previous_span_statistics_resolver')
  drift_check = DriftCheck(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema,
      baseline_statistics=(previous_statistics.outputs['statistics'] if previous_statistics
                           else None),
      max_label_distance=config.max_label_drift,
      max_feature_divergence=config.max_feature_drift,
      code_version=code_version('components.drift_check.component'))

  data_validation_gate = DataValidationGate(
      anomalies=example_validator.outputs['anomalies'],
      data_quality=data_quality_check.outputs['data_quality'],
      drift=drift_check.outputs['drift'],
      drift_policy=config.drift_policy,
      code_version=code_version('components.data_validation_gate.component'))

  training_examples = example_gen.outputs['examples']
  spans_resolver = None
  if config.custom_resolver_strategies:
    spans_resolver = Resolver(
        strategy_class=LatestSpansStrategy,
        config={'num_spans': config.train_spans},
        examples=Channel(type=standard_artifacts.Examples,
                         producer_component_id=example_gen.id),
        newest=example_gen.outputs['examples'],
    ).with_id('training_spans_resolver')
    training_examples = spans_resolver.outputs['examples']

  transform = Transform(
      examples=training_examples,
      schema=schema,
      preprocessing_fn='models.preprocessing.preprocessing_fn',
      # StatisticsGen and ExampleValidator have checked the raw data; statistics of 97,200
      # pixel values per image say nothing more and cost a third of the data part's time.
      disable_statistics=True,
      splits_config=SplitsConfig(analyze=[contracts.TRAIN_SPLIT],
                                             transform=[contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT]),
      custom_config={preprocessing.IMAGE_SIZE_CONFIG_KEY: config.image_size,
                     'code_version': code_version('models.preprocessing')})
  transform.add_upstream_node(data_validation_gate)
  components = [example_gen, data_quality_check, statistics_gen, *schema_nodes,
                example_validator, *([previous_statistics] if previous_statistics else []),
                drift_check, data_validation_gate, *([spans_resolver] if spans_resolver else []),
                transform]
  return DataPart(components, example_gen, data_quality_check, schema_nodes[-1], transform,
                  training_examples)


def training_components(config: PipelineConfig, data: DataPart) -> list:
  """(The Tuner, with `--tune`, the warm start's model resolver, with `--warm-start`, and) the
  Trainer: its model ends the list."""
  transform, schema_gen = data.transform, data.schema_gen
  trainer_config = {
      model.EPOCHS_KEY: config.epochs,
      model.ENSEMBLE_MEMBERS_KEY: config.ensemble_members,
      model.BACKBONE_WEIGHTS_KEY: config.backbone_weights,
      model.BATCH_SIZE_KEY: config.batch_size,
      model.NETWORK_KEY: config.network,
      model.SEED_KEY: config.seed,
      model.CALIBRATION_PERCENT_KEY: config.calibration_percent,
      model.TARGET_SENSITIVITY_KEY: config.target_malignant_sensitivity,
      model.REVIEW_FRACTION_KEY: config.review_fraction,
      model.CROSS_FIT_FOLDS_KEY: config.cross_fit_folds,
      model.TFLITE_WEIGHTS_KEY: config.tflite_weights,
      **({model.WARM_START_EPOCHS_KEY: config.warm_start_epochs} if config.warm_start else {}),
  }
  tuner = None
  if config.tune:
    # Trials fit on what the first ensemble member fits on and are scored on the fold held out
    # from it, which the Trainer then leaves out of the operating point (models/tuning.py): the
    # eval split is never seen.
    tuner = Tuner(
        tuner_fn='models.tuning.tuner_fn',
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        schema=schema_gen.outputs['schema'],
        train_args=TrainArgs(splits=[contracts.TRAIN_SPLIT]),
        eval_args=EvalArgs(splits=[contracts.EVAL_SPLIT]),
        custom_config={**trainer_config,
                       tuning.MAX_TRIALS_KEY: config.tuning_trials,
                       tuning.TRIAL_EPOCHS_KEY: config.tuning_epochs,
                       'code_version': code_version('models.tuning')})

  base_model = None
  if config.warm_start:
    base_model = (Resolver(strategy_class=WarmStartModelStrategy,
                           model=Channel(type=standard_artifacts.Model),
                           model_blessing=Channel(type=standard_artifacts.ModelBlessing),
                           newest=data.example_gen.outputs['examples'])
                  if config.custom_resolver_strategies else
                  Resolver(strategy_class=LatestBlessedModelStrategy,
                           model=Channel(type=standard_artifacts.Model),
                           model_blessing=Channel(type=standard_artifacts.ModelBlessing))
                  ).with_id('warm_start_model_resolver')

  trainer = Trainer(
      run_fn='models.model.run_fn',
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      hyperparameters=tuner.outputs['best_hyperparameters'] if tuner else None,
      base_model=base_model.outputs['model'] if base_model else None,
      train_args=TrainArgs(splits=[contracts.TRAIN_SPLIT]),
      eval_args=EvalArgs(splits=[contracts.EVAL_SPLIT]),
      custom_config={
          **trainer_config,
          'code_version': code_version('models.model', 'components.trainer.executor'),
      },
      # TFX's executor, then the operating point recorded on the Model artifact.
      custom_executor_spec=executor_spec.ExecutorClassSpec(trainer_executor.Executor))

  return [*([tuner] if tuner else []), *([base_model] if base_model else []), trainer]


def release_components(config: PipelineConfig, data: DataPart, trainer) -> list:
  """What decides and publishes: the baseline resolver, Evaluator (on the eval splits of the
  spans trained on), ServingCheck and EvalExplainer (on the newest span), Pusher and
  ModelCardGenerator."""
  example_gen, data_quality_check = data.example_gen, data.data_quality_check
  if config.custom_resolver_strategies:
    baseline_strategy = LatestBlessedOtherModelStrategy
    strategy_inputs = {'candidate': trainer.outputs['model']}
  else:
    baseline_strategy, strategy_inputs = LatestBlessedModelStrategy, {}
  baseline_resolver = Resolver(
      strategy_class=baseline_strategy,
      model=Channel(type=standard_artifacts.Model),
      model_blessing=Channel(type=standard_artifacts.ModelBlessing),
      **strategy_inputs,
  ).with_id('latest_blessed_model_resolver')

  evaluator = Evaluator(
      examples=data.training_examples,
      model=trainer.outputs['model'],
      baseline_model=baseline_resolver.outputs['model'],
      example_splits=[contracts.EVAL_SPLIT],
      eval_config=build_eval_config(
          config.min_accuracy, config.min_malignant_recall, config.non_inferiority_margin,
          config.max_calibration_error, config.gate_on_bounds,
          metrics_code_version=code_version(CUSTOM_METRICS_MODULE)))

  eval_explainer = EvalExplainer(
      model=trainer.outputs['model'],
      examples=example_gen.outputs['examples'],
      code_version=code_version('components.eval_explanations.component'))

  serving_check = ServingCheck(
      model=trainer.outputs['model'],
      examples=example_gen.outputs['examples'],
      latency_ceiling_ms=config.serving_latency_ceiling_ms,
      canary_count=config.canary_count,
      min_tflite_agreement=config.min_tflite_agreement,
      code_version=code_version('components.serving_check.component', 'serving.canary'))

  # TFX's Pusher with an executor that publishes each version atomically.
  pusher = Pusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      infra_blessing=serving_check.outputs['blessing'],
      push_destination=PushDestination(
          filesystem=PushDestination.Filesystem(
              base_directory=config.serving_model_dir)),
      custom_config={'code_version': code_version('components.pusher.executor')},
      custom_executor_spec=executor_spec.ExecutorClassSpec(atomic_pusher.Executor))

  recipe = networks.RECIPES[config.network]
  model_card_generator = ModelCardGenerator(
      model=trainer.outputs['model'],
      examples=example_gen.outputs['examples'],
      data_quality=data_quality_check.outputs['data_quality'],
      evaluation=evaluator.outputs['evaluation'],
      model_blessing=evaluator.outputs['blessing'],
      infra_blessing=serving_check.outputs['blessing'],
      pushed_model=pusher.outputs['pushed_model'],
      model_name=config.model_name,
      published_card_dir=config.model_card_dir,
      training=json.dumps({
          'network': config.network, 'epochs': config.epochs or recipe.epochs,
          'ensemble_members': config.ensemble_members or recipe.members,
          'image_size': config.image_size, 'batch_size': config.batch_size,
          'pretrained_weights': backbones.weights_description(config.network,
                                                              config.backbone_weights)}),
      code_version=code_version('components.model_card.component',
                                files=['components/model_card/templates/model_card.html',
                                       'presentation/style.css']))

  return [baseline_resolver, evaluator, serving_check, eval_explainer, pusher,
          model_card_generator]


def create_pipeline(config: PipelineConfig, metadata_connection_config=None,
                    data_part_only: bool = False) -> Pipeline:
  """Builds the pipeline described in the module docstring from `config`.

  `metadata_connection_config` is the runner's business: LocalDagRunner needs one (SQLite),
  Kubeflow and Vertex bring their own. `data_part_only` stops after Transform (what
  benchmarks/data_scaling.py measures).
  """
  data = data_components(config)
  components = list(data.components)
  if not data_part_only:
    training = training_components(config, data)
    components += training + release_components(config, data, training[-1])
  return Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=components,
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam_pipeline_args)
