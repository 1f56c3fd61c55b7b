"""Training a network, or a deep ensemble of them, on (pixels, label) datasets, independent of TFX.

`run_fn` (the Trainer) and the cross-validation benchmark both call `train_ensemble`, so the
model the benchmark measures is trained exactly as the pipeline trains it. Each network comes
with its recipe (networks.RECIPES): epochs, learning rate and schedule, class weighting, and how
many members its ensemble has (member i is trained with seed `seed + i`, on the training split
less the fold held out from it). `predict_held_out` gives the members' out-of-sample predictions
the operating point is chosen on.
`predict_probabilities` is how every caller turns trained members into probabilities: the mean
of the members' probabilities (`member_probabilities`), each averaged over the image and its
mirror image when the recipe asks for it (test-time flips).
A recipe with a `teacher` distils: `train_ensemble` first trains the teacher network on each
distinct training dataset (the refitted members share one), and each member then learns from
`distilled_dataset`'s labels, the class mixed with the teacher's probabilities of the image.
"""

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from tensorflow.python.autograph.core import config as autograph_config  # pylint: disable=g-direct-tensorflow-import
import tf_keras as keras

from models import augmentation, backbones, features, networks, self_supervised, warm_start


def leave_keras_to_run_as_written() -> None:
  """Tells AutoGraph not to convert Keras's own code when a model is traced, as TensorFlow's
  rules do for the `keras` package, which held Keras 2 until TensorFlow 2.16. Keras 2 now lives
  in `tf_keras`, which those rules miss, so every trace converted Keras's internals afresh
  (29,249 conversions, 13.5 s of the 33.4 s that two epochs of EfficientNet-Lite0 took on 24
  images; 7.5 s without them, docs/performance.md). Keras's code never needed converting: it
  writes its control flow on tensors with tf.cond itself. Our own layers are still converted."""
  rules = autograph_config.CONVERSION_RULES
  if not any(isinstance(rule, autograph_config.DoNotConvert) and rule.matches('tf_keras')
             for rule in rules):
    autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert('tf_keras'), *rules)


leave_keras_to_run_as_written()

Members = Union[keras.Model, Sequence[keras.Model]]


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> Dict[int, float]:
  """Weights inversely proportional to class frequency, averaging 1 over the examples."""
  counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
  present = counts > 0
  weights = np.zeros(num_classes)
  weights[present] = len(labels) / (present.sum() * counts[present])
  return {index: float(weight) for index, weight in enumerate(weights)}


def prefetched(batched: tf.data.Dataset) -> tf.data.Dataset:
  """Batches prepared two ahead, without tf.data's autotuning. Its optimisation thread sleeps
  for up to a minute at a time, and destroying an iterator (at the end of every `fit`: each
  phase, each member, each epoch's validation) waits for it to wake: 40–70 s per 20-epoch
  member, measured. Nothing here needs tuning: the examples are decoded already, in memory."""
  options = tf.data.Options()
  options.autotune.enabled = False
  return batched.prefetch(2).with_options(options)


def dataset_labels(dataset: tf.data.Dataset) -> List[int]:
  """Every label of a (pixels, label) batched dataset, in order."""
  return [int(label) for _, labels in dataset for label in np.ravel(labels.numpy())]


def learning_rate(recipe: networks.Recipe, steps_per_epoch: int, epochs: int,
                  scale: float = 1.0):
  peak = recipe.learning_rate * scale
  if not recipe.cosine_decay:
    return peak
  total = max(1, steps_per_epoch * epochs)
  warmup = min(total // 10, steps_per_epoch * 2)
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=peak * 0.1, decay_steps=total - warmup,
      warmup_target=peak, warmup_steps=warmup, alpha=0.01)


def one_hot_labels(pixels: tf.Tensor, labels: tf.Tensor):
  return pixels, tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), len(features.LABEL_NAMES))


