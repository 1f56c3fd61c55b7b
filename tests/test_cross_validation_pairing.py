"""The grouped cross-validation benchmark's paired comparison: fold by fold, with its standard
error."""

import math

import pytest

from benchmarks import grouped_cross_validation as benchmark


def _rows(accuracies, folds=None):
  return [{'fold': fold, **{column: accuracy for column in benchmark.PAIRED_COLUMNS}}
          for fold, accuracy in zip(folds or range(len(accuracies)), accuracies)]


def test_differences_are_paired_by_fold_with_their_standard_error():
  baseline = _rows([0.70, 0.72, 0.68, 0.60, 0.70])
  # The candidate's folds in another order, and one fold the baseline lacks.
  candidate = _rows([0.75, 0.80, 0.77, 0.82, 0.99], folds=[3, 0, 2, 1, 7])
  paired = benchmark.paired_differences(baseline, candidate)['accuracy']
  differences = [0.15, 0.10, 0.09, 0.10]  # folds 3, 0, 2, 1
  mean = sum(differences) / 4
  sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
  assert paired['folds'] == 4
  assert paired['mean'] == pytest.approx(mean)
  assert paired['se'] == pytest.approx(sd / 2)


def test_the_table_marks_only_differences_beyond_two_standard_errors():
  table = benchmark.format_paired('base', {
      'base': _rows([0.70, 0.72, 0.68, 0.60, 0.70]),
      'clearly better': _rows([0.80, 0.83, 0.77, 0.71, 0.80]),
      'no better': _rows([0.75, 0.70, 0.70, 0.55, 0.71])})
  rows = {line.split('  ')[0]: line for line in table.splitlines()[2:]}
  assert '+0.102 ± 0.004*' in rows['clearly better']
  assert '*' not in rows['no better']
