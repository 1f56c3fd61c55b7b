"""The Trainer's and the Tuner's datasets: transformed examples read once, batched, and the
calibration set split off the training split by near-duplicate group."""

from typing import List, Optional

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


def split_for_calibration(examples: tf.data.Dataset, percent: float):
  """(fitting examples, calibration examples): `percent` % of each label's training examples,
  whole near-duplicate groups (models/group_split.py), set aside to choose the operating point."""
  labels, groups = [], []
  for _, label, group in examples:
    labels.append(int(label))
    groups.append(group.numpy().decode())
  chosen = sorted({group for group, taken in zip(
      groups, group_split.calibration_mask(labels, groups, percent)) if taken})
  if not chosen:
    return examples, examples.take(0)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(chosen), tf.ones(len(chosen), tf.int64)),
      default_value=0)
  in_calibration = lambda pixels, label, group: tf.equal(table.lookup(group), 1)
  return (examples.filter(lambda *example: tf.logical_not(in_calibration(*example))),
          examples.filter(in_calibration))