def distilled_dataset(dataset: tf.data.Dataset, teacher: Members, teacher_flips: bool,
                      weight: float, seed: int) -> tf.data.Dataset:
  """The (pixels, label) batches of `dataset` as (pixels, (1 − weight) · one-hot label + weight
  · the teacher's probabilities of the image), shuffled again each epoch. The teacher predicts
  each image once, as it would serve it (its members averaged, test-time flips if its recipe
  has them): no augmentation, so the soft label says what the teacher sees in the image itself."""
  pixels, labels, taught = [], [], []
  for batch_pixels, batch_labels in dataset:
    pixels.append(batch_pixels.numpy())
    labels.append(np.ravel(batch_labels.numpy()))
    taught.append(predict_probabilities(teacher, batch_pixels, teacher_flips).numpy())
  batch_size = len(pixels[0])
  pixels, labels = np.concatenate(pixels), np.concatenate(labels).astype(np.int64)
  mixed = ((1 - weight) * np.eye(len(features.LABEL_NAMES), dtype=np.float32)[labels]
           + weight * np.concatenate(taught).astype(np.float32))
  return prefetched(tf.data.Dataset.from_tensor_slices((pixels, mixed))
                    .shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
                    .batch(batch_size))


def set_backbone_trainable(model: keras.Model, top_layers: int) -> None:
  """Freezes the pretrained backbone but its top `top_layers` layers (0: all of it). Batch
  normalisation stays frozen: its statistics are the pretraining's, and a few small batches
  would only disturb them."""
  backbone = model.get_layer(backbones.BACKBONE_LAYER)
  backbone.trainable = top_layers > 0
  for index, layer in enumerate(backbone.layers):
    layer.trainable = (index >= len(backbone.layers) - top_layers
                       and not isinstance(layer, keras.layers.BatchNormalization))


