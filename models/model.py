"""The Trainer's run_fn: datasets from the transformed examples, training, the operating point,
and the export.

The operating point is chosen on out-of-sample predictions of the training split (the eval split is
never used to choose anything). For an ensemble, networks are cross-fitted first: the training
split is dealt to `cross_fit_folds` folds (at least one per member) by near-duplicate group,
stratified by label, and network k trains on every fold but k, so each training image is
predicted by the one network that never saw it; then the members that ship are refitted on the
whole training split from the same seeds. `cross_fitting.json` in the Model artifact records
which groups each cross-fitted network trained on and predicted. One network sets
aside a calibration set instead, `calibration_percent` % of the training split, and ships as trained
without it. On those predictions the model gets a temperature that calibrates its probabilities and
a malignant threshold that reaches `target_malignant_sensitivity` (models/calibration.py), both
built into the exported model (models/export.py says its signatures) and written to
`operating_point.json` in the Model artifact. When the Tuner chose the hyperparameters, it scored
its trials on member 0's fold (models/tuning.py), so that fold's predictions are left out of the
choice.

Given a base model (the Trainer's `base_model`: the newest blessed model, with `--warm-start`),
every member, choosers and shipped ones alike, starts from the base model's members and trains
`warm_start_epochs` epochs (models/warm_start.py); the groups the base model trained on are then
left out of the operating point, as their predictions are not out of sample. Every model keeps
its members' weights for a later warm start.

The network and how it is trained come from `models.training` and the network's recipe; a
recipe with test-time flips is exported averaging over the image and its mirror image, and an
ensemble (`ensemble_members` > 1, or the recipe's) is exported as one SavedModel averaging its
members' probabilities before calibration.
The Model artifact also gets the TFLite model (`tflite/model.tflite` and `tflite/metadata.json`).
Next to TensorBoard logs (one folder per member of an ensemble), the model-run directory gets
`training_curves.png` (accuracy and loss per epoch, training and validation, every member) and
`history.json` (a list: one history per member), all of the members that ship.
"""

import dataclasses
import json
import os
from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import calibration, features, networks, on_device, training, warm_start
from models.datasets import HeldOutFolds, batches, read_examples
from models.export import export_model, export_on_device
from models.training_curves import plot_training_curves

# Keys of the Trainer's custom_config.
EPOCHS_KEY = 'epochs'
BATCH_SIZE_KEY = 'batch_size'
NETWORK_KEY = 'network'
SEED_KEY = 'seed'
CALIBRATION_PERCENT_KEY = 'calibration_percent'
TARGET_SENSITIVITY_KEY = 'target_malignant_sensitivity'
REVIEW_FRACTION_KEY = 'review_fraction'
# Folds an ensemble's training split is dealt to for its out-of-fold predictions (at least one
# per member).
CROSS_FIT_FOLDS_KEY = 'cross_fit_folds'
ENSEMBLE_MEMBERS_KEY = 'ensemble_members'
BACKBONE_WEIGHTS_KEY = 'backbone_weights'
TFLITE_WEIGHTS_KEY = 'tflite_weights'
# Epochs of a warm start from the base model (fn_args.base_model; models/warm_start.py).
WARM_START_EPOCHS_KEY = 'warm_start_epochs'

DEFAULTS = {
    EPOCHS_KEY: None,  # the network's recipe decides
    BATCH_SIZE_KEY: 32,
    NETWORK_KEY: networks.DEFAULT_NETWORK,
    SEED_KEY: 42,
    CALIBRATION_PERCENT_KEY: 15,
    TARGET_SENSITIVITY_KEY: calibration.DEFAULT_TARGET_SENSITIVITY,
    REVIEW_FRACTION_KEY: calibration.DEFAULT_REVIEW_FRACTION,
    CROSS_FIT_FOLDS_KEY: calibration.DEFAULT_CROSS_FIT_FOLDS,
    ENSEMBLE_MEMBERS_KEY: None,  # the network's recipe decides
    BACKBONE_WEIGHTS_KEY: None,  # a pretrained backbone's weights (models/backbones.py)
    TFLITE_WEIGHTS_KEY: on_device.DEFAULT_WEIGHT_TYPE,
    WARM_START_EPOCHS_KEY: 3,
}
TRAINING_CURVES_FILE = 'training_curves.png'
HISTORY_FILE = 'history.json'
# Beside the SavedModel in the Model artifact, when the Tuner chose them (`--tune`).
HYPERPARAMETERS_FILE = 'hyperparameters.json'
# Beside the SavedModel: which groups each fold's member trained on and predicted, and which
# folds' predictions the operating point was chosen on (datasets.HeldOutFolds.record).
CROSS_FITTING_FILE = 'cross_fitting.json'


