"""Benchmark: grouped k-fold cross-validation of the networks on a data root.

    python -m benchmarks.grouped_cross_validation --data-root ../shared/data/busi
        [--folds 5] [--models sepconv_residual seed] [--image-size 180] [--epochs N]
        [--run-folds 0 1 ...] [--calibration-percent 15] [--target-malignant-sensitivity 0.9]
        [--members 1 2 3] [--ship-cross-fitted] [--hyperparameters '{"width": 1.25}']
        [--json results.json]
    python -m benchmarks.grouped_cross_validation --compare base.json new.json [--baseline NAME]

Folds are made as ImageExampleGen makes its split: images are grouped by perceptual hash
(near-duplicates, transitively), label conflicts are left out, and whole groups are dealt to
folds stratified by label. So no test image has a near-duplicate among its training images.
Images are decoded and resized by the same function as Transform, and each fold is trained as
the Trainer trains: the fold's training part dealt by group to one held-out fold per ensemble
member (one network: a calibration set), each member fitted on the rest by
`models.training.train_ensemble` with its recipe, the temperature and the malignant threshold
chosen on the members' out-of-fold predictions, then the members refitted on the whole training
part to be scored. For each network it prints per-fold and mean ±
standard deviation of accuracy, macro-F1, one-vs-rest macro AUC, per-class recall, malignant
sensitivity and specificity at the shipped operating point, expected calibration error before
and after temperature scaling, and training seconds; per fold also the threshold, the
temperature and how many malignant images they were chosen on. `--members` trains ensembles of
several sizes, each on its own deal.

Paired comparison: every network is measured on the same folds, so two networks are compared
fold by fold. With `--compare FILE ...` (files written by `--json`) nothing is trained: for each
network in the files, it prints the mean per-fold difference from the baseline network (`--baseline`,
default the first in the files) and its standard error, sd/√folds, over the folds both have; a
change is worth keeping when the difference is larger than twice its standard error.
"""

import argparse
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
from models import calibration, features, group_split, networks, preprocessing, training  # pylint: disable=g-import-not-at-top

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


def score(labels: np.ndarray, probabilities: np.ndarray, uncalibrated: np.ndarray,
          operating_point: calibration.OperatingPoint) -> Dict[str, float]:
  """The Evaluator's metrics (evaluation/classification_statistics.py, models/calibration.py) of
  one fold."""
  statistics = classification_statistics.probability_statistics(labels, probabilities)
  counts = classification_statistics.confusion_counts_of(labels, probabilities.argmax(axis=1))
  per_class = classification_statistics.class_precision_recall(counts)
  result = {'accuracy': statistics[ACCURACY], 'macro_f1': statistics['macro_f1'],
            'macro_auc': statistics['macro_auc']}
  for name in features.LABEL_NAMES:
    result[f'recall_{name}'] = per_class[f'recall_{name}']
  threshold = operating_point.malignant_threshold
  at_point = calibration.operating_point_summary(
      probabilities, labels, threshold if threshold is not None else 2.0)
  result['sensitivity'] = at_point['sensitivity']
  result['specificity'] = at_point['specificity']
  result['regret'] = classification_statistics.specificity_regret(
      labels, probabilities[:, features.MALIGNANT_LABEL],
      calibration.operating_point_labels(probabilities, threshold if threshold is not None else 2.0)
      == features.MALIGNANT_LABEL)
  result['ece_before'] = calibration.expected_calibration_error(uncalibrated, labels)
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
             ship_cross_fitted: bool = False) -> Dict[str, float]:
  """Trains on the other folds as the Trainer does: the training part dealt to one fold per
  member by group (one network: a calibration set), member m (seed `seed + m`) fitted on all but
  its fold, the operating point chosen on the members' out-of-fold predictions; then an
  ensemble refitted on the whole training part from the same seeds (`ship_cross_fitted`: the
  cross-fitted members instead) is scored on the test fold."""
  train = np.flatnonzero(fold != test_fold)
  held_out = np.array(group_split.held_out_folds(labels[train].tolist(), groups[train].tolist(),
                                                 members, calibration_percent))
  test = np.flatnonzero(fold == test_fold)
  flips = networks.RECIPES[network].test_time_flips

  def train_members(member_indices):
    return training.train_ensemble(
        network, image_size,
        [training.prefetched(tf.data.Dataset.from_tensor_slices((pixels[indices], labels[indices]))
                             .shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
                             .batch(BATCH_SIZE)) for indices in member_indices],
        None, epochs=epochs, seed=seed, verbose=0, hyperparameters=hyperparameters)[0]

  started = time.time()
  trained = train_members([train[held_out != member] for member in range(members)])
  chosen = [(trained[member], train[held_out == member]) for member in range(members)
            if np.any(held_out == member)]
  operating_point = calibration.choose_operating_point(
      np.concatenate([predict([model], pixels[indices], flips) for model, indices in chosen]),
      np.concatenate([labels[indices] for _, indices in chosen]), target_sensitivity)
  if members > 1 and not ship_cross_fitted:
    trained = train_members([train] * members)
  seconds = time.time() - started
  uncalibrated = predict(trained, pixels[test], flips)
  probabilities = calibration.temperature_scale(uncalibrated, operating_point.temperature)
  result = score(labels[test], probabilities, uncalibrated, operating_point)
  result['train_seconds'] = seconds
  result['threshold'] = operating_point.malignant_threshold
  result['temperature'] = operating_point.temperature
  result['chosen_on_malignant'] = operating_point.calibration_malignant
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
    lines.append(f'  fold {row["fold"]:<13} ' + ' '.join(
        f'{row[column]:>14.1f}' if column == 'train_seconds' else f'{row[column]:>14.3f}'
        for column in COLUMNS))
  means = {column: np.mean([row[column] for row in rows]) for column in COLUMNS}
  spreads = {column: np.std([row[column] for row in rows]) for column in COLUMNS}
  lines.append(f'  {"mean ± sd":<18} ' + ' '.join(
      f'{f"{means[column]:.0f} ± {spreads[column]:.0f}":>14}' if column == 'train_seconds'
      else f'{f"{means[column]:.3f} ± {spreads[column]:.3f}":>14}' for column in COLUMNS))
  return '\n'.join(lines)


