"""The grouped cross-validation benchmark's paired comparison: fold by fold, with its standard
error corrected for cross-validation, and its repeats: the same groups dealt again."""

import json
import math

import numpy as np
import pytest

from benchmarks import grouped_cross_validation as benchmark
from data import synthetic


def _rows(accuracies, folds=None, repeat=None):
  return [{'fold': fold, **({} if repeat is None else {'repeat': repeat}),
           **{column: accuracy for column in benchmark.PAIRED_COLUMNS}}
          for fold, accuracy in zip(folds or range(len(accuracies)), accuracies)]


def test_differences_are_paired_by_fold_with_their_standard_error():
  baseline = _rows([0.70, 0.72, 0.68, 0.60, 0.70])
  # The candidate's folds in another order, and one fold the baseline lacks.
  candidate = _rows([0.75, 0.80, 0.77, 0.82, 0.99], folds=[3, 0, 2, 1, 7])
  # A second repeat's folds pair with the baseline's second repeat only (none here); rows
  # written before repeats existed are repeat 0.
  candidate += _rows([0.0] * 5, repeat=1)
  paired = benchmark.paired_differences(baseline, candidate, folds=5)['accuracy']
  differences = [0.15, 0.10, 0.09, 0.10]  # folds 3, 0, 2, 1
  mean = sum(differences) / 4
  sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
  assert paired['folds'] == 4
  assert paired['mean'] == pytest.approx(mean)
  # Nadeau and Bengio's correction: the folds' training parts overlap (3 of 4 shared in
  # 5-fold), so sd/√4 would overstate the precision.
  assert paired['se'] == pytest.approx(sd * math.sqrt(1 / 4 + 1 / 4))
  assert paired['se'] == pytest.approx(sd / 2 * math.sqrt(2))


def test_the_table_marks_only_differences_beyond_two_standard_errors():
  table = benchmark.format_paired('base', {
      'base': _rows([0.70, 0.72, 0.68, 0.60, 0.70]),
      'clearly better': _rows([0.80, 0.83, 0.77, 0.71, 0.80]),
      'no better': _rows([0.75, 0.70, 0.70, 0.55, 0.71])}, folds=5)
  rows = {line.split('  ')[0]: line for line in table.splitlines()[2:]}
  # Differences 0.10, 0.11, 0.09, 0.11, 0.10: sd 0.0084, corrected error 0.0084·√0.45.
  assert '+0.102 ± 0.006*' in rows['clearly better']
  assert '*' not in rows['no better']


def test_a_repeat_deals_the_same_groups_whole_and_stratified_in_another_order():
  labels = np.repeat([0, 1, 2], [120, 60, 40])
  groups = np.array([f'g{index // 2}' for index in range(len(labels))])  # pairs, one label each
  planned = np.arange(len(labels)) // 2 % 5
  assert benchmark.repeated_folds(labels, groups, planned, 5, 0) is planned
  first = benchmark.repeated_folds(labels, groups, planned, 5, 1)
  second = benchmark.repeated_folds(labels, groups, planned, 5, 2)
  for fold in (first, second):
    for group in set(groups):  # whole groups
      assert len(set(fold[groups == group])) == 1
    for label, count in ((0, 120), (1, 60), (2, 40)):  # every fold a fifth of every class
      assert np.bincount(fold[labels == label], minlength=5).tolist() == [count // 5] * 5
  # Each repeat its own deal: an image changes fold between two repeats four times in five.
  assert np.mean(first != second) > 0.6
  assert np.array_equal(first, benchmark.repeated_folds(labels, groups, planned, 5, 1))


@pytest.fixture
def trained_parts(monkeypatch):
  """The training parts each `train_ensemble` call of the benchmark trained on (the number of
  images of each network's dataset), recorded around the real training."""
  calls = []
  train_ensemble = benchmark.training.train_ensemble

  def recorded(network, image_size, datasets, *args, **kwargs):
    calls.append([sum(int(labels.shape[0]) for _, labels in dataset) for dataset in datasets])
    return train_ensemble(network, image_size, datasets, *args, **kwargs)

  monkeypatch.setattr(benchmark.training, 'train_ensemble', recorded)
  return calls


def test_a_fold_is_trained_as_the_trainer_trains_or_only_what_ships(trained_parts):
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], [24, 16, 10])
  pixels = rng.random((len(labels), 16, 16, 3), dtype=np.float32)
  groups = np.array([f'g{index // 2}' for index in range(len(labels))])
  fold = benchmark.repeated_folds(labels, groups, None, 5, 1)
  training_part = int(np.sum(fold != 0))

  row = benchmark.run_fold('seed', pixels, labels, fold, groups, 0, 16, 1, 42, 15.0, 0.9,
                           members=2, cross_fit_folds=4)
  # Four cross-fitted networks, each on the training part less its fold (about three quarters),
  # then the two members refitted on all of it: as the Trainer's default (models/model.py).
  choosers, shipped = trained_parts
  assert len(choosers) == 4 and sum(training_part - size for size in choosers) == training_part
  assert shipped == [training_part] * 2
  # Every malignant image of the training part was predicted out of fold to choose the point.
  assert row['chosen_on_malignant'] == np.sum(labels[fold != 0] == 1)
  assert all(np.isfinite(row[column]) for column in ('sensitivity', 'specificity', 'ece_after'))

  trained_parts.clear()
  row = benchmark.run_fold('seed', pixels, labels, fold, groups, 0, 16, 1, 42, 15.0, 0.9,
                           members=2, cross_fit_folds=4, operating_point=False)
  assert trained_parts == [[training_part] * 2]  # only the members that ship
  assert all(np.isnan(row[column]) for column in ('sensitivity', 'specificity', 'regret',
                                                  'ece_after'))
  assert all(np.isfinite(row[column]) for column in ('accuracy', 'macro_auc', 'ece_before'))


def test_a_later_repeat_is_dealt_and_tested_alone(tmp_path):
  """`--run-repeats 1`: repeat 1's deal, without training repeat 0 again, for a file to compare
  beside one of repeat 0."""
  data_root = tmp_path / 'images'
  synthetic.generate_dataset(str(data_root), images_per_class=10, image_size=32, seed=0)
  results = tmp_path / 'results.json'
  assert benchmark.main(['--data-root', str(data_root), '--models', 'seed', '--image-size', '16',
                         '--epochs', '1', '--run-folds', '0', '--run-repeats', '1',
                         '--no-operating-point', '--json', str(results)]) == 0
  [rows] = json.loads(results.read_text())['results'].values()
  assert [(row['repeat'], row['fold']) for row in rows] == [(1, 0)]
