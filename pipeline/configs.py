"""Every knob of the pipeline with its default, in one place.

The runners fill a `PipelineConfig` from their flags (`cli/flags.py`);
`pipeline.create_pipeline` reads only this object. Paths derived from `output_dir` (pipeline root, ML Metadata, serving directory) are
properties, so they cannot disagree with it.
"""

import dataclasses
import os
from typing import List, Optional

from components import contracts, near_duplicates
from inputs import layout
from models import calibration, defaults, features

PIPELINE_NAME = 'breast-ultrasound'  # Vertex allows [a-z0-9-] only
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_ROOT = os.path.join(PROJECT_ROOT, 'data', 'busi_synthetic')
DEFAULT_OUTPUT_DIR = os.path.join(PROJECT_ROOT, 'outputs')
INFERENCE_PIPELINE_SUFFIX = '-inference'
_SDK_CONTAINER_IMAGE_FLAG = '--sdk_container_image='


def direct_runner_args(workers: int) -> List[str]:
  """Beam's DirectRunner in this process (1 worker), or with `workers` worker processes that get
  every step pickled, as a distributed runner's workers do."""
  # Beam is imported here, not with the module: the commands that only read the configuration
  # (the inspector) start without it.
  from apache_beam.transforms import environments  # pylint: disable=g-import-not-at-top
  if workers <= 1:
    mode = ['--direct_running_mode=in_memory', '--direct_num_workers=1']
  else:
    mode = ['--direct_running_mode=multi_processing', f'--direct_num_workers={workers}']
  # Without a dependency flag TFX packs a copy of itself (2 s, 49 MB in a temporary folder it
  # never removes) for every Beam step it runs, for remote workers to install. The DirectRunner's
  # workers are this Python, which has TFX, and never read this flag.
  return mode + [_SDK_CONTAINER_IMAGE_FLAG + environments.DockerEnvironment.default_docker_image()]


def beam_pipeline_args(workers: int, user_args: List[str]) -> List[str]:
  """The DirectRunner's arguments, then the user's (Beam takes the last value of a flag). A user
  who names another runner gets TFX's own packing for its workers, unless they say otherwise."""
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  runner = pipeline_options.PipelineOptions(list(user_args)).view_as(
      pipeline_options.StandardOptions).runner
  if runner and runner.lower().removesuffix('runner') != 'direct':
    return [arg for arg in direct_runner_args(workers)
            if not arg.startswith(_SDK_CONTAINER_IMAGE_FLAG)] + list(user_args)
  return direct_runner_args(workers) + list(user_args)


