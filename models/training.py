"""Training a network on (pixels, label) datasets, independent of TFX.

`run_fn` (the Trainer) and the cross-validation benchmark both call `train_network`, so the
model the benchmark measures is trained exactly as the pipeline trains it. Each network comes
with its recipe (networks.RECIPES): epochs, learning rate and schedule, class weighting.
`predict_probabilities` is how every caller turns a trained network into probabilities: the
average over the image and its mirror image when the recipe asks for it (test-time flips).
"""

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import features, networks


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> Dict[int, float]:
  """Weights inversely proportional to class frequency, averaging 1 over the examples."""
  counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
  present = counts > 0
  weights = np.zeros(num_classes)
  weights[present] = len(labels) / (present.sum() * counts[present])
  return {index: float(weight) for index, weight in enumerate(weights)}


def dataset_labels(dataset: tf.data.Dataset) -> List[int]:
  """Every label of a (pixels, label) batched dataset, in order."""
  return [int(label) for _, labels in dataset for label in np.ravel(labels.numpy())]


def learning_rate(recipe: networks.Recipe, steps_per_epoch: int, epochs: int):
  if not recipe.cosine_decay:
    return recipe.learning_rate
  total = max(1, steps_per_epoch * epochs)
  warmup = min(total // 10, steps_per_epoch * 2)
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=recipe.learning_rate * 0.1, decay_steps=total - warmup,
      warmup_target=recipe.learning_rate, warmup_steps=warmup, alpha=0.01)


def train_network(network: str, image_size: int, train_dataset: tf.data.Dataset,
                  eval_dataset: Optional[tf.data.Dataset], epochs: Optional[int] = None,
                  seed: int = 42, callbacks: Iterable[keras.callbacks.Callback] = (),
                  verbose: int = 2) -> Tuple[keras.Model, Dict[str, List[float]]]:
  """Builds `network`, trains it by its recipe and returns (model, history).

  `epochs` overrides the recipe's. The datasets yield batches of (pixels [b, s, s, 3] in [0, 1],
  label [b]); `eval_dataset` is only reported on, never used to choose weights.
  """
  recipe = networks.RECIPES[network]
  epochs = epochs or recipe.epochs
  keras.utils.set_random_seed(seed)
  model = recipe.build(image_size, len(features.LABEL_NAMES))
  steps_per_epoch = int(train_dataset.cardinality().numpy())
  if steps_per_epoch < 1:  # Unknown cardinality: count once (the dataset is cached).
    steps_per_epoch = sum(1 for _ in train_dataset)
  optimizer = (keras.optimizers.AdamW(learning_rate(recipe, steps_per_epoch, epochs),
                                      weight_decay=recipe.weight_decay)
               if recipe.weight_decay else
               keras.optimizers.Adam(learning_rate(recipe, steps_per_epoch, epochs)))
  model.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=['accuracy'])
  class_weight = (balanced_class_weights(dataset_labels(train_dataset), len(features.LABEL_NAMES))
                  if recipe.balanced_class_weights else None)
  history = model.fit(train_dataset, validation_data=eval_dataset, epochs=epochs,
                      class_weight=class_weight, callbacks=list(callbacks), verbose=verbose)
  return model, {key: [float(value) for value in values]
                 for key, values in history.history.items()}


def predict_probabilities(model: keras.Model, pixels: tf.Tensor,
                          test_time_flips: bool) -> tf.Tensor:
  """[batch, classes] probabilities, averaged with the mirrored image's when asked."""
  probabilities = model(pixels, training=False)
  if test_time_flips:
    probabilities = (probabilities + model(tf.image.flip_left_right(pixels), training=False)) / 2
  return probabilities



def predict_dataset(model: keras.Model, dataset: tf.data.Dataset,
                    test_time_flips: bool) -> Tuple[np.ndarray, np.ndarray]:
  """(probabilities [n, classes], labels [n]) over a batched (pixels, label) dataset."""
  probabilities, labels = [], []
  for pixels, batch_labels in dataset:
    probabilities.append(predict_probabilities(model, pixels, test_time_flips).numpy())
    labels.append(np.ravel(batch_labels.numpy()))
  if not probabilities:
    return np.zeros((0, len(features.LABEL_NAMES))), np.zeros(0, dtype=np.int64)
  return np.concatenate(probabilities), np.concatenate(labels).astype(np.int64)
