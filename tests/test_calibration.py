"""The clinical decisions made on out-of-sample predictions: the folds held out by group, the
malignant threshold, temperature scaling, and the calibration metrics, on data whose answers are
known."""

import collections
import types

import numpy as np
import pytest
import tensorflow as tf

from models import calibration, datasets, export, features, group_split

MALIGNANT = features.MALIGNANT_LABEL
RNG_PROBABILITIES = np.random.default_rng(3).dirichlet([1, 1, 1], size=200).astype(np.float32)


def over_confident(count: int, seed: int, sharpness: float = 4.0):
  """(probabilities, labels) of a model whose confidence runs ahead of its accuracy: labels are
  drawn from calibrated probabilities, which are then sharpened."""
  rng = np.random.default_rng(seed)
  calibrated = rng.dirichlet([1.0, 1.0, 1.0], size=count)
  labels = np.array([rng.choice(3, p=row) for row in calibrated])
  sharpened = calibrated ** sharpness
  return sharpened / sharpened.sum(axis=1, keepdims=True), labels


def test_calibration_split_keeps_groups_whole_and_takes_its_share_of_each_label():
  rng = np.random.default_rng(0)
  labels, groups = [], []
  for number in range(600):
    label = int(rng.choice(3, p=[0.55, 0.28, 0.17]))
    size = int(rng.choice([1, 1, 1, 2, 3]))
    labels += [label] * size
    groups += [f'group {number}'] * size
  mask = group_split.calibration_mask(labels, groups, 15)
  calibration_groups = {group for group, chosen in zip(groups, mask) if chosen}
  fit_groups = {group for group, chosen in zip(groups, mask) if not chosen}
  assert not calibration_groups & fit_groups
  for label in range(3):
    share = np.mean([chosen for chosen, found in zip(mask, labels) if found == label])
    assert abs(share - 0.15) < 0.03, (label, share)
  assert mask == group_split.calibration_mask(labels, groups, 15)  # deterministic
  assert not any(group_split.calibration_mask(labels, groups, 0))


def test_held_out_folds_give_each_member_its_own_fold_and_every_example_one_held_out_member():
  rng = np.random.default_rng(1)
  labels, groups = [], []
  for number in range(400):
    size = int(rng.choice([1, 1, 2, 4]))
    labels += [int(rng.choice(3, p=[0.55, 0.28, 0.17]))] * size
    groups += [f'group {number}'] * size
  for members in (2, 3, 5):
    folds = group_split.held_out_folds(labels, groups, members, 15)
    assert sorted(set(folds)) == list(range(members))  # every example is held out from one
    fold_of_group = {}
    for group, fold in zip(groups, folds):
      assert fold_of_group.setdefault(group, fold) == fold  # whole groups
    for label in range(3):
      shares = np.bincount([fold for fold, found in zip(folds, labels) if found == label],
                           minlength=members) / labels.count(label)
      assert np.all(np.abs(shares - 1 / members) < 0.04), (members, label, shares)
    assert folds == group_split.held_out_folds(labels, groups, members, 15)  # deterministic
  # One network: its calibration set is fold 0, and it trains on everything else.
  assert group_split.held_out_folds(labels, groups, 1, 15) == [
      0 if taken else -1 for taken in group_split.calibration_mask(labels, groups, 15)]


@pytest.mark.parametrize('seed', range(5))
def test_threshold_reaches_the_target_sensitivity_midway_between_two_scores(seed):
  probabilities, labels = over_confident(200, seed)
  scores = probabilities[:, MALIGNANT]
  for target in (0.8, 0.9, 0.95, 1.0):
    threshold = calibration.malignant_threshold(scores, labels == MALIGNANT, target)
    found = calibration.operating_point_summary(probabilities, labels, threshold)
    assert found['sensitivity'] >= target
    assert threshold not in scores
    # Midway between the lowest score it calls malignant that the target needs and the next.
    kth = np.sort(scores[labels == MALIGNANT])[::-1][int(np.ceil(target * np.sum(
        labels == MALIGNANT))) - 1]
    assert threshold == pytest.approx(min((kth + scores[scores < kth].max()) / 2, 0.5))


