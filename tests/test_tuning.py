"""TFX's Tuner with the network's search space: a two-trial search in the fourth shared pipeline
run (conftest.py), and the pieces it is made of."""

import json
import os
import re

from models import backbones, model, networks, training, tuning
from runs import metadata_store, report, report_facts, summary


def test_the_search_space_holds_the_recipe_and_changes_the_network():
  space = tuning.search_space('sepconv_residual')
  defaults = {parameter.name: parameter.default for parameter in space.space}
  recipe = networks.RECIPES['sepconv_residual']
  assert defaults['learning_rate'] == recipe.learning_rate
  assert defaults['weight_decay'] == recipe.weight_decay
  assert set(defaults) == {'width', 'dropout', 'learning_rate', 'weight_decay',
                           'augmentation_strength', 'working_size'}
  tuned = networks.with_hyperparameters(recipe, {'learning_rate': 1e-3, 'width': 0.5,
                                                 'dropout': 0.25})
  assert tuned.learning_rate == 1e-3 and tuned.weight_decay == recipe.weight_decay
  assert tuned.options == {'width': 0.5, 'dropout': 0.25}
  narrow = tuned.build(64, 3, **tuned.options)
  wide = recipe.build(64, 3, **recipe.options)
  assert narrow.count_params() < wide.count_params() / 2
  assert narrow.get_layer(index=-2).rate == 0.25  # the dropout before the softmax


def test_the_fine_tuning_search_space_holds_the_recipe_and_reaches_both_phases():
  recipe = networks.RECIPES['efficientnet_lite0']
  defaults = {parameter.name: parameter.default
              for parameter in tuning.search_space('efficientnet_lite0').space}
  assert defaults == {'learning_rate': recipe.learning_rate,
                      'fine_tune_scale': recipe.fine_tune_scale,
                      'dropout': recipe.options['dropout'], 'augmentation_strength': 1.0,
                      'working_size': recipe.options['working_size']}
  tuned = networks.with_hyperparameters(recipe, {'fine_tune_scale': 0.05, 'working_size': 160})
  assert [phase[2] for phase in training.training_phases(tuned, 10)] == [1.0, 0.05]
  model = tuned.build(48, 3, backbone_weights='random', **tuned.options)
  assert model.get_layer(backbones.BACKBONE_LAYER).input_shape == (None, 160, 160, 3)


def test_the_search_starts_from_the_recipe():
  oracle = tuning.RandomSearchFromDefaults(
      objective=tuning.OBJECTIVE, max_trials=3,
      hyperparameters=tuning.search_space(networks.DEFAULT_NETWORK), seed=0)
  first = oracle.populate_space('0')['values']
  assert first == {parameter.name: parameter.default for parameter in oracle.hyperparameters.space}
  assert oracle.populate_space('1')['values'] != first


def test_the_pipeline_tunes_then_trains_with_the_best(pipeline_runs):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  fourth = pipeline_runs['runs'][3]
  assert {'Tuner': 'complete', 'Trainer': 'complete'}.items() <= {
      run.node_id: run.state for run in fourth}.items()
  outputs = {type_name: artifact for _, type_name, artifact in metadata_store.run_outputs(
      store, fourth)}
  with open(os.path.join(outputs['HyperParameters'].uri, 'best_hyperparameters.txt')) as handle:
    best = json.load(handle)['values']
  with open(os.path.join(outputs['TunerResults'].uri, 'tuner_results.json')) as handle:
    trials = json.load(handle)
  assert len(trials) == 2  # the recipe's values and one random draw, both completed
  values_of = lambda trial: {key: value for key, value in trial.items()
                             if key not in ('trial_id', 'score')}
  assert best in [values_of(trial) for trial in trials
                  if trial['score'] == min(other['score'] for other in trials)]
  # The Trainer trained with the best and recorded it in ML Metadata.
  recorded = metadata_store.artifact_property(outputs['Model'], 'hyperparameters')
  assert recorded == best
  with open(os.path.join(outputs['Model'].uri, model.HYPERPARAMETERS_FILE)) as handle:
    assert json.load(handle) == best
  # Trials were scored on the fold held out from the first member (the eval split is never
  # seen), and the operating point was chosen on the other member's fold, not on that one.
  stdout = pipeline_runs['stdout'][3]
  scored_on = int(re.search(r'trials scored on (\d+) held-out images of fold 0', stdout).group(1))
  operating_point = metadata_store.artifact_property(outputs['Model'], 'operating_point')
  assert operating_point['left_out_for_tuning'] == scored_on > 0
  with open(os.path.join(outputs['Model'].uri, model.CROSS_FITTING_FILE)) as handle:
    folds = json.load(handle)['folds']
  assert [fold['pooled'] for fold in folds] == [False, True, True, True]
  assert folds[0]['predicted_images'] == scored_on
  assert operating_point['calibration_examples'] == sum(
      fold['predicted_images'] for fold in folds[1:])
  assert "tuned hyperparameters (the Tuner's best, trained with): " in stdout
  # The first run did not tune: nothing recorded.
  first_model = [artifact for _, type_name, artifact in metadata_store.run_outputs(
      store, pipeline_runs['runs'][0]) if type_name == 'Model'][0]
  assert metadata_store.artifact_property(first_model, 'hyperparameters') is None


def test_the_report_shows_the_tuned_hyperparameters(pipeline_runs, tmp_path):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  run_id = metadata_store.run_contexts(store)[3].name
  facts = report_facts.gather_report_facts(pipeline_runs['metadata_path'], run_id=run_id)
  assert facts.ensemble_members == 2
  assert facts.run.hyperparameters and 'working_size' in facts.run.hyperparameters
  page = report.render_report(facts, pictures={'training_curves': 'training_curves.png'})
  assert 'Hyperparameters chosen by the Tuner' in page and 'a deep ensemble of 2' in page
  assert summary.summarize_run(pipeline_runs['metadata_path'], run_id=run_id).hyperparameters == (
      facts.run.hyperparameters)
