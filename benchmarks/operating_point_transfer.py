"""Benchmark: does the operating point chosen on out-of-sample predictions transfer to the model
that ships? Trains every network the candidate rules need once per fold, keeps their predictions,
then scores each rule on the held-back fold.

    python -m benchmarks.operating_point_transfer --data-root ../shared/data/busi
        --predictions /tmp/transfer [--folds 5] [--cross-fit 2 4] [--refit-members 2]
        [--run-folds 0 1 ...] [--epochs N]
    python -m benchmarks.operating_point_transfer --predictions /tmp/transfer   (score only)

The folds, seeds and training are the grouped cross-validation benchmark's
(benchmarks/grouped_cross_validation.py): per held-back fold, the training part is dealt by
near-duplicate group into K folds for each K of `--cross-fit` (member m, seed 42 + m, trains
without fold m: the "choosers"), and `--refit-members` members are trained on the whole training
part from the same seeds (the ensemble the Trainer ships). Every network's uncalibrated
probabilities (test-time flips as the recipe says) of every image are written to
`PREDICTIONS/fold_N.npz`; a fold whose file exists is not trained again, so a long run can be
resumed and new rules scored without training.

Each rule (`RULES`) turns one fold's predictions into a shipped model's probabilities on the
held-back images and an operating point (temperature, threshold). Per fold it prints the shipped
model's malignant sensitivity and specificity at its threshold, and the specificity regret: the
best specificity any threshold reaches on the held-back images at the shipped sensitivity, minus
the shipped specificity (0: no threshold would have called fewer non-malignant images malignant
for the cancers it found); ECE after calibration; then the mean and range over the folds.
"""

import argparse
import os
import sys
from typing import Callable, Dict, List, NamedTuple, Optional

from cli import command_line

command_line.prepare_environment()

import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import grouped_cross_validation as cross_validation  # pylint: disable=g-import-not-at-top
from evaluation import classification_statistics  # pylint: disable=g-import-not-at-top
from models import calibration, features, group_split, networks  # pylint: disable=g-import-not-at-top

MALIGNANT = features.MALIGNANT_LABEL


