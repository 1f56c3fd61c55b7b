"""The pictures of a run report, drawn from its facts (`report_facts.py`) into the report folder.

Sample images per class (the seed notebook's grid), the network's training augmentation applied
to them, and the confusion matrix are drawn here; the contact sheet and the training curves that
the pipeline's components drew are copied beside them.
"""

import os
from typing import Any, Dict, List, Optional, Tuple

import matplotlib

matplotlib.use('Agg')  # No display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from models import features, networks, preprocessing  # pylint: disable=g-import-not-at-top
from runs.report_facts import ReportFacts  # pylint: disable=g-import-not-at-top
from serving.overlay import heat_overlay  # pylint: disable=g-import-not-at-top

AUGMENTED_PER_CLASS = 5
# Every picture a report may show, by the name the template knows it by.
PICTURES = {
    'samples': 'samples.png',
    'augmented': 'augmented.png',
    'contact_sheet': 'contact_sheet.png',
    'training_curves': 'training_curves.png',
    'confusion_matrix': 'confusion_matrix.png',
    'operating_point_confusion_matrix': 'operating_point_confusion_matrix.png',
    'reliability': 'reliability.png',
    'roc': 'malignant_roc.png',
    'explanations': 'where_the_model_looks.png',
}


def _save(figure, path: str) -> None:
  figure.tight_layout()
  figure.savefig(path, dpi=90)
  plt.close(figure)


def draw_samples(samples: Dict[str, List[Tuple[str, bytes]]], image_size: int, path: str) -> None:
  """The seed notebook's grid: a row per class, each image titled with its class."""
  columns = max(1, max(len(found) for found in samples.values()))
  figure, axes = plt.subplots(len(samples), columns, figsize=(2.1 * columns, 2.3 * len(samples)),
                              squeeze=False)
  for row, (label, found) in enumerate(samples.items()):
    pixels = (preprocessing.decode_and_resize(tf.constant([image for _, image in found]),
                                              image_size).numpy() if found else [])
    for column in range(columns):
      axis = axes[row][column]
      axis.axis('off')
      if column < len(found):
        axis.imshow(pixels[column])
        axis.set_title(f'{label}\n{os.path.basename(found[column][0])}', fontsize=8)
  _save(figure, path)


def draw_augmented(samples: Dict[str, List[Tuple[str, bytes]]], network: str, image_size: int,
                   path: str, hyperparameters: Optional[Dict[str, Any]] = None,
                   seed: int = 0) -> None:
  """One image per class, then what the network's training augmentation (with the run's
  hyperparameters, e.g. a tuned augmentation strength) makes of it."""
  augmentation = networks.training_augmentation(
      networks.with_hyperparameters(networks.RECIPES[network], hyperparameters or {}))
  tf.random.set_seed(seed)
  firsts = {label: found[0] for label, found in samples.items() if found}
  figure, axes = plt.subplots(len(firsts), AUGMENTED_PER_CLASS + 1,
                              figsize=(2.1 * (AUGMENTED_PER_CLASS + 1), 2.3 * len(firsts)),
                              squeeze=False)
  for row, (label, (_, image)) in enumerate(firsts.items()):
    pixels = preprocessing.decode_and_resize(tf.constant([image]), image_size)
    variants = [pixels[0].numpy()] + [
        augmentation(pixels, training=True)[0].numpy() for _ in range(AUGMENTED_PER_CLASS)]
    for column, variant in enumerate(variants):
      axes[row][column].imshow(np.clip(variant, 0, 1))
      axes[row][column].axis('off')
      axes[row][column].set_title(f'{label}: original' if column == 0 else
                                  f'{label}: augmented {column}', fontsize=8)
  _save(figure, path)


def draw_confusion_matrix(counts: List[List[int]], path: str,
                          title: str = 'Confusion matrix (eval split)') -> None:
  matrix = np.array(counts)
  figure, axis = plt.subplots(figsize=(4.6, 4))
  axis.imshow(matrix, cmap='Blues')
  names = features.LABEL_NAMES
  axis.set_xticks(range(len(names)), names)
  axis.set_yticks(range(len(names)), names)
  axis.set_xlabel('predicted class')
  axis.set_ylabel('true class')
  for actual in range(len(names)):
    for predicted in range(len(names)):
      value = matrix[actual, predicted]
      axis.text(predicted, actual, str(value), ha='center', va='center',
                color='white' if value > matrix.max() / 2 else 'black')
  axis.set_title(title)
  _save(figure, path)