PAIRED_COLUMNS = ('accuracy', 'macro_f1', 'macro_auc', 'sensitivity', 'specificity', 'regret',
                  'ece_after', 'train_seconds')


def paired_differences(baseline: List[Dict[str, float]], candidate: List[Dict[str, float]]
                       ) -> Dict[str, Dict[str, float]]:
  """{column: {mean, se, folds}}: the candidate's per-fold difference from the baseline on the
  folds both were measured on, its mean and standard error (sd / √folds)."""
  by_fold = {row['fold']: row for row in baseline}
  pairs = [(row, by_fold[row['fold']]) for row in candidate if row['fold'] in by_fold]
  result = {}
  for column in PAIRED_COLUMNS:
    differences = np.array([mine.get(column, np.nan) - theirs.get(column, np.nan)
                            for mine, theirs in pairs])
    spread = differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else np.nan
    result[column] = {'mean': float(differences.mean()) if len(differences) else np.nan,
                      'se': float(spread), 'folds': len(differences)}
  return result


def format_paired(baseline_name: str, results: Dict[str, List[Dict[str, float]]]) -> str:
  lines = [f'paired against {baseline_name}: mean per-fold difference ± standard error '
           '(* beyond 2 standard errors)',
           f'{"network":<36} {"folds":>5} ' + ' '.join(
               f'{HEADINGS.get(column, column):>18}' for column in PAIRED_COLUMNS)]
  for name, rows in results.items():
    if name == baseline_name:
      continue
    paired = paired_differences(results[baseline_name], rows)
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
  for path in paths:
    with open(path) as handle:
      for name, rows in json.load(handle)['results'].items():
        # The same network under other hyperparameters: told apart by its file's name.
        stem = os.path.splitext(os.path.basename(path))[0]
        results[f'{name} [{stem}]' if name in results else name] = rows
  if not results:
    print('no results in ' + ', '.join(paths), file=sys.stderr)
    return 2
  baseline = baseline or next(iter(results))
  if baseline not in results:
    print(f'--baseline {baseline}: not in the files (they hold {", ".join(results)})',
          file=sys.stderr)
    return 2
  for network, rows in results.items():
    print(format_table(network, rows))
    print()
  print(format_paired(baseline, results))
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
  parser.add_argument('--models', nargs='+', default=[networks.DEFAULT_NETWORK, 'seed'],
                      choices=sorted(networks.RECIPES))
  parser.add_argument('--image-size', type=int, default=features.DEFAULT_IMAGE_SIZE)
  parser.add_argument('--epochs', type=int, help="override each recipe's epochs")
  parser.add_argument('--run-folds', type=int, nargs='+',
                      help='test only these folds (default: all)')
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
      for test_fold in args.run_folds or range(args.folds):
        row = run_fold(network, pixels, labels, fold, groups, test_fold, args.image_size,
                       args.epochs, args.seed, args.calibration_percent,
                       args.target_malignant_sensitivity, size, args.hyperparameters,
                       args.ship_cross_fitted)
        row['fold'] = test_fold
        results.setdefault(name, []).append(row)
        print(f'{name} fold {test_fold}: ' + ', '.join(
            f'{column} {row[column]:.3f}' for column in COLUMNS) +
              f'; threshold {row["threshold"]}, temperature {row["temperature"]:.3f}, chosen on '
              f'{row["chosen_on_malignant"]} malignant images', flush=True)
  print()
  for network, rows in results.items():
    print(format_table(network, rows))
    print()
  if len(results) > 1:
    print(format_paired(next(iter(results)), results))
  if args.json:
    with open(args.json, 'w') as handle:
      json.dump({'arguments': vars(args), 'results': results}, handle, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
