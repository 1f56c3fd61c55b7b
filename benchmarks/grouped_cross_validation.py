"""Benchmark: grouped k-fold cross-validation of the networks on a data root.

    python -m benchmarks.grouped_cross_validation --data-root ../shared/data/busi
        [--folds 5] [--repeats 3] [--models sepconv_residual seed] [--image-size 180] [--epochs N]
        [--run-folds 0 1 ...] [--run-repeats 1 2 ...] [--calibration-percent 15]
        [--target-malignant-sensitivity 0.9]
        [--members 1 2 3] [--ship-cross-fitted] [--cross-fit-folds 4] [--no-operating-point]
        [--hyperparameters '{"width": 1.25}'] [--json results.json]
    python -m benchmarks.grouped_cross_validation --compare base.json new.json [--baseline NAME]

Folds are made as ImageExampleGen makes its split: images are grouped by perceptual hash
(near-duplicates, transitively), label conflicts are left out, and whole groups are dealt to
folds stratified by label. So no test image has a near-duplicate among its training images.
Images are decoded and resized by the same function as Transform, and each fold is trained as
the Trainer trains: the fold's training part dealt by group to `--cross-fit-folds` held-out
folds (at least one per ensemble member; one network: a calibration set), a network fitted on the
rest of each by `models.training.train_ensemble` with its recipe, the temperature and the
malignant threshold chosen on their out-of-fold predictions, then the members refitted on the
whole training part to be scored. `--no-operating-point` trains only the members that ship, for
levers judged on accuracy, macro AUC and calibration before any temperature. For each network it
prints per-fold and mean ± standard deviation of accuracy, macro-F1, one-vs-rest macro AUC, per-class recall, malignant
sensitivity and specificity at the shipped operating point, expected calibration error before
and after temperature scaling, and training seconds; per fold also the threshold, the
temperature and how many malignant images they were chosen on. `--members` trains ensembles of
several sizes, each on its own deal.

Repeated: `--repeats R` deals the same groups (whole, stratified by label) to the folds R
times: repeat 0 is the folds above, repeat r an order of the groups of its own (salted), so a
difference is measured on R × folds test folds.

Paired comparison: every network is measured on the same folds, so two networks are compared
fold by fold. With `--compare FILE ...` (files written by `--json`) nothing is trained: for each
network in the files, it prints the mean per-fold difference from the baseline network (`--baseline`,
default the first in the files) over the (repeat, fold) pairs both have, and its standard error
corrected for the folds' overlapping training parts (Nadeau and Bengio, 2003; Bouckaert and Frank,
2004): sd·√(1/n + 1/(k − 1)) over n pairs of k-fold cross-validation, where sd/√n would pretend
the folds independent (for one repeat of five folds the corrected error is 1.5 times that). A
change is worth keeping when the difference is larger than twice its standard error.
"""

import argparse
import itertools
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

from cli import command_line

command_line.prepare_environment()

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

from components import near_duplicates  # pylint: disable=g-import-not-at-top
from components.image_example_gen import split_plan  # pylint: disable=g-import-not-at-top
from evaluation import classification_statistics  # pylint: disable=g-import-not-at-top
from evaluation.metric_names import ACCURACY  # pylint: disable=g-import-not-at-top
from inputs import image_files  # pylint: disable=g-import-not-at-top
from models import calibration, features, group_split, model, networks, preprocessing, training  # pylint: disable=g-import-not-at-top

BATCH_SIZE = 32


