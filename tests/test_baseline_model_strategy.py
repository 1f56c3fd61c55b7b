"""The Evaluator's baseline: the newest blessed model that is not the candidate itself."""

from tfx.types import standard_artifacts

from components.baseline_model_strategy import LatestBlessedOtherModelStrategy


def model(artifact_id, with_operating_point=True):
  artifact = standard_artifacts.Model()
  artifact.id = artifact_id
  if with_operating_point:
    artifact.set_json_value_custom_property('operating_point', {'malignant_threshold': 0.3})
  return artifact


def blessing(artifact_id, model_id, blessed):
  artifact = standard_artifacts.ModelBlessing()
  artifact.id = artifact_id
  artifact.set_int_custom_property('current_model_id', model_id)
  artifact.set_int_custom_property('blessed', 1 if blessed else 0)
  return artifact


def resolve(models, blessings, candidate):
  result = LatestBlessedOtherModelStrategy().resolve_artifacts(
      None, {'model': models, 'model_blessing': blessings, 'candidate': candidate})
  return [a.id for a in result['model']], [a.id for a in result['model_blessing']]


def test_newest_blessed_model_other_than_the_candidate():
  models = [model(1), model(2), model(3), model(4)]
  blessings = [blessing(11, 1, True), blessing(12, 2, True), blessing(13, 3, False),
               blessing(14, 4, True)]
  assert resolve(models, blessings, [model(4)]) == ([2], [12])  # 4 is the candidate, 3 failed
  assert resolve(models, blessings, [model(5)]) == ([4], [14])


def test_no_baseline_when_only_the_candidate_was_ever_blessed():
  assert resolve([model(1)], [blessing(11, 1, True)], [model(1)]) == ([], [])
  assert resolve([], [], [model(1)]) == ([], [])


def test_models_exported_without_an_operating_point_are_never_baselines():
  models = [model(1), model(2, with_operating_point=False)]
  blessings = [blessing(11, 1, True), blessing(12, 2, True)]
  assert resolve(models, blessings, [model(3)]) == ([1], [11])