def train_config(custom_config: Dict[str, Any]) -> Dict[str, Any]:
  config = dict(DEFAULTS)
  config.update({key: value for key, value in (custom_config or {}).items() if key in DEFAULTS})
  return config


def cross_fit_folds(config: Dict[str, Any], members: int) -> int:
  """How many folds the training split is dealt to, each held out from one cross-fitted network
  that predicts it: for an ensemble, `cross_fit_folds` and at least one per member; for one
  network, 1 (its calibration set)."""
  return max(members, int(config[CROSS_FIT_FOLDS_KEY])) if members > 1 else 1


def run_fn(fn_args) -> None:
  """TFX Trainer entry point (tfx.components.trainer.fn_args_utils.FnArgs)."""
  config = train_config(fn_args.custom_config)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  training_examples = read_examples(fn_args.train_files, fn_args.data_accessor,
                                    tf_transform_output)
  network = config[NETWORK_KEY]
  test_time_flips = networks.RECIPES[network].test_time_flips
  members = config[ENSEMBLE_MEMBERS_KEY] or networks.RECIPES[network].members
  image_size = tf_transform_output.transformed_feature_spec()[
      features.TRANSFORMED_IMAGE_KEY].shape[0]
  base, cold_reason = warm_start.read_base_model(getattr(fn_args, 'base_model', None), network,
                                                 image_size)
  folds = HeldOutFolds(training_examples, cross_fit_folds(config, members),
                       config[CALIBRATION_PERCENT_KEY],
                       seen_groups=base.training_groups if base else ())
  if folds.folds == 0:
    raise ValueError(f'no training image can be held out to choose the operating point: the '
                     f'training split has {len(folds.groups)} groups (near-duplicates and '
                     f'patients are kept whole) and {config[CALIBRATION_PERCENT_KEY]:g} % of them '
                     'is none; train an ensemble (--ensemble-members 2 or more, whose members '
                     'hold out one another\'s folds) or give more images or patients')
  eval_examples = read_examples(fn_args.eval_files, fn_args.data_accessor, tf_transform_output)
  batch_size = config[BATCH_SIZE_KEY]
  epochs = config[WARM_START_EPOCHS_KEY] if base else config[EPOCHS_KEY]
  if base:
    print(f'warm start: {members} member(s) from {base.model_dir}, {epochs} epochs; '
          f'{folds.seen_held_out} training images in groups it trained on are left out of the '
          'operating point',
          flush=True)
  elif getattr(fn_args, 'base_model', None):
    print(f'cold start: {cold_reason}', flush=True)
  # The Tuner's best (keras_tuner.HyperParameters config), when the pipeline tuned.
  hyperparameters = dict((fn_args.hyperparameters or {}).get('values', {}))
  logs_of_member = lambda member: [keras.callbacks.TensorBoard(
      log_dir=(os.path.join(fn_args.model_run_dir, f'member_{member}') if members > 1
               else fn_args.model_run_dir))]

  def train(datasets, shipped: bool):
    return training.train_ensemble(
        network, image_size, datasets, batches(eval_examples, batch_size),
        epochs=epochs, seed=config[SEED_KEY], hyperparameters=hyperparameters,
        backbone_weights=config[BACKBONE_WEIGHTS_KEY],
        initial_weights=base.weights if base else None,
        callbacks_of_member=logs_of_member if shipped else lambda member: ())

  # For an ensemble, networks are cross-fitted to choose the operating point, then the members
  # are refitted to ship; one network is trained once, without its calibration set.
  if members > 1:
    print(f'cross-fitting {folds.folds} networks, each without the fold held out from it, to '
          'choose the operating point on their out-of-fold predictions', flush=True)
  choosers, histories = train([batches(folds.training(fold), batch_size,
                                       shuffle_seed=config[SEED_KEY])
                               for fold in range(folds.folds)], shipped=members == 1)
  # The eval split is only reported on; the operating point comes from out-of-sample
  # predictions of the training split, less the fold the Tuner scored its trials on.
  scored = range(1 if hyperparameters else 0, folds.folds)
  cross_fitting = folds.record(scored)
  seen = [fold['fold'] for fold in cross_fitting['folds']
          if set(fold['predicted']) & set(fold['trained_on'])]
  if seen:  # never: HeldOutFolds deals whole groups
    raise RuntimeError(f'the members of folds {seen} would predict groups they trained on')
  operating_point = calibration.choose_operating_point(
      *training.predict_held_out([choosers[fold] for fold in scored],
                                 [batches(folds.held_out(fold), batch_size) for fold in scored],
                                 test_time_flips),
      target_sensitivity=config[TARGET_SENSITIVITY_KEY],
      review_fraction=config[REVIEW_FRACTION_KEY],
      chosen_on=calibration.OUT_OF_FOLD if folds.folds > 1 else calibration.HELD_OUT)
  operating_point.left_out_for_tuning = sum(len(folds.labels_of_fold[fold])
                                            for fold in range(folds.folds) if fold not in scored)
  operating_point.seen_by_base_model = folds.seen_held_out
  operating_point.pooled_folds = len(scored)
  print(f'operating point chosen on {operating_point.calibration_examples} out-of-sample '
        f'predictions ({operating_point.calibration_malignant} malignant) of {len(scored)} '
        f'network(s), {operating_point.left_out_for_tuning} left out for the Tuner', flush=True)
  trained = choosers
  if members > 1:
    # The ensemble that ships: the members refitted on the whole training split, from the same
    # seeds (docs/experiments.md compares it with shipping the cross-fitted members).
    print(f'refitting the {members} members on the whole training split', flush=True)
    trained, histories = train([batches(training_examples, batch_size,
                                        shuffle_seed=config[SEED_KEY])] * members, shipped=True)

  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), 'w') as handle:
    json.dump(histories, handle, indent=1)
  plot_training_curves(histories, os.path.join(fn_args.model_run_dir, TRAINING_CURVES_FILE))
  module = export_model(trained, tf_transform_output, fn_args.serving_model_dir,
                        test_time_flips, operating_point, image_size)
  # Beside the SavedModel, in the Model artifact: the Trainer's executor records it in ML
  # Metadata (components/trainer/executor.py).
  model_dir = os.path.dirname(fn_args.serving_model_dir)
  if config[TFLITE_WEIGHTS_KEY] != on_device.NO_TFLITE:
    export_on_device(module, model_dir, image_size, operating_point, config[TFLITE_WEIGHTS_KEY])
  with tf.io.gfile.GFile(os.path.join(model_dir, calibration.OPERATING_POINT_FILE), 'w') as handle:
    json.dump(dataclasses.asdict(operating_point), handle, indent=1)
  with tf.io.gfile.GFile(os.path.join(model_dir, CROSS_FITTING_FILE), 'w') as handle:
    json.dump(cross_fitting, handle)
  if hyperparameters:
    with tf.io.gfile.GFile(os.path.join(model_dir, HYPERPARAMETERS_FILE), 'w') as handle:
      json.dump(hyperparameters, handle, indent=1)
  warm_start.save_members(trained, model_dir, network, image_size, folds.groups)
  if getattr(fn_args, 'base_model', None):
    warm_start.write_warm_start(model_dir, base, epochs, cold_reason)