def load_images(data_root: str, image_size: int, folds: int):
  """(pixels [n, s, s, 3], labels [n], fold [n], near-duplicate group [n]) of the images that
  are not label conflicts."""
  records = []
  for class_name in features.LABEL_NAMES:
    folder = os.path.join(data_root, class_name)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
      relative = f'{class_name}/{name}'
      if image_files.classify_name(relative, os.path.join(folder, name))['kind'] != 'image':
        continue
      with Image.open(os.path.join(folder, name)) as image:
        records.append({'file': relative, 'label': class_name,
                        'hash': near_duplicates.perceptual_hash(image)})
  plan, _ = split_plan.plan_splits(records, list(range(1, folds + 1)),
                                   near_duplicates.DEFAULT_MAX_DISTANCE, 'exclude',
                                   excluded_index=folds)
  kept = [record for record in records if plan[record['file']][0] < folds]
  encoded = tf.constant([tf.io.read_file(os.path.join(data_root, record['file'])).numpy()
                         for record in kept])
  pixels = np.concatenate([
      preprocessing.decode_and_resize(encoded[start:start + 64], image_size).numpy()
      for start in range(0, len(kept), 64)])
  labels = np.array([features.LABEL_NAMES.index(record['label']) for record in kept])
  fold = np.array([plan[record['file']][0] for record in kept])
  groups = np.array([plan[record['file']][1] for record in kept])
  print(f'{len(records)} images, {len(records) - len(kept)} in label conflicts left out, '
        f'{len(set(plan[r["file"]][1] for r in kept))} groups in {folds} folds '
        f'(images per fold: {np.bincount(fold).tolist()})', flush=True)
  return pixels, labels, fold, groups


def repeated_folds(labels: np.ndarray, groups: np.ndarray, fold: np.ndarray, folds: int,
                   repeat: int) -> np.ndarray:
  """The fold of each image in repeat `repeat`: the planned folds for 0, else the same groups
  dealt whole and stratified by label in an order salted by the repeat."""
  if repeat == 0:
    return fold
  dealt = group_split.assign_group_splits(
      group_split.group_summary(labels.tolist(), groups.tolist()), list(range(1, folds + 1)),
      salt=f'repeat {repeat}')
  return np.array([dealt[group] for group in groups])


def score(labels: np.ndarray, uncalibrated: np.ndarray,
          operating_point: Optional[calibration.OperatingPoint]) -> Dict[str, float]:
  """The Evaluator's metrics (evaluation/classification_statistics.py, models/calibration.py) of
  one fold, on the probabilities under the point's temperature; without a point, those that
  need none, on the probabilities as they are (the others NaN)."""
  probabilities = (calibration.temperature_scale(uncalibrated, operating_point.temperature)
                   if operating_point else uncalibrated)
  statistics = classification_statistics.probability_statistics(labels, probabilities)
  counts = classification_statistics.confusion_counts_of(labels, probabilities.argmax(axis=1))
  per_class = classification_statistics.class_precision_recall(counts)
  result = {'accuracy': statistics[ACCURACY], 'macro_f1': statistics['macro_f1'],
            'macro_auc': statistics['macro_auc']}
  for name in features.LABEL_NAMES:
    result[f'recall_{name}'] = per_class[f'recall_{name}']
  result['ece_before'] = calibration.expected_calibration_error(uncalibrated, labels)
  if operating_point is None:
    return result | {column: np.nan for column in ('sensitivity', 'specificity', 'regret',
                                                   'ece_after')}
  threshold = operating_point.malignant_threshold
  at_point = calibration.operating_point_summary(
      probabilities, labels, threshold if threshold is not None else 2.0)
  result['sensitivity'] = at_point['sensitivity']
  result['specificity'] = at_point['specificity']
  result['regret'] = classification_statistics.specificity_regret(
      labels, probabilities[:, features.MALIGNANT_LABEL],
      calibration.operating_point_labels(probabilities, threshold if threshold is not None else 2.0)
      == features.MALIGNANT_LABEL)
  result['ece_after'] = calibration.expected_calibration_error(probabilities, labels)
  return result


def predict(members: List, pixels: np.ndarray, flips: bool) -> np.ndarray:
  if len(pixels) == 0:
    return np.zeros((0, len(features.LABEL_NAMES)))
  return np.concatenate([training.predict_probabilities(members, pixels[start:start + 64],
                                                        flips).numpy()
                         for start in range(0, len(pixels), 64)])


