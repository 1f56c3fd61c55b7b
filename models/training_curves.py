"""The seed notebook's training-curves figure, drawn for every run's training."""

from typing import Dict, List, Sequence

import matplotlib

matplotlib.use('Agg')  # No display on training machines.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import tensorflow as tf


def plot_training_curves(histories: Sequence[Dict[str, List[float]]], path: str) -> None:
  """The seed notebook's figure: accuracy and loss per epoch, training against validation, one
  pair of lines per ensemble member."""
  figure, (accuracy_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 4))
  for axes, metric, title in ((accuracy_axes, 'accuracy', 'Accuracy'),
                              (loss_axes, 'loss', 'Loss')):
    for member, history in enumerate(histories):
      epochs = range(1, len(history['loss']) + 1)
      suffix = f' (member {member + 1})' if len(histories) > 1 else ''
      axes.plot(epochs, history[metric], color='C0', alpha=1.0 / (1 + member),
                label=f'training{suffix}')
      if f'val_{metric}' in history:
        axes.plot(epochs, history[f'val_{metric}'], color='C1', alpha=1.0 / (1 + member),
                  label=f'validation{suffix}')
    axes.set_title(f'Training and validation {title.lower()}')
    axes.set_xlabel('epoch')
    axes.set_ylabel(title)
    axes.legend()
    axes.grid(alpha=0.3)
  figure.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as handle:
    figure.savefig(handle, format='png', dpi=100)
  plt.close(figure)
