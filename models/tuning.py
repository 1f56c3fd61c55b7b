"""The Tuner's tuner_fn: a KerasTuner search over the network's search space.

`--tune` adds TFX's Tuner component before the Trainer. Each trial builds the network with the
trial's hyperparameters (the search space is declared beside the network, in networks.py) and
trains it by the recipe on what the Trainer's first ensemble member trains on: the training
split less the fold held out from that member (whole near-duplicate groups, stratified by label:
models/group_split.py). It is scored on that fold, never on the eval split, and the Trainer
leaves that fold out when it chooses the temperature and the threshold, so the trials are chosen
on images the operating point is not fitted on. The score is the fold's negative
log-likelihood: a proper score, smooth where accuracy moves in steps of one image. The first trial is the recipe's own values, so the best found is never worse
on that set than the untuned recipe. The Trainer then trains with the best hyperparameters
(`best_hyperparameters` artifact) and records them on the Model artifact.
"""

from typing import Any, Dict, Optional

import keras_tuner
import numpy as np
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult

from models import calibration, datasets, features, model, networks, training

# Keys of the Tuner's custom_config, beside the Trainer's (models/model.py).
MAX_TRIALS_KEY = 'max_trials'
TRIAL_EPOCHS_KEY = 'trial_epochs'
DEFAULT_MAX_TRIALS = 8
OBJECTIVE = keras_tuner.Objective('held_out_loss', direction='min')


class RandomSearchFromDefaults(keras_tuner.oracles.RandomSearchOracle):
  """Random search whose first trial is every hyperparameter's default (the recipe's values)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._defaults_tried = False

  def populate_space(self, trial_id: str) -> Dict[str, Any]:
    if not self._defaults_tried:
      self._defaults_tried = True
      return {'status': keras_tuner.engine.trial.TrialStatus.RUNNING,
              'values': {parameter.name: parameter.default
                         for parameter in self.hyperparameters.space}}
    return super().populate_space(trial_id)


class NetworkSearch(keras_tuner.engine.base_tuner.BaseTuner):
  """Trains one network per trial by its recipe, with the trial's hyperparameters."""

  def __init__(self, oracle: keras_tuner.Oracle, network: str, image_size: int,
               epochs: Optional[int], seed: int, **kwargs):
    super().__init__(oracle, **kwargs)
    self._network = network
    self._image_size = image_size
    self._epochs = epochs
    self._seed = seed

  def run_trial(self, trial, fitting, validation) -> float:
    values = dict(trial.hyperparameters.values)
    print(f'trial {trial.trial_id}: {values}', flush=True)
    trained, _ = training.train_network(self._network, self._image_size, fitting, None,
                                        epochs=self._epochs, seed=self._seed, verbose=0,
                                        hyperparameters=values)
    probabilities, labels = training.predict_dataset(
        trained, validation, networks.RECIPES[self._network].test_time_flips)
    loss = calibration.negative_log_likelihood(probabilities, labels)
    print(f'trial {trial.trial_id}: held-out loss {loss:.4f}', flush=True)
    return loss

  def save_model(self, trial_id, model, step=0) -> None:
    """Only the hyperparameters are kept: the Trainer trains its own network with them."""

  def load_model(self, trial):
    raise NotImplementedError('NetworkSearch keeps no models; train with the hyperparameters')


def search_space(network: str) -> keras_tuner.HyperParameters:
  recipe = networks.RECIPES[network]
  if recipe.search_space is None:
    raise ValueError(f'network {network!r} has no search space to tune '
                     f'(tunable: {", ".join(networks.tunable_networks())})')
  hyperparameters = keras_tuner.HyperParameters()
  recipe.search_space(hyperparameters)
  return hyperparameters


def tuner_fn(fn_args) -> TunerFnResult:
  """TFX Tuner entry point."""
  config = model.train_config(fn_args.custom_config)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  training_examples = datasets.read_examples(fn_args.train_files, fn_args.data_accessor,
                                             tf_transform_output)
  members = config[model.ENSEMBLE_MEMBERS_KEY] or networks.RECIPES[
      config[model.NETWORK_KEY]].members
  if members < 2:
    raise ValueError('tuning needs an ensemble of at least 2 members: the trials are scored on '
                     "the first member's held-out fold, the operating point on the others'")
  # The Trainer's deal, so that the fold scored here is the one it leaves out.
  folds = datasets.HeldOutFolds(training_examples, model.cross_fit_folds(config, members),
                                config[model.CALIBRATION_PERCENT_KEY])
  labels = folds.labels_of_fold[0]
  image_size = tf_transform_output.transformed_feature_spec()[
      features.TRANSFORMED_IMAGE_KEY].shape[0]
  custom_config = fn_args.custom_config or {}
  oracle = RandomSearchFromDefaults(
      objective=OBJECTIVE, max_trials=custom_config.get(MAX_TRIALS_KEY, DEFAULT_MAX_TRIALS),
      hyperparameters=search_space(config[model.NETWORK_KEY]), seed=config[model.SEED_KEY])
  tuner = NetworkSearch(oracle, network=config[model.NETWORK_KEY], image_size=image_size,
                        epochs=custom_config.get(TRIAL_EPOCHS_KEY) or config[model.EPOCHS_KEY],
                        seed=config[model.SEED_KEY], directory=fn_args.working_dir,
                        project_name='network_search', overwrite=True)
  batch_size = config[model.BATCH_SIZE_KEY]
  print(f'tuning {config[model.NETWORK_KEY]}: {oracle.max_trials} trials scored on '
        f'{len(labels)} held-out images of fold 0 (classes {np.bincount(labels).tolist()})',
        flush=True)
  return TunerFnResult(tuner=tuner, fit_kwargs={
      'fitting': datasets.batches(folds.training(0), batch_size,
                                  shuffle_seed=config[model.SEED_KEY]),
      'validation': datasets.batches(folds.held_out(0), batch_size)})