def test_threshold_is_never_above_what_the_most_probable_class_calls_malignant():
  # Separable and saturated: every malignant image at 1.0, every other at 0.0.
  labels = np.array([MALIGNANT] * 30 + [0] * 50)
  saturated = np.eye(3)[labels]
  threshold = calibration.malignant_threshold(saturated[:, MALIGNANT], labels == MALIGNANT, 0.9)
  assert threshold == calibration.HIGHEST_THRESHOLD
  decided = calibration.operating_point_labels(saturated, threshold)
  assert (decided == saturated.argmax(axis=1)).all()
  # Separable, not saturated, few scores in between: the k-th malignant score is 0.95 and the
  # next lower 0.8, yet the threshold stays at 0.5, where malignant is the most probable class.
  graded = np.array([[0.025, 0.95, 0.025]] * 27 + [[0.1, 0.8, 0.1]] * 3 +
                    [[0.15, 0.8, 0.05]] * 2 + [[0.9, 0.05, 0.05]] * 48)
  graded_labels = np.array([MALIGNANT] * 30 + [0] * 50)
  threshold = calibration.malignant_threshold(graded[:, MALIGNANT], graded_labels == MALIGNANT,
                                              0.9)
  assert threshold == 0.5
  assert (calibration.operating_point_labels(graded, threshold) == graded.argmax(axis=1)).all()
  # Ties at the k-th score: all of them are called malignant.
  tied = np.array([0.3] * 10 + [0.6] * 10 + [0.3] * 5 + [0.1] * 5)
  is_malignant = np.array([True] * 20 + [False] * 10)
  threshold = calibration.malignant_threshold(tied, is_malignant, 0.9)
  assert threshold == pytest.approx(0.2)
  assert np.all(tied[is_malignant] >= threshold)


def test_the_temperature_never_saturates_an_underconfident_network():
  # An underconfident network (the synthetic data's first epochs): the NLL asks for T near 0.1.
  labels = np.arange(300) % 3
  probabilities = np.full((300, 3), 0.3)
  probabilities[np.arange(300), labels] = 0.4
  temperature = calibration.fit_temperature(probabilities, labels)
  assert temperature == pytest.approx(calibration.TEMPERATURE_BOUNDS[0], rel=1e-3)
  point = calibration.choose_operating_point(probabilities, labels, 0.9)
  scaled = calibration.temperature_scale(probabilities, point.temperature)
  assert scaled.max() < 0.9  # (0.4 / 0.3) ** 4: sharper, not saturated
  assert point.malignant_threshold < scaled[labels == MALIGNANT, MALIGNANT].min()


def test_operating_point_labels_follow_the_threshold():
  probabilities = np.array([[0.6, 0.3, 0.1],    # malignant crosses 0.25
                            [0.7, 0.2, 0.1],    # does not: benign, the more probable other
                            [0.1, 0.2, 0.7],    # does not: normal
                            [0.2, 0.45, 0.35]])  # crosses
  assert calibration.operating_point_labels(probabilities, 0.25).tolist() == [1, 0, 2, 1]
  assert calibration.operating_point_labels(probabilities, 0.5).tolist() == [0, 0, 2, 2]


def test_temperature_scaling_lowers_the_calibration_error_of_an_over_confident_model():
  probabilities, labels = over_confident(3000, seed=1)
  temperature = calibration.fit_temperature(probabilities, labels)
  assert temperature > 1.5  # softens an over-confident model
  before = calibration.expected_calibration_error(probabilities, labels)
  after = calibration.expected_calibration_error(
      calibration.temperature_scale(probabilities, temperature), labels)
  assert after < before / 2 and after < 0.05, (before, after)
  assert calibration.fit_temperature(*over_confident(3000, 2, sharpness=1.0)) == pytest.approx(
      1.0, abs=0.15)  # an already calibrated model is left nearly alone


def test_calibration_error_and_brier_score_on_known_values():
  probabilities = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1],
                            [0.6, 0.3, 0.1]])
  labels = [0, 1, 0, 0]
  # Bin (0.8, 0.9]: confidence 0.9, accuracy 0.5; bin (0.5, 0.6]: confidence 0.6, accuracy 1.
  assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(
      0.5 * 0.4 + 0.5 * 0.4)
  table = calibration.reliability_table(probabilities, labels)
  assert collections.Counter(row['count'] for row in table) == {0: 8, 2: 2}
  assert calibration.brier_score(np.eye(3), [0, 1, 2]) == 0.0
  assert calibration.brier_score(np.array([[0.5, 0.5, 0.0]]), [0]) == pytest.approx(0.5)


def test_the_exported_label_follows_the_threshold():
  """The SavedModel's decision (in the graph) against the rule above, on the same numbers."""
  probabilities = RNG_PROBABILITIES
  for threshold in (0.1, 0.3, 0.5, 0.9):
    exported = export.ExportModule._decision(  # pylint: disable=protected-access
        types.SimpleNamespace(_threshold=tf.constant(threshold)), tf.constant(probabilities))
    assert exported.numpy().tolist() == calibration.operating_point_labels(
        probabilities, threshold).tolist()
  # No threshold (no calibration set): the most probable class.
  exported = export.ExportModule._decision(  # pylint: disable=protected-access
      types.SimpleNamespace(_threshold=tf.constant(2.0)), tf.constant(probabilities))
  assert exported.numpy().tolist() == probabilities.argmax(axis=1).tolist()