def training_phases(recipe: networks.Recipe, epochs: int,
                    warm: bool = False) -> List[Tuple[int, int, float]]:
  """(epochs, backbone layers trainable (-1: the whole network), learning-rate scale) per phase:
  one phase, or for a pretrained backbone the head first, then the top of the backbone too. A
  warm start (trained weights to start from) has only the last phase: its head is trained."""
  if not recipe.pretrained_backbone:
    return [(epochs, -1, 1.0)]
  if warm:
    return [(epochs, int(recipe.unfrozen_layers), recipe.fine_tune_scale)]
  # Hyperparameters read back from ML Metadata are JSON numbers: 5.0 for 5.
  frozen = min(int(recipe.frozen_epochs), epochs // 2)
  return [phase for phase in ((frozen, 0, 1.0),
                              (epochs - frozen, int(recipe.unfrozen_layers),
                               recipe.fine_tune_scale))
          if phase[0] > 0]


def train_network(network: str, image_size: int, train_dataset: tf.data.Dataset,
                  eval_dataset: Optional[tf.data.Dataset], epochs: Optional[int] = None,
                  seed: int = 42, callbacks: Iterable[keras.callbacks.Callback] = (),
                  verbose: int = 2, hyperparameters: Optional[Mapping[str, Any]] = None,
                  backbone_weights: Optional[str] = None, initial_weights: Optional[str] = None,
                  teacher: Optional[Members] = None
                  ) -> Tuple[keras.Model, Dict[str, List[float]]]:
  """Builds `network`, trains it by its recipe and returns (model, history).

  `epochs` overrides the recipe's, `hyperparameters` (e.g. the Tuner's best) its values;
  `backbone_weights` is where a pretrained backbone starts from (models/backbones.py), and
  `initial_weights` a trained member of this network to start from instead (a warm start,
  models/warm_start.py: no self-supervised pretraining, no frozen phase); `teacher`, the
  trained teacher network(s) of a recipe that distils (`distilled_dataset`). The
  datasets yield batches of (pixels [b, s, s, 3] in [0, 1], label [b]); `eval_dataset` is only
  reported on, never used to choose weights.
  """
  recipe = networks.with_hyperparameters(networks.RECIPES[network], hyperparameters or {})
  epochs = epochs or recipe.epochs
  keras.utils.set_random_seed(seed)
  options = dict(recipe.options)
  if recipe.pretrained_backbone:
    options['backbone_weights'] = backbone_weights
  model = recipe.build(image_size, len(features.LABEL_NAMES), **options)
  if initial_weights:
    warm_start.load_member_weights(model, initial_weights)
  steps_per_epoch = int(train_dataset.cardinality().numpy())
  if steps_per_epoch < 1:  # Unknown cardinality: count once (the dataset is cached).
    steps_per_epoch = sum(1 for _ in train_dataset)
  class_weight = (balanced_class_weights(dataset_labels(train_dataset), len(features.LABEL_NAMES))
                  if recipe.balanced_class_weights else None)
  history: Dict[str, List[float]] = {}
  if recipe.contrastive_epochs and not initial_weights:
    history['contrastive_loss'] = self_supervised.pretrain(
        model, train_dataset, int(recipe.contrastive_epochs), verbose=verbose)
  loss = keras.losses.SparseCategoricalCrossentropy()
  if teacher is not None:
    if recipe.mixing != 'none':
      raise ValueError(f'distillation and {recipe.mixing} both make the labels: choose one')
    # Class weights as above, from the class of each image: Keras weighs a soft label's example
    # by its larger class, the image's own for a distillation weight of at most 0.5.
    train_dataset = distilled_dataset(train_dataset, teacher,
                                      networks.RECIPES[recipe.teacher].test_time_flips,
                                      float(recipe.distillation_weight), seed)
    eval_dataset = eval_dataset.map(one_hot_labels) if eval_dataset is not None else None
    loss = keras.losses.CategoricalCrossentropy()
  if recipe.mixing != 'none':
    # Mixed labels are proportions of two classes, so every label becomes a distribution (Keras
    # weighs a soft label's example by its larger class).
    train_dataset = train_dataset.map(one_hot_labels).map(
        lambda pixels, labels: augmentation.mix_batch(pixels, labels, recipe.mixing,
                                                      recipe.mixing_alpha))
    eval_dataset = eval_dataset.map(one_hot_labels) if eval_dataset is not None else None
    loss = keras.losses.CategoricalCrossentropy()
  done = 0
  for phase_epochs, trainable_layers, scale in training_phases(recipe, epochs,
                                                               warm=bool(initial_weights)):
    if trainable_layers >= 0:
      set_backbone_trainable(model, trainable_layers)
    schedule = learning_rate(recipe, steps_per_epoch, phase_epochs, scale)
    optimizer = (keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
                 if recipe.weight_decay else keras.optimizers.Adam(schedule))
    # Compiled again per phase: Keras reads which weights train when it compiles.
    model.compile(optimizer=optimizer, loss=loss, metrics=['accuracy'])
    fitted = model.fit(train_dataset, validation_data=eval_dataset, initial_epoch=done,
                       epochs=done + phase_epochs, class_weight=class_weight,
                       callbacks=list(callbacks), verbose=verbose)
    for key, values in fitted.history.items():
      history.setdefault(key, []).extend(float(value) for value in values)
    done += phase_epochs
  return model, history


def train_ensemble(network: str, image_size: int, train_datasets: Sequence[tf.data.Dataset],
                   eval_dataset: Optional[tf.data.Dataset], epochs: Optional[int] = None,
                   seed: int = 42,
                   callbacks_of_member: Callable[[int], Iterable[keras.callbacks.Callback]] = (
                       lambda member: ()),
                   verbose: int = 2, hyperparameters: Optional[Mapping[str, Any]] = None,
                   backbone_weights: Optional[str] = None,
                   initial_weights: Optional[Sequence[str]] = None
                   ) -> Tuple[List[keras.Model], List[Dict[str, List[float]]]]:
  """Trains one network per training dataset, member i with seed `seed + i`, and returns (the
  members, their histories). A deep ensemble: the members differ by their initial weights, the
  order and augmentation of their batches, and the fold each is not trained on
  (models/group_split.py). With `initial_weights` (a warm start), member i starts from the
  weights of base member i modulo their number. A recipe with a `teacher` has it trained first
  (seed `seed + TEACHER_SEED_OFFSET`, by its own recipe, from its packaged weights) on each
  distinct dataset of `train_datasets`, and the members distil from theirs."""
  members = len(train_datasets)
  teacher_name = networks.with_hyperparameters(networks.RECIPES[network],
                                               hyperparameters or {}).teacher
  teachers: Dict[int, keras.Model] = {}
  if teacher_name:
    for train_dataset in train_datasets:
      if id(train_dataset) not in teachers:
        if verbose:
          print(f'teacher {teacher_name} {len(teachers) + 1} of '
                f'{len(set(map(id, train_datasets)))}', flush=True)
        teachers[id(train_dataset)] = train_network(
            teacher_name, image_size, train_dataset, None, epochs=epochs,
            seed=seed + TEACHER_SEED_OFFSET, verbose=verbose)[0]
  trained, histories = [], []
  for member, train_dataset in enumerate(train_datasets):
    if verbose and members > 1:
      print(f'ensemble member {member + 1} of {members}', flush=True)
    model, history = train_network(network, image_size, train_dataset, eval_dataset,
                                   epochs=epochs, seed=seed + member,
                                   callbacks=callbacks_of_member(member), verbose=verbose,
                                   hyperparameters=hyperparameters,
                                   backbone_weights=backbone_weights,
                                   initial_weights=(initial_weights[member % len(initial_weights)]
                                                    if initial_weights else None),
                                   teacher=teachers.get(id(train_dataset)))
    trained.append(model)
    histories.append(history)
  return trained, histories


# Apart from the members' seeds (seed + member) for any ensemble size.
TEACHER_SEED_OFFSET = 1000


def member_probabilities(members: Members, pixels: tf.Tensor,
                         test_time_flips: bool) -> tf.Tensor:
  """[members, batch, classes]: each member's probabilities, averaged with the mirrored image's
  when asked. One network is an ensemble of one."""
  members = [members] if isinstance(members, keras.Model) else list(members)
  found = []
  for model in members:
    probabilities = model(pixels, training=False)
    if test_time_flips:
      probabilities = (probabilities + model(tf.image.flip_left_right(pixels),
                                             training=False)) / 2
    found.append(probabilities)
  return tf.stack(found)


def predict_probabilities(members: Members, pixels: tf.Tensor,
                          test_time_flips: bool) -> tf.Tensor:
  """[batch, classes]: the members' mean probabilities (`member_probabilities`)."""
  return tf.reduce_mean(member_probabilities(members, pixels, test_time_flips), axis=0)


def predict_dataset(members: Members, dataset: tf.data.Dataset,
                    test_time_flips: bool) -> Tuple[np.ndarray, np.ndarray]:
  """(probabilities [n, classes], labels [n]) over a batched (pixels, label) dataset."""
  probabilities, labels = [], []
  for pixels, batch_labels in dataset:
    probabilities.append(predict_probabilities(members, pixels, test_time_flips).numpy())
    labels.append(np.ravel(batch_labels.numpy()))
  if not probabilities:
    return np.zeros((0, len(features.LABEL_NAMES))), np.zeros(0, dtype=np.int64)
  return np.concatenate(probabilities), np.concatenate(labels).astype(np.int64)


def predict_held_out(members: Sequence[keras.Model], held_out: Sequence[tf.data.Dataset],
                     test_time_flips: bool) -> Tuple[np.ndarray, np.ndarray]:
  """(probabilities, labels): each member's predictions of the examples it was not trained on,
  one after the other; every prediction is out of sample."""
  predicted = [predict_dataset(member, dataset, test_time_flips)
               for member, dataset in zip(members, held_out)]
  if not predicted:
    return np.zeros((0, len(features.LABEL_NAMES))), np.zeros(0, dtype=np.int64)
  return (np.concatenate([probabilities for probabilities, _ in predicted]),
          np.concatenate([labels for _, labels in predicted]))