def run_fold(network: str, pixels, labels, fold, groups, test_fold: int, image_size: int,
             epochs, seed: int, calibration_percent: float, target_sensitivity: float,
             members: int, hyperparameters: Optional[Dict] = None,
             ship_cross_fitted: bool = False,
             cross_fit_folds: int = calibration.DEFAULT_CROSS_FIT_FOLDS,
             operating_point: bool = True) -> Dict[str, float]:
  """Trains on the other folds as the Trainer does: the training part dealt by group to
  `cross_fit_folds` folds (at least one per member; one network: a calibration set), a network
  (seed `seed + f`) fitted on all but fold f, the operating point chosen on their out-of-fold
  predictions; then an ensemble of `members` refitted on the whole training part from the same
  seeds (`ship_cross_fitted`: the cross-fitted networks instead) is scored on the test fold.
  Without `operating_point` only the networks that ship are trained (an ensemble on the whole
  training part, one network without its calibration set) and scored before any temperature:
  the columns that need the point are NaN."""
  train = np.flatnonzero(fold != test_fold)
  dealt = (members if ship_cross_fitted
           else model.cross_fit_folds({model.CROSS_FIT_FOLDS_KEY: cross_fit_folds}, members))
  held_out = np.array(group_split.held_out_folds(labels[train].tolist(), groups[train].tolist(),
                                                 dealt, calibration_percent))
  test = np.flatnonzero(fold == test_fold)
  flips = networks.RECIPES[network].test_time_flips

  def train_members(member_indices):
    # One dataset per distinct part, as the Trainer's refitted members share theirs (a recipe
    # that distils trains one teacher per dataset).
    datasets = {}
    for indices in member_indices:
      datasets.setdefault(id(indices), training.prefetched(
          tf.data.Dataset.from_tensor_slices((pixels[indices], labels[indices]))
          .shuffle(len(indices), seed=seed, reshuffle_each_iteration=True).batch(BATCH_SIZE)))
    return training.train_ensemble(
        network, image_size, [datasets[id(indices)] for indices in member_indices],
        None, epochs=epochs, seed=seed, verbose=0, hyperparameters=hyperparameters)[0]

  started = time.time()
  refit = members > 1 and not ship_cross_fitted
  point = None
  if operating_point or not refit:
    trained = train_members([train[held_out != index] for index in range(dealt)])
  if operating_point:
    chosen = [(trained[index], train[held_out == index]) for index in range(dealt)
              if np.any(held_out == index)]
    point = calibration.choose_operating_point(
        np.concatenate([predict([chooser], pixels[indices], flips)
                        for chooser, indices in chosen]),
        np.concatenate([labels[indices] for _, indices in chosen]), target_sensitivity)
  if refit:
    trained = train_members([train] * members)
  seconds = time.time() - started
  uncalibrated = predict(trained, pixels[test], flips)
  result = score(labels[test], uncalibrated, point)
  result['train_seconds'] = seconds
  result['threshold'] = point.malignant_threshold if point else None
  result['temperature'] = point.temperature if point else np.nan
  result['chosen_on_malignant'] = point.calibration_malignant if point else 0
  return result


COLUMNS = ('accuracy', 'macro_f1', 'macro_auc', *(f'recall_{name}' for name in features.LABEL_NAMES),
           'sensitivity', 'specificity', 'regret', 'ece_before', 'ece_after', 'train_seconds')


HEADINGS = {'recall_benign': 'rec. benign', 'recall_malignant': 'rec. malignant',
            'recall_normal': 'rec. normal', 'sensitivity': 'sens. @ point',
            'specificity': 'spec. @ point', 'regret': 'spec. regret', 'ece_before': 'ECE before', 'ece_after': 'ECE after',
            'train_seconds': 'train s'}


def format_table(network: str, rows: List[Dict[str, float]]) -> str:
  header = f'{network:<20} ' + ' '.join(f'{HEADINGS.get(column, column):>14}'
                                         for column in COLUMNS)
  lines = [header]
  # Files written before a column existed have NaN in it.
  rows = [{column: np.nan for column in COLUMNS} | row for row in rows]
  for row in rows:
    name = f'{row.get("repeat", 0)}.{row["fold"]}'
    lines.append(f'  fold {name:<13} ' + ' '.join(
        f'{row[column]:>14.1f}' if column == 'train_seconds' else f'{row[column]:>14.3f}'
        for column in COLUMNS))
  means = {column: np.mean([row[column] for row in rows]) for column in COLUMNS}
  spreads = {column: np.std([row[column] for row in rows]) for column in COLUMNS}
  lines.append(f'  {"mean ± sd":<18} ' + ' '.join(
      f'{f"{means[column]:.0f} ± {spreads[column]:.0f}":>14}' if column == 'train_seconds'
      else f'{f"{means[column]:.3f} ± {spreads[column]:.3f}":>14}' for column in COLUMNS))
  return '\n'.join(lines)


