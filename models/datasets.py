"""The Trainer's and the Tuner's datasets: transformed examples read once, batched, and the
training split dealt to the folds held out from each ensemble member (models/group_split.py)."""

from typing import Dict, Iterable, List, Optional

import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from models import features, group_split, training


def read_examples(file_pattern: List[str], data_accessor,
                  tf_transform_output: tft.TFTransformOutput) -> tf.data.Dataset:
  """Unbatched (pixels, label, group) from transformed examples, parsed once, cached in memory."""
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=64, shuffle=False, num_epochs=1,
                                     label_key=features.TRANSFORMED_LABEL_KEY),
      tf_transform_output.transformed_metadata.schema)
  dataset = dataset.map(lambda batch, label: (
      batch[features.TRANSFORMED_IMAGE_KEY], label,
      tf.reshape(batch[features.TRANSFORMED_GROUP_KEY], [-1])))
  return dataset.unbatch().cache()


def batches(examples: tf.data.Dataset, batch_size: int, shuffle_seed: Optional[int] = None):
  """(pixels, label) batches of (pixels, label, group) examples, shuffled when given a seed."""
  dataset = examples.map(lambda pixels, label, group: (pixels, label))
  if shuffle_seed is not None:
    dataset = dataset.shuffle(2048, seed=shuffle_seed, reshuffle_each_iteration=True)
  return training.prefetched(dataset.batch(batch_size))


class HeldOutFolds:
  """The training examples dealt by near-duplicate group to the folds held out from the ensemble's
  members (`group_split.held_out_folds`): member m trains on `training(m)` and predicts
  `held_out(m)`, out of sample. With one network, fold 0 is its calibration set. Groups in
  `seen_groups` (a warm start's base model trained on them) are trained on but never held out
  for prediction: no prediction of them is out of sample."""

  def __init__(self, examples: tf.data.Dataset, members: int, calibration_percent: float,
               seen_groups: Iterable[str] = ()):
    labels, groups = [], []
    for _, label, group in examples:
      labels.append(int(label))
      groups.append(group.numpy().decode())
    fold_of_group = dict(zip(groups, group_split.held_out_folds(labels, groups, members,
                                                                calibration_percent)))
    self.examples = examples
    self.groups = sorted(set(groups))
    seen = set(seen_groups) & set(groups)
    self.seen_held_out = sum(1 for group in groups if group in seen and fold_of_group[group] >= 0)
    self.folds = max(fold_of_group.values(), default=-1) + 1
    # Trained on by every member: a fold number no member has.
    fold_of_group.update({group: self.folds for group in seen})
    self.labels_of_fold = [[label for label, group in zip(labels, groups)
                            if fold_of_group[group] == fold] for fold in range(self.folds)]
    names = sorted(fold_of_group)
    self._fold_of_group = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(names or [''], tf.string),
            tf.constant([fold_of_group[name] for name in names] or [-1], tf.int64)),
        default_value=-1)

  def _fold(self, group: tf.Tensor) -> tf.Tensor:
    return self._fold_of_group.lookup(group)

  def training(self, member: int) -> tf.data.Dataset:
    return self.examples.filter(lambda pixels, label, group: tf.not_equal(self._fold(group),
                                                                          member))

  def held_out(self, member: int) -> tf.data.Dataset:
    return self.examples.filter(lambda pixels, label, group: tf.equal(self._fold(group), member))

  def record(self, pooled: Iterable[int]) -> Dict:
    """What each fold's member trained on and predicted, read back from the datasets it was
    given (`training`, `held_out`): {'folds': [{'fold', 'trained_on' (groups), 'predicted'
    (groups), 'predicted_images', 'pooled'}]}; `pooled` are the folds whose predictions the
    operating point was chosen on."""
    groups_of = lambda dataset: [group.numpy().decode() for group in dataset.map(
        lambda pixels, label, group: group)]
    pooled = set(pooled)
    folds = []
    for fold in range(self.folds):
      predicted = groups_of(self.held_out(fold))
      folds.append({'fold': fold, 'trained_on': sorted(set(groups_of(self.training(fold)))),
                    'predicted': sorted(set(predicted)), 'predicted_images': len(predicted),
                    'pooled': fold in pooled})
    return {'folds': folds}