def draw_reliability(before, after, path: str) -> None:
  """Accuracy against confidence per bin, before and after temperature scaling; the diagonal
  is perfect calibration."""
  figure, axis = plt.subplots(figsize=(4.8, 4.4))
  axis.plot([0, 1], [0, 1], color='#999', linestyle='--', label='perfectly calibrated')
  for table, label, colour in ((before, 'before calibration', '#d08770'),
                               (after, 'after (temperature scaling)', '#2e6fb0')):
    if table is None or not len(table):
      continue
    used = table[:, 2] > 0
    axis.plot(table[used, 3], table[used, 4], marker='o', color=colour, label=label)
  axis.set_xlim(0, 1)
  axis.set_ylim(0, 1)
  axis.set_xlabel('confidence (probability of the most probable class)')
  axis.set_ylabel('accuracy')
  axis.set_title('Reliability (eval split, 10 bins)')
  axis.legend(loc='upper left', fontsize=8)
  _save(figure, path)


def draw_roc(curve, operating_point, path: str) -> None:
  """Malignant against the rest, with the operating point (1 − specificity, sensitivity)."""
  figure, axis = plt.subplots(figsize=(4.8, 4.4))
  axis.plot([0, 1], [0, 1], color='#999', linestyle='--')
  axis.plot(curve[:, 1], curve[:, 2], color='#2e6fb0', label='malignant vs rest')
  if operating_point is not None:
    axis.plot(*operating_point, marker='o', markersize=9, color='#b3261e',
              label='operating point')
  axis.set_xlim(0, 1)
  axis.set_ylim(0, 1.02)
  axis.set_xlabel('false-positive rate (1 − specificity)')
  axis.set_ylabel('true-positive rate (sensitivity)')
  axis.set_title('ROC, malignant vs rest (eval split)')
  axis.legend(loc='lower right', fontsize=8)
  _save(figure, path)


def draw_explanations(explained, path: str, columns: int = 4) -> None:
  """Each explained eval image with its Grad-CAM overlay, titled true → the decision, the most
  probable class with its calibrated probability, and the review flag's reason where it is
  raised; mistakes in red."""
  rows = (len(explained) + columns - 1) // columns
  figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.5 * rows), squeeze=False)
  for axis in axes.ravel():
    axis.axis('off')
  for axis, row in zip(axes.ravel(), explained):
    axis.imshow(heat_overlay(row['heat'], row['pixels']))
    wrong = row['predicted'] != row['true']
    most_probable = row.get('most_probable', row['predicted'])
    review = f'\nto review: {row["review_reason"]}' if row.get('review_reason') else ''
    axis.set_title(f'{os.path.basename(row["file"])}\ntrue {row["true"]} → decided '
                   f'{row["predicted"]}\nmost probable {most_probable} {row["confidence"]:.2f}'
                   f'{review}', fontsize=8, color='#b3261e' if wrong else '#222')
  _save(figure, path)


def draw_report_pictures(facts: ReportFacts, report_dir: str) -> Dict[str, str]:
  """Draws or copies every picture the facts allow into `report_dir`; returns {name: file}.

  Pictures of an earlier report that this run has none of are removed, so the page never shows
  another run's picture.
  """
  for file_name in PICTURES.values():
    if os.path.exists(os.path.join(report_dir, file_name)):
      os.remove(os.path.join(report_dir, file_name))
  drawn = {}

  def path_of(name: str) -> str:
    drawn[name] = PICTURES[name]
    return os.path.join(report_dir, PICTURES[name])

  if any(facts.samples.values()):
    draw_samples(facts.samples, facts.image_size, path_of('samples'))
    draw_augmented(facts.samples, facts.network, facts.image_size, path_of('augmented'),
                   facts.run.hyperparameters)
  if facts.contact_sheet_path:
    tf.io.gfile.copy(facts.contact_sheet_path, path_of('contact_sheet'), overwrite=True)
  if facts.training_curves_path:
    tf.io.gfile.copy(facts.training_curves_path, path_of('training_curves'), overwrite=True)
  if any(any(row) for row in facts.run.confusion_matrix):
    draw_confusion_matrix(facts.run.confusion_matrix, path_of('confusion_matrix'),
                          'Most probable class (eval split)')
  if any(any(row) for row in facts.run.operating_point_confusion_matrix):
    draw_confusion_matrix(facts.run.operating_point_confusion_matrix,
                          path_of('operating_point_confusion_matrix'),
                          'Decision at the operating point (eval split)')
  if facts.explained:
    draw_explanations(facts.explained, path_of('explanations'))
  arrays = facts.evaluation_arrays
  if arrays.get('reliability_diagram') is not None:
    draw_reliability(arrays.get('reliability_diagram_uncalibrated'),
                     arrays['reliability_diagram'], path_of('reliability'))
  roc = arrays.get('malignant_roc')
  if roc is not None and len(roc) and not np.isnan(roc[:, 1:]).any():
    metrics = facts.run.metrics
    point = None
    if metrics.get('malignant_specificity') is not None:
      point = (1 - metrics['malignant_specificity'], metrics['malignant_sensitivity'])
    draw_roc(arrays['malignant_roc'], point, path_of('roc'))
  return drawn