PAIRED_COLUMNS = ('accuracy', 'macro_f1', 'macro_auc', 'sensitivity', 'specificity', 'regret',
                  'ece_before', 'ece_after', 'train_seconds')


def _test_fold(row: Dict[str, float]):
  # Results written before --repeats have no repeat: theirs is repeat 0.
  return row.get('repeat', 0), row['fold']


def paired_differences(baseline: List[Dict[str, float]], candidate: List[Dict[str, float]],
                       folds: int) -> Dict[str, Dict[str, float]]:
  """{column: {mean, se, folds}}: the candidate's difference from the baseline on each (repeat,
  fold) both were measured on, its mean and its standard error corrected for `folds`-fold
  cross-validation's overlapping training parts (module docstring)."""
  by_fold = {_test_fold(row): row for row in baseline}
  pairs = [(row, by_fold[_test_fold(row)]) for row in candidate if _test_fold(row) in by_fold]
  result = {}
  for column in PAIRED_COLUMNS:
    differences = np.array([mine.get(column, np.nan) - theirs.get(column, np.nan)
                            for mine, theirs in pairs])
    n = len(differences)
    spread = (differences.std(ddof=1) * np.sqrt(1 / n + 1 / (folds - 1)) if n > 1 and folds > 1
              else np.nan)
    result[column] = {'mean': float(differences.mean()) if n else np.nan,
                      'se': float(spread), 'folds': n}
  return result


def format_paired(baseline_name: str, results: Dict[str, List[Dict[str, float]]],
                  folds: int) -> str:
  lines = [f'paired against {baseline_name}: mean per-fold difference ± standard error, corrected '
           f'for {folds}-fold cross-validation (* beyond 2 standard errors)',
           f'{"network":<36} {"folds":>5} ' + ' '.join(
               f'{HEADINGS.get(column, column):>18}' for column in PAIRED_COLUMNS)]
  for name, rows in results.items():
    if name == baseline_name:
      continue
    paired = paired_differences(results[baseline_name], rows, folds)
    cells = []
    for column in PAIRED_COLUMNS:
      mean, se = paired[column]['mean'], paired[column]['se']
      mark = '*' if abs(mean) > 2 * se else ' '
      cells.append(f'{f"{mean:+.0f} ± {se:.0f}{mark}":>18}' if column == 'train_seconds'
                   else f'{f"{mean:+.3f} ± {se:.3f}{mark}":>18}')
    lines.append(f'{name:<36} {paired["accuracy"]["folds"]:>5} ' + ' '.join(cells))
  return '\n'.join(lines)


