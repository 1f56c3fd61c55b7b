"""The clinical decisions made on the calibration set: the split by group, the malignant threshold,
temperature scaling, and the calibration metrics, on data whose answers are known."""

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


@pytest.mark.parametrize('seed', range(5))
def test_threshold_reaches_the_target_sensitivity_on_its_own_set(seed):
  probabilities, labels = over_confident(200, seed)
  for target in (0.8, 0.9, 0.95, 1.0):
    threshold = calibration.malignant_threshold(probabilities[:, MALIGNANT], labels == MALIGNANT,
                                                target)
    found = calibration.operating_point_summary(probabilities, labels, threshold)
    assert found['sensitivity'] >= target
    # The highest such threshold: a hair above it misses the target.
    above = calibration.operating_point_summary(probabilities, labels, threshold + 1e-9)
    assert above['sensitivity'] < target


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


def test_calibration_set_shares_no_group_with_what_the_network_is_fitted_on():
  groups = [f'group {number // 3}' for number in range(300)]  # groups of three
  labels = [(number // 3) % 3 for number in range(300)]
  examples = tf.data.Dataset.from_tensor_slices(
      (tf.zeros([300, 2, 2, 3]), tf.constant(labels, tf.int64), tf.constant(groups)))
  fitting, calibration_set = datasets.split_for_calibration(examples, 15)
  fitting_groups = {group.numpy() for _, _, group in fitting}
  calibration_groups = {group.numpy() for _, _, group in calibration_set}
  assert fitting_groups and calibration_groups and not fitting_groups & calibration_groups
  assert len(fitting_groups) + len(calibration_groups) == 100
  assert 12 <= len(calibration_groups) <= 18