def train_fold(network: str, pixels, labels, fold, groups, test_fold: int, image_size: int,
               epochs, seed: int, cross_fit: List[int], refit_members: int) -> Dict[str, np.ndarray]:
  """{name: array} for one held-back fold: `deal_K` (the fold each training image is held out
  of, -1 for the test images), `chooser_K_m` and `refit_m` (probabilities of every image)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models import training  # pylint: disable=g-import-not-at-top
  train = np.flatnonzero(fold != test_fold)
  flips = networks.RECIPES[network].test_time_flips
  saved = {'labels': labels, 'test': (fold == test_fold)}

  def train_members(member_indices):
    return training.train_ensemble(
        network, image_size,
        [training.prefetched(tf.data.Dataset.from_tensor_slices((pixels[indices], labels[indices]))
                             .shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
                             .batch(cross_validation.BATCH_SIZE))
         for indices in member_indices],
        None, epochs=epochs, seed=seed, verbose=0)[0]

  for folds in cross_fit:
    deal = np.full(len(labels), -1)
    deal[train] = group_split.held_out_folds(labels[train].tolist(), groups[train].tolist(),
                                             folds, 0)
    saved[f'deal_{folds}'] = deal
    for member, model in enumerate(train_members([train[deal[train] != member]
                                                  for member in range(folds)])):
      saved[f'chooser_{folds}_{member}'] = cross_validation.predict([model], pixels, flips)
      print(f'  fold {test_fold}: chooser {member + 1} of {folds} trained', flush=True)
  for member, model in enumerate(train_members([train] * refit_members)):
    saved[f'refit_{member}'] = cross_validation.predict([model], pixels, flips)
  return saved


def conformal_point(confidence: float):
  """The threshold at the lowest-but-j malignant score such that, for exchangeable new
  malignant images, sensitivity ≥ target holds with `confidence` (the share of malignant scores
  above the j-th lowest of n is Beta(n + 1 − j, j))."""
  from scipy import stats  # pylint: disable=g-import-not-at-top

  def choose(probabilities, labels, target):
    point = calibration.choose_operating_point(probabilities, labels, target)
    calibrated = calibration.temperature_scale(probabilities, point.temperature)
    positives = labels == MALIGNANT
    count = int(positives.sum())
    below = max([j for j in range(1, count + 1)
                 if stats.beta.sf(target, count + 1 - j, j) >= confidence] or [1])
    needed = (count - below + 1) / count
    point.malignant_threshold = calibration.malignant_threshold(
        calibrated[:, MALIGNANT], positives, needed - 1e-9)
    return point

  return choose


METHODS = {
    'at target': lambda probabilities, labels, target: calibration.choose_operating_point(
        probabilities, labels, target),
    'conformal 0.8': conformal_point(0.8),
}


class Shipped(NamedTuple):
  members: np.ndarray  # [members, held-back images, classes], uncalibrated
  point: calibration.OperatingPoint
  chosen_on: np.ndarray  # the calibrated malignant probabilities the point was chosen on


def out_of_fold(saved, folds: int):
  """(uncalibrated probabilities, labels) of the training images, each by its chooser."""
  deal = saved[f'deal_{folds}']
  rows = np.flatnonzero(deal >= 0)
  probabilities = np.stack([saved[f'chooser_{folds}_{deal[row]}'][row] for row in rows])
  return probabilities, saved['labels'][rows]


def members_of(saved, prefix: str) -> np.ndarray:
  return np.stack([saved[key][saved['test']] for key in sorted(saved) if key.startswith(prefix)])


def shipped(members, point, probabilities) -> Shipped:
  return Shipped(members, point, calibration.temperature_scale(
      probabilities, point.temperature)[:, MALIGNANT])


def refit_rule(folds: int, method: str) -> Callable[..., Shipped]:
  def rule(saved, target):
    probabilities, labels = out_of_fold(saved, folds)
    return shipped(members_of(saved, 'refit_'), METHODS[method](probabilities, labels, target),
                   probabilities)
  return rule


def cross_fitted_rule(folds: int, method: str) -> Callable[..., Shipped]:
  def rule(saved, target):
    probabilities, labels = out_of_fold(saved, folds)
    return shipped(members_of(saved, f'chooser_{folds}_'),
                   METHODS[method](probabilities, labels, target), probabilities)
  return rule


def quantile_mapped_rule(folds: int) -> Callable[..., Shipped]:
  """The out-of-fold threshold moved to the same quantile of the refitted ensemble's
  (in-sample) malignant scores of the training images."""
  def rule(saved, target):
    probabilities, labels = out_of_fold(saved, folds)
    point = calibration.choose_operating_point(probabilities, labels, target)
    quantile = np.mean(calibration.temperature_scale(probabilities, point.temperature)[
        :, MALIGNANT] < point.malignant_threshold)
    refit = np.mean([saved[key] for key in sorted(saved) if key.startswith('refit_')], axis=0)
    in_sample = calibration.temperature_scale(refit[saved[f'deal_{folds}'] >= 0],
                                              point.temperature)[:, MALIGNANT]
    point.malignant_threshold = float(np.quantile(in_sample, quantile))
    return shipped(members_of(saved, 'refit_'), point, probabilities)
  return rule


RULES: Dict[str, Callable[..., Shipped]] = {}
for _method in METHODS:
  RULES[f'×2 choose, refit ships [{_method}]'] = refit_rule(2, _method)
  RULES[f'×4 choose, refit ships [{_method}]'] = refit_rule(4, _method)
  RULES[f'×4 cross-fitted ship [{_method}]'] = cross_fitted_rule(4, _method)
  RULES[f'×2 cross-fitted ship [{_method}]'] = cross_fitted_rule(2, _method)
RULES['×2 quantile-mapped to the refit'] = quantile_mapped_rule(2)
RULES['×4 quantile-mapped to the refit'] = quantile_mapped_rule(4)


def best_specificity(scores: np.ndarray, is_malignant: np.ndarray, sensitivity: float) -> float:
  """The highest specificity of any threshold on `scores` whose sensitivity is ≥ `sensitivity`."""
  positives = np.sort(scores[is_malignant])[::-1]
  found = int(np.ceil(sensitivity * len(positives) - 1e-9))
  if found == 0:
    return 1.0
  kth = positives[found - 1]
  return float(np.mean(scores[~is_malignant] < kth))


REVIEW_FRACTIONS = (0.05, 0.10, 0.15, 0.20)


def score_rule(result: Shipped, labels: np.ndarray) -> Dict[str, float]:
  point = result.point
  probabilities = calibration.temperature_scale(result.members.mean(axis=0), point.temperature)
  at_point = calibration.operating_point_summary(probabilities, labels, point.malignant_threshold)
  decided = calibration.operating_point_labels(probabilities, point.malignant_threshold)
  row = {'sensitivity': at_point['sensitivity'], 'specificity': at_point['specificity'],
         'regret': classification_statistics.specificity_regret(
             labels, probabilities[:, MALIGNANT], decided == MALIGNANT),
         # Against the best threshold for the target itself: what overshooting it cost.
         'regret at target': best_specificity(probabilities[:, MALIGNANT], labels == MALIGNANT,
                                              point.target_sensitivity) - at_point['specificity'],
         'threshold': point.malignant_threshold,
         'temperature': point.temperature,
         'ece': calibration.expected_calibration_error(probabilities, labels),
         'auc': float(roc_auc(probabilities[:, MALIGNANT], labels == MALIGNANT))}
  calibrated_members = np.stack([calibration.temperature_scale(member, point.temperature)
                                 for member in result.members])
  missed = (labels == MALIGNANT) & (decided != MALIGNANT)
  for fraction in REVIEW_FRACTIONS:
    width = calibration.review_half_width(result.chosen_on, point.malignant_threshold, fraction)
    reasons = calibration.review_reasons(probabilities, calibrated_members,
                                         point.malignant_threshold, width)
    flagged = np.array([bool(reason) for reason in reasons])
    near = np.array([calibration.NEAR_THRESHOLD in reason for reason in reasons])
    kept = calibration.operating_point_summary(probabilities[~flagged], labels[~flagged],
                                               point.malignant_threshold)
    row[f'flagged {fraction}'] = flagged.mean()
    row[f'near {fraction}'] = near.mean()
    row[f'missed flagged {fraction}'] = (flagged & missed).sum() / max(missed.sum(), 1)
    row[f'unflagged sensitivity {fraction}'] = kept['sensitivity']
    row[f'unflagged specificity {fraction}'] = kept['specificity']
  return row


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  return metrics.roc_auc_score(positive, scores)


COLUMNS = ('sensitivity', 'specificity', 'regret', 'regret at target', 'ece', 'auc')


def report(predictions: str, target: float, rules: Optional[List[str]]) -> int:
  files = sorted(name for name in os.listdir(predictions)
                 if name.startswith('fold_') and name.endswith('.npz'))
  if not files:
    print(f'no fold_N.npz in {predictions}', file=sys.stderr)
    return 2
  folds = {int(name[5:-4]): dict(np.load(os.path.join(predictions, name))) for name in files}
  print(f'target sensitivity {target}; folds {sorted(folds)}; mean (range) over the folds')
  print(f'{"rule":<44} ' + ' '.join(f'{column:>18}' for column in COLUMNS) +
        '   per fold: sensitivity / specificity / regret / threshold')
  scored = {}
  for name, rule in RULES.items():
    if rules and not any(wanted in name for wanted in rules):
      continue
    try:
      rows = {number: score_rule(rule(saved, target), saved['labels'][saved['test']])
              for number, saved in folds.items()}
    except KeyError:  # the predictions lack a network this rule needs
      continue
    scored[name] = rows
    cells = []
    for column in COLUMNS:
      values = np.array([row[column] for row in rows.values()])
      cells.append(f'{values.mean():.3f} ({values.min():.2f}–{values.max():.2f})')
    per_fold = '  '.join(f'{row["sensitivity"]:.2f}/{row["specificity"]:.2f}/{row["regret"]:.2f}/'
                         f'{row["threshold"]:.3f}' for row in rows.values())
    print(f'{name:<44} ' + ' '.join(f'{cell:>18}' for cell in cells) + '   ' + per_fold)
  if len(folds) > 1 and len(scored) > 1:
    baseline_name, baseline = next(iter(scored.items()))
    print(f'\npaired differences from "{baseline_name}", mean ± standard error over the folds')
    for name, rows in list(scored.items())[1:]:
      cells = []
      for column in COLUMNS:
        differences = np.array([rows[number][column] - baseline[number][column]
                                for number in rows])
        cells.append(f'{differences.mean():+.3f} ± '
                     f'{differences.std(ddof=1) / np.sqrt(len(differences)):.3f}')
      print(f'{name:<44} ' + ' '.join(f'{cell:>18}' for cell in cells))
  print()
  print('the review flag: its budget, the share of held-back images flagged (near the threshold), '
        'the share of missed cancers flagged, sensitivity and specificity of the unflagged decisions')
  for name, rows in scored.items():
    for fraction in REVIEW_FRACTIONS:
      mean = lambda key: np.mean([row[f'{key} {fraction}'] for row in rows.values()])
      print(f'{name:<44} {fraction:>5.2f}  flagged {mean("flagged"):.3f} ({mean("near"):.3f})  '
            f'missed flagged {mean("missed flagged"):.2f}  unflagged sensitivity '
            f'{mean("unflagged sensitivity"):.3f} specificity {mean("unflagged specificity"):.3f}')
  print()
  print('calibration of the refitted ensemble on the held-back images: ECE (10 bins) under each '
        'temperature (chosen on), and the ECE a perfectly calibrated model would show on as many')
  rows = calibration_rows(folds)
  names = [name for name in ('none', '×2', '×4', 'held-back', 'floor') if name in rows[min(rows)]]
  for number, row in rows.items():
    print(f'fold {number}: ' + '  '.join(
        f'{name} {row[name]:.3f}' + (f' (T {row["T " + name]:.2f})' if 'T ' + name in row else '')
        for name in names))
  print('mean:   ' + '  '.join(f'{name} {np.mean([row[name] for row in rows.values()]):.3f}'
                               for name in names))
  return 0


def calibration_rows(folds: Dict[int, Dict[str, np.ndarray]], draws: int = 200,
                     seed: int = 0) -> Dict[int, Dict[str, float]]:
  """Per fold, the held-back ECE of the refitted ensemble that ships, under the temperature
  chosen each way (none; on ×2 or ×4 out-of-fold predictions; on the held-back images
  themselves, the best a temperature can do for their likelihood), and `floor`: the mean ECE of
  a perfectly calibrated model with the ×4 temperature's confidences on as many images (labels
  drawn from its own probabilities), what sampling alone adds."""
  rows = {}
  generator = np.random.default_rng(seed)
  for number, saved in folds.items():
    labels = saved['labels'][saved['test']]
    refit = members_of(saved, 'refit_').mean(axis=0)
    temperatures = {'none': 1.0, 'held-back': calibration.fit_temperature(refit, labels)}
    for deal in (2, 4):
      if f'deal_{deal}' in saved:
        temperatures[f'×{deal}'] = calibration.fit_temperature(*out_of_fold(saved, deal))
    rows[number] = {name: calibration.expected_calibration_error(
        calibration.temperature_scale(refit, temperature), labels)
                    for name, temperature in temperatures.items()}
    rows[number].update({f'T {name}': temperature for name, temperature in temperatures.items()})
    calibrated = calibration.temperature_scale(refit, temperatures.get('×4', 1.0))
    cumulative = np.cumsum(calibrated, axis=1)
    rows[number]['floor'] = float(np.mean([calibration.expected_calibration_error(
        calibrated, (generator.random((len(labels), 1)) > cumulative).sum(axis=1))
        for _ in range(draws)]))
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root', help='train the folds missing from --predictions first')
  parser.add_argument('--predictions', required=True, help='folder of fold_N.npz')
  parser.add_argument('--folds', type=int, default=5)
  parser.add_argument('--run-folds', type=int, nargs='+')
  parser.add_argument('--cross-fit', type=int, nargs='+', default=[2, 4])
  parser.add_argument('--refit-members', type=int, default=2)
  parser.add_argument('--network', default=networks.DEFAULT_NETWORK, choices=sorted(networks.RECIPES))
  parser.add_argument('--image-size', type=int, default=features.DEFAULT_IMAGE_SIZE)
  parser.add_argument('--epochs', type=int)
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--target-malignant-sensitivity', type=float,
                      default=calibration.DEFAULT_TARGET_SENSITIVITY)
  parser.add_argument('--rules', nargs='+', help='score only the rules whose names contain these')
  args = parser.parse_args(argv)
  os.makedirs(args.predictions, exist_ok=True)
  if args.data_root:
    pixels, labels, fold, groups = cross_validation.load_images(args.data_root, args.image_size,
                                                                args.folds)
    for test_fold in args.run_folds or range(args.folds):
      path = os.path.join(args.predictions, f'fold_{test_fold}.npz')
      if os.path.exists(path):
        continue
      saved = train_fold(args.network, pixels, labels, fold, groups, test_fold, args.image_size,
                         args.epochs, args.seed, args.cross_fit, args.refit_members)
      np.savez(path + '.tmp.npz', **saved)
      os.replace(path + '.tmp.npz', path)
      print(f'fold {test_fold} written to {path}', flush=True)
  return report(args.predictions, args.target_malignant_sensitivity, args.rules)


if __name__ == '__main__':
  sys.exit(main())