def test_each_member_trains_on_everything_but_its_held_out_fold():
  groups = [f'group {number // 3}' for number in range(300)]  # groups of three
  labels = [(number // 3) % 3 for number in range(300)]
  examples = tf.data.Dataset.from_tensor_slices(
      (tf.zeros([300, 2, 2, 3]), tf.constant(labels, tf.int64), tf.constant(groups)))
  groups_of = lambda dataset: {group.numpy() for _, _, group in dataset}
  folds = datasets.HeldOutFolds(examples, 3, 15)
  held_out = [groups_of(folds.held_out(member)) for member in range(3)]
  for member in range(3):
    training = groups_of(folds.training(member))
    assert training and held_out[member] and not training & held_out[member]
    assert len(training) + len(held_out[member]) == 100
  assert set().union(*held_out) == groups_of(examples)  # every example held out once
  assert sum(map(len, folds.labels_of_fold)) == 300
  # One network: a calibration set of about 15 % of the groups, held out from it.
  single = datasets.HeldOutFolds(examples, 1, 15)
  assert single.folds == 1
  assert 12 <= len(groups_of(single.held_out(0))) <= 18
  assert not groups_of(single.held_out(0)) & groups_of(single.training(0))


def test_the_review_band_holds_the_budgeted_share_of_the_predictions_it_was_chosen_on():
  scores = np.random.default_rng(5).beta(0.6, 1.5, size=400)
  threshold = 0.2
  for fraction in (0.05, 0.1, 0.25):
    width = calibration.review_half_width(scores, threshold, fraction)
    low, high = calibration.review_band(threshold, width)
    inside = np.sum((scores >= low) & (scores <= high))
    assert inside == int(fraction * 400)
    # Symmetric in log-odds around the threshold.
    assert np.isclose(calibration.log_odds(threshold) - calibration.log_odds(low),
                      calibration.log_odds(high) - calibration.log_odds(threshold))
  assert calibration.review_half_width(scores, None, 0.1) is None
  assert calibration.review_half_width(scores, threshold, 0.0) is None
  # Too few predictions for the budget to hold one: a band that holds none of them, however far
  # from the threshold they all are.
  saturated = np.array([1e-9, 1e-9, 1 - 1e-9, 1e-9, 1 - 1e-9, 1e-9])
  low, high = calibration.review_band(
      0.5, calibration.review_half_width(saturated, 0.5, 0.1))
  assert not np.any((saturated >= low) & (saturated <= high))


def test_review_reasons_name_the_band_and_the_members_that_disagree():
  # Two members; the ensemble is their mean. Threshold 0.3, band 0.254–0.35. Members disagree
  # when one is above the band and another below it.
  width = float(calibration.log_odds(0.35) - calibration.log_odds(0.3))
  members = np.array([
      [[0.67, 0.31, 0.02], [0.10, 0.80, 0.10], [0.85, 0.05, 0.10], [0.50, 0.10, 0.40]],
      [[0.65, 0.33, 0.02], [0.15, 0.75, 0.10], [0.05, 0.90, 0.05], [0.30, 0.50, 0.20]],
  ])
  reasons = calibration.review_reasons(members.mean(axis=0), members, 0.3, width)
  assert reasons == [calibration.NEAR_THRESHOLD, '', calibration.MEMBERS_DISAGREE,
                     f'{calibration.NEAR_THRESHOLD}; {calibration.MEMBERS_DISAGREE}']
  # Without a threshold: the members' most probable classes, and no band.
  assert calibration.review_reasons(members.mean(axis=0), members, None, None) == [
      '', '', calibration.MEMBERS_DISAGREE, calibration.MEMBERS_DISAGREE]


def test_the_exported_review_flag_follows_the_rule():
  """The SavedModel's review flag and reason (in the graph) against calibration.review_reasons,
  on three members' probabilities with a temperature."""
  rng = np.random.default_rng(8)
  members = rng.dirichlet([1, 1, 1], size=(3, 300)).astype(np.float32)
  temperature, threshold = 1.3, 0.3
  calibrated_members = np.stack([calibration.temperature_scale(member, temperature)
                                 for member in members])
  ensemble = calibration.temperature_scale(members.mean(axis=0), temperature)
  width = calibration.review_half_width(ensemble[:, MALIGNANT], threshold, 0.2)
  module = types.SimpleNamespace(
      _threshold=tf.constant(threshold), _temperature=tf.constant(temperature),
      _review_half_width=tf.constant(width, tf.float32),
      _review_reasons=tf.constant(calibration.REVIEW_REASONS))
  module._decision = lambda probabilities: export.ExportModule._decision(module, probabilities)  # pylint: disable=protected-access
  module._calibrated = lambda uncalibrated: export.calibrated(uncalibrated, module._temperature)  # pylint: disable=protected-access
  codes, reasons = export.ExportModule._review(  # pylint: disable=protected-access
      module, tf.constant(members), tf.constant(ensemble))
  expected = calibration.review_reasons(ensemble, calibrated_members, threshold, width)
  # Both kinds of reason occur, and neither everywhere.
  assert 0 < sum(calibration.NEAR_THRESHOLD in reason for reason in expected) < 300
  assert 0 < sum(calibration.MEMBERS_DISAGREE in reason for reason in expected) < 300
  assert [reason.decode() for reason in reasons.numpy()] == expected
  assert [calibration.REVIEW_REASONS[code] for code in codes.numpy()] == expected
