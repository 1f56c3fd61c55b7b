"""Benchmark: grouped k-fold cross-validation of the networks on a data root.

    python -m benchmarks.grouped_cross_validation --data-root ../shared/data/busi
        [--folds 5] [--models sepconv_residual seed] [--image-size 180] [--epochs N]
        [--run-folds 0 1 ...] [--json results.json]

Folds are made as ImageExampleGen makes its split: images are grouped by perceptual hash
(near-duplicates, transitively), label conflicts are left out, and whole groups are dealt to
folds stratified by label. So no test image has a near-duplicate among its training images.
Images are decoded and resized by the same function as Transform, and each network is trained
by `models.training.train_network` with its recipe, as the Trainer does. For each network it
prints per-fold and mean ± standard deviation of accuracy, macro-F1, one-vs-rest macro AUC,
per-class recall and training seconds.
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, List

from pipeline import command_line

command_line.prepare_environment()

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top
from sklearn import metrics as sklearn_metrics  # pylint: disable=g-import-not-at-top

from components import near_duplicates  # pylint: disable=g-import-not-at-top
from components.image_example_gen import image_files, split_plan  # pylint: disable=g-import-not-at-top
from models import features, networks, preprocessing, training  # pylint: disable=g-import-not-at-top
from pipeline import tfma_metrics  # pylint: disable=g-import-not-at-top

BATCH_SIZE = 32


def load_images(data_root: str, image_size: int, folds: int):
  """(pixels [n, s, s, 3], labels [n], fold [n], files) of the images that are not conflicts."""
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
  plan = dict(split_plan.plan_splits(records, list(range(1, folds + 1)),
                                   near_duplicates.DEFAULT_MAX_DISTANCE, 'exclude',
                                   excluded_index=folds))
  kept = [record for record in records if plan[record['file']][0] < folds]
  encoded = tf.constant([tf.io.read_file(os.path.join(data_root, record['file'])).numpy()
                         for record in kept])
  pixels = np.concatenate([
      preprocessing.decode_and_resize(encoded[start:start + 64], image_size).numpy()
      for start in range(0, len(kept), 64)])
  labels = np.array([features.LABEL_NAMES.index(record['label']) for record in kept])
  fold = np.array([plan[record['file']][0] for record in kept])
  print(f'{len(records)} images, {len(records) - len(kept)} in label conflicts left out, '
        f'{len(set(plan[r["file"]][1] for r in kept))} groups in {folds} folds '
        f'(images per fold: {np.bincount(fold).tolist()})', flush=True)
  return pixels, labels, fold, [record['file'] for record in kept]


def score(labels: np.ndarray, probabilities: np.ndarray) -> Dict[str, float]:
  """The Evaluator's argmax metrics (pipeline/tfma_metrics.py) and sklearn's macro AUC."""
  classes = list(range(len(features.LABEL_NAMES)))
  counts = sklearn_metrics.confusion_matrix(labels, probabilities.argmax(axis=1), labels=classes)
  per_class = tfma_metrics.class_precision_recall(counts)
  result = {
      'accuracy': float(np.trace(counts) / counts.sum()),
      'macro_f1': tfma_metrics.macro_f1(counts.astype(float)),
      'macro_auc': float(sklearn_metrics.roc_auc_score(labels, probabilities, labels=classes,
                                                       multi_class='ovr', average='macro')),
  }
  for name in features.LABEL_NAMES:
    result[f'recall_{name}'] = per_class[f'recall_{name}']
  return result


def run_fold(network: str, pixels, labels, fold, test_fold: int, image_size: int, epochs,
             seed: int) -> Dict[str, float]:
  train, test = fold != test_fold, fold == test_fold
  train_dataset = (tf.data.Dataset.from_tensor_slices((pixels[train], labels[train]))
                   .shuffle(int(train.sum()), seed=seed, reshuffle_each_iteration=True)
                   .batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))
  started = time.time()
  model, _ = training.train_network(network, image_size, train_dataset, None, epochs=epochs,
                                    seed=seed, verbose=0)
  seconds = time.time() - started
  flips = networks.RECIPES[network].test_time_flips
  probabilities = np.concatenate([
      training.predict_probabilities(model, pixels[test][start:start + 64], flips).numpy()
      for start in range(0, int(test.sum()), 64)])
  result = score(labels[test], probabilities)
  result['train_seconds'] = seconds
  return result


COLUMNS = ('accuracy', 'macro_f1', 'macro_auc', *(f'recall_{name}' for name in features.LABEL_NAMES),
           'train_seconds')


def format_table(network: str, rows: List[Dict[str, float]]) -> str:
  header = f'{network:<18} ' + ' '.join(f'{column.replace("recall_", "rec. "):>14}'
                                         for column in COLUMNS)
  lines = [header]
  for row in rows:
    lines.append(f'  fold {row["fold"]:<11} ' + ' '.join(
        f'{row[column]:>14.1f}' if column == 'train_seconds' else f'{row[column]:>14.3f}'
        for column in COLUMNS))
  means = {column: np.mean([row[column] for row in rows]) for column in COLUMNS}
  spreads = {column: np.std([row[column] for row in rows]) for column in COLUMNS}
  lines.append(f'  {"mean ± sd":<16} ' + ' '.join(
      f'{f"{means[column]:.0f} ± {spreads[column]:.0f}":>14}' if column == 'train_seconds'
      else f'{f"{means[column]:.3f} ± {spreads[column]:.3f}":>14}' for column in COLUMNS))
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root', required=True)
  parser.add_argument('--folds', type=int, default=5)
  parser.add_argument('--models', nargs='+', default=[networks.DEFAULT_NETWORK, 'seed'],
                      choices=sorted(networks.RECIPES))
  parser.add_argument('--image-size', type=int, default=features.DEFAULT_IMAGE_SIZE)
  parser.add_argument('--epochs', type=int, help="override each recipe's epochs")
  parser.add_argument('--run-folds', type=int, nargs='+',
                      help='test only these folds (default: all)')
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  if not os.path.isdir(args.data_root):
    parser.error(f'data root {args.data_root} is not a folder')

  pixels, labels, fold, _ = load_images(args.data_root, args.image_size, args.folds)
  results = {}
  for network in args.models:
    rows = []
    for test_fold in args.run_folds or range(args.folds):
      row = run_fold(network, pixels, labels, fold, test_fold, args.image_size, args.epochs,
                     args.seed)
      row['fold'] = test_fold
      rows.append(row)
      print(f'{network} fold {test_fold}: ' + ', '.join(
          f'{column} {row[column]:.3f}' for column in COLUMNS), flush=True)
    results[network] = rows
  print()
  for network, rows in results.items():
    print(format_table(network, rows))
    print()
  if args.json:
    with open(args.json, 'w') as handle:
      json.dump({'arguments': vars(args), 'results': results}, handle, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