def compare(paths: Sequence[str], baseline: Optional[str]) -> int:
  results: Dict[str, List[Dict[str, float]]] = {}
  folds = set()
  for path in paths:
    with open(path) as handle:
      found = json.load(handle)
      folds.add(found['arguments']['folds'])
      for name, rows in found['results'].items():
        # The same network under other hyperparameters: told apart by its file's name.
        stem = os.path.splitext(os.path.basename(path))[0]
        results[f'{name} [{stem}]' if name in results else name] = rows
  if not results:
    print('no results in ' + ', '.join(paths), file=sys.stderr)
    return 2
  if len(folds) > 1:
    print(f'the files cross-validate with different numbers of folds ({sorted(folds)}): their '
          'folds are not the same, so nothing pairs', file=sys.stderr)
    return 2
  baseline = baseline or next(iter(results))
  if baseline not in results:
    print(f'--baseline {baseline}: not in the files (they hold {", ".join(results)})',
          file=sys.stderr)
    return 2
  for network, rows in results.items():
    print(format_table(network, rows))
    print()
  print(format_paired(baseline, results, folds.pop()))
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root')
  parser.add_argument('--compare', nargs='+', metavar='RESULTS_JSON',
                      help='train nothing: compare the networks of these --json files, paired by '
                      'fold')
  parser.add_argument('--baseline', help='with --compare: the network the others are paired '
                      'against (default: the first in the files)')
  parser.add_argument('--folds', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=1,
                      help='deal the groups to the folds this many times (module docstring)')
  parser.add_argument('--models', nargs='+', default=[networks.DEFAULT_NETWORK, 'seed'],
                      choices=sorted(networks.RECIPES))
  parser.add_argument('--image-size', type=int, default=features.DEFAULT_IMAGE_SIZE)
  parser.add_argument('--epochs', type=int, help="override each recipe's epochs")
  parser.add_argument('--run-folds', type=int, nargs='+',
                      help='test only these folds (default: all)')
  parser.add_argument('--run-repeats', type=int, nargs='+',
                      help='deal and test only these repeats (default: 0 to --repeats - 1), '
                      'e.g. 1 2 for a file to --compare beside one of repeat 0')
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--calibration-percent', type=float, default=15.0,
                      help="with one network: the share of each fold's training part set aside "
                      'to choose the operating point (default: %(default)s, as the Trainer)')
  parser.add_argument('--target-malignant-sensitivity', type=float,
                      default=calibration.DEFAULT_TARGET_SENSITIVITY)
  parser.add_argument('--members', type=int, nargs='+',
                      help='score cross-fitted ensembles of these sizes, each trained on its own '
                      "(default: each recipe's)")
  parser.add_argument('--hyperparameters', type=json.loads,
                      help='JSON object of hyperparameters to train with, e.g. the Tuner\'s best '
                      '(as `runs.inspect models --json` shows them): {"width": 1.25, ...}')
  parser.add_argument('--ship-cross-fitted', action='store_true',
                      help='score the cross-fitted members themselves instead of an ensemble '
                      'refitted on the whole training part (as the Trainer ships it)')
  parser.add_argument('--cross-fit-folds', type=int, default=calibration.DEFAULT_CROSS_FIT_FOLDS,
                      help='for an ensemble: the folds its training part is dealt to, one '
                      'cross-fitted network each, as the Trainer (default: %(default)s)')
  parser.add_argument('--no-operating-point', dest='operating_point', action='store_false',
                      help='train only the networks that ship and score what needs no operating '
                      'point (accuracy, macro-F1, AUC, recalls, ECE before any temperature): '
                      'for an ensemble of two, about 0.4 of the cost')
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  if args.compare:
    return compare(args.compare, args.baseline)
  if not args.data_root or not os.path.isdir(args.data_root):
    parser.error(f'data root {args.data_root} is not a folder')

  pixels, labels, fold, groups = load_images(args.data_root, args.image_size, args.folds)
  results = {}
  for network in args.models:
    for size in sorted(set(args.members or [networks.RECIPES[network].members])):
      name = (network if size == 1 else f'{network} ×{size}') + (
          ' cross-fitted' if args.ship_cross_fitted and size > 1 else '')
      for repeat, test_fold in itertools.product(args.run_repeats or range(args.repeats),
                                                 args.run_folds or range(args.folds)):
        row = run_fold(network, pixels, labels,
                       repeated_folds(labels, groups, fold, args.folds, repeat), groups,
                       test_fold, args.image_size, args.epochs, args.seed,
                       args.calibration_percent, args.target_malignant_sensitivity, size,
                       args.hyperparameters, args.ship_cross_fitted, args.cross_fit_folds,
                       args.operating_point)
        row['repeat'], row['fold'] = repeat, test_fold
        results.setdefault(name, []).append(row)
        print(f'{name} repeat {repeat} fold {test_fold}: ' + ', '.join(
            f'{column} {row[column]:.3f}' for column in COLUMNS) +
              f'; threshold {row["threshold"]}, temperature {row["temperature"]:.3f}, chosen on '
              f'{row["chosen_on_malignant"]} malignant images', flush=True)
  print()
  for network, rows in results.items():
    print(format_table(network, rows))
    print()
  if len(results) > 1:
    print(format_paired(next(iter(results)), results, args.folds))
  if args.json:
    with open(args.json, 'w') as handle:
      json.dump({'arguments': vars(args), 'results': results}, handle, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