@dataclasses.dataclass
class PipelineConfig:
  """What one pipeline run needs to know."""
  data_root: str = DEFAULT_DATA_ROOT
  output_dir: str = DEFAULT_OUTPUT_DIR
  pipeline_name: str = PIPELINE_NAME
  # ML Metadata: None for <output_dir>/metadata.sqlite, or a PostgreSQL or MySQL server's URL
  # without its password, which comes from this file or the environment
  # (orchestration/metadata_connection.py).
  metadata_connection: Optional[str] = None
  metadata_password_file: Optional[str] = None
  model_name: str = 'breast_ultrasound'
  # ExampleGen. Labels from a manifest instead of class folders (inputs/manifest.py); the key
  # that pseudonymises patients from this file or the environment (inputs/identifiers.py).
  labels_file: Optional[str] = None
  identifier_key_file: Optional[str] = None
  clip_frames: str = layout.MIDDLE_FRAME  # or EVERY_FRAME: a cine clip's frames, one group
  eval_percent: int = 20
  max_unreadable_fraction: float = 0.05
  # Near-duplicates: perceptual hashes within this many bits (of 128) form one group, and
  # groups never straddle the split. Label conflicts: exclude, keep or fail.
  max_hash_distance: int = near_duplicates.DEFAULT_MAX_DISTANCE
  label_conflict_policy: str = contracts.DEFAULT_LABEL_CONFLICT_POLICY
  # Spans (a data root of span-1/, span-2/, ...): each run ingests the newest span; the Trainer
  # trains on the newest `train_spans` spans (0: all) and the Evaluator evaluates on their eval
  # splits.
  train_spans: int = 0
  span: Optional[int] = None  # ingest this span instead of the newest (a backlog, or a rerun)
  # The schema: the first run's curated schema is pinned and later spans are validated against
  # it; `reinfer_schema` infers it again from this run's statistics (pinned from then on);
  # `schema_file` imports a schema instead (TFX's ImportSchemaGen).
  reinfer_schema: bool = False
  schema_file: Optional[str] = None
  # Drift of the newest span from the previous one (components/drift_check/), on the training
  # split: the label distribution by L-infinity distance, the image-content features, width and
  # height by Jensen-Shannon divergence. Beyond a threshold the run stops before training
  # ('stop') or only warns ('warn'). The defaults stand well above what two random halves of
  # BUSI measure (docs/continuous-training.md).
  drift_policy: str = 'stop'
  max_label_drift: float = 0.15
  max_feature_drift: float = 0.15
  # Transform and Trainer
  image_size: int = features.DEFAULT_IMAGE_SIZE
  network: str = defaults.DEFAULT_NETWORK
  epochs: Optional[int] = None  # None: the network recipe's
  ensemble_members: Optional[int] = None  # None: the network recipe's
  # A pretrained backbone's weights file, or 'random'; None: its own source, a package or Keras's
  # cache (models/backbones.py).
  backbone_weights: Optional[str] = None
  # Tuner: off by default; trials of `tuning_epochs` (None: the recipe's) each.
  tune: bool = False
  tuning_trials: int = 8
  tuning_epochs: Optional[int] = None
  batch_size: int = 32
  # Warm start (`--warm-start`): every member starts from the newest blessed model trained
  # before this run's span, for `warm_start_epochs` epochs (models/warm_start.py).
  warm_start: bool = False
  warm_start_epochs: int = 3
  seed: int = 42
  # One network's operating point: chosen on this share of the training split, set aside by
  # group (an ensemble's members are cross-fitted instead: models/model.py).
  calibration_percent: float = 15.0
  target_malignant_sensitivity: float = calibration.DEFAULT_TARGET_SENSITIVITY
  # An ensemble's operating point: chosen on the out-of-fold predictions of networks cross-fitted
  # on this many folds of the training split (models/model.py).
  cross_fit_folds: int = calibration.DEFAULT_CROSS_FIT_FOLDS
  # The review flag's referral budget (models/calibration.py).
  review_fraction: float = calibration.DEFAULT_REVIEW_FRACTION
  # Evaluator: the blessing gate
  min_accuracy: float = 0.6
  min_malignant_recall: float = 0.6
  # Against the latest blessed model, on the same eval images (pipeline/eval_config.py says
  # why 0.10).
  non_inferiority_margin: float = 0.10
  max_calibration_error: float = 0.10  # expected calibration error, 10 bins
  gate_on_bounds: bool = False  # the absolute gates on an end of the 95 % interval
  # ServingCheck (components/serving_check/): canaries from the eval split, and the ceiling on
  # the median latency of a one-image request; the TFLite model (float16 or float32 weights) is
  # pushed when this share of eval labels agrees with the SavedModel's.
  canary_count: int = 9
  serving_latency_ceiling_ms: float = 1000.0
  tflite_weights: str = 'float16'
  min_tflite_agreement: float = 0.99
  # Beam: DirectRunner in-process by default; direct_runner_args(N) for N worker processes, or
  # e.g. --runner=DataflowRunner to scale out.
  beam_pipeline_args: List[str] = dataclasses.field(
      default_factory=lambda: direct_runner_args(1))
  enable_cache: bool = True
  # The project's resolver strategies (components/baseline_model_strategy.py,
  # components/history_strategies.py): the Evaluator's baseline is the latest blessed model
  # other than the candidate, so an unchanged rerun is fully cached; the spans trained on, the
  # previous span's statistics and the pinned schema come from earlier runs. Kubeflow V2 and
  # Vertex compile only TFX's built-in strategies; their runner turns this off: the baseline
  # is LatestBlessedModelStrategy's, each run trains on its own span, drift is not measured
  # and the schema is inferred each run unless `schema_file` is given.
  custom_resolver_strategies: bool = True

  @property
  def inference_pipeline_name(self) -> str:
    """Batch inference (`--infer-dir`): a pipeline of its own in the same store and root."""
    return self.pipeline_name + INFERENCE_PIPELINE_SUFFIX

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_dir, 'pipeline')

  @property
  def metadata_path(self) -> str:
    """The SQLite store, when no --metadata-connection names a server."""
    return os.path.join(self.output_dir, 'metadata.sqlite')

  @property
  def report_dir(self) -> str:
    """The run report: index.html and its pictures, rewritten by each run."""
    return os.path.join(self.output_dir, 'report')

  @property
  def serving_model_dir(self) -> str:
    """TF Serving's --model_base_path: versions are numbered folders inside it."""
    return os.path.join(self.output_dir, 'serving', self.model_name)

  @property
  def model_card_dir(self) -> str:
    """Each pushed version's model card, `<version>/model_card.html`: outside TF Serving's base
    path, so a version never changes once the Pusher has published it."""
    return os.path.join(self.output_dir, 'model_cards', self.model_name)
