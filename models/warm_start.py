"""Warm start: a retrain that starts from the members of the newest blessed model.

Every Model artifact keeps, beside its SavedModel, what a later run needs to start from it:
each member's weights (`members/member_<i>.npz`, the arrays of `get_weights` in order, written
through TensorFlow's filesystem layer so any storage it knows can hold them; the optimizer's
state is not kept, a warm start compiles its own), which network at which size they belong to
(`members/about.json`) and the near-duplicate groups the model was trained on
(`training_groups.json`). The Trainer's `base_model` (`fn_args.base_model`, the base model's
SavedModel directory) points at them.

A warm-started member trains for its own number of epochs, the whole network at once at the
fine-tuning learning rate (no frozen head phase: the head is trained already). The base model saw
its training groups, so their out-of-fold predictions are not out of sample for a warm-started
chooser: the operating point is chosen on the groups the base model never saw.
"""

import dataclasses
import io
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

MEMBERS_DIR = 'members'
ABOUT_FILE = 'about.json'
TRAINING_GROUPS_FILE = 'training_groups.json'
# In the Model artifact, and recorded in ML Metadata by the Trainer's executor: where the
# weights came from, or why the run started cold.
WARM_START_FILE = 'warm_start.json'


@dataclasses.dataclass
class BaseModel:
  """A blessed model to start from: its members' weights and the groups it was trained on."""
  model_dir: str
  weights: List[str]
  training_groups: List[str]


def _member_weights(model_dir: str, member: int) -> str:
  return os.path.join(model_dir, MEMBERS_DIR, f'member_{member}.npz')


def load_member_weights(model: keras.Model, path: str) -> None:
  """Sets `model`'s weights to those `save_members` wrote at `path` (the same network and
  size)."""
  with tf.io.gfile.GFile(path, 'rb') as handle:
    arrays = np.load(io.BytesIO(handle.read()))
    model.set_weights([arrays[f'arr_{index}'] for index in range(len(arrays.files))])


def save_members(members: Sequence[keras.Model], model_dir: str, network: str,
                 image_size: int, training_groups: Sequence[str]) -> None:
  """Writes what a later warm start reads into the Model artifact's directory."""
  tf.io.gfile.makedirs(os.path.join(model_dir, MEMBERS_DIR))
  for member, model in enumerate(members):
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    with tf.io.gfile.GFile(_member_weights(model_dir, member), 'wb') as handle:
      handle.write(buffer.getvalue())
  with tf.io.gfile.GFile(os.path.join(model_dir, MEMBERS_DIR, ABOUT_FILE), 'w') as handle:
    json.dump({'network': network, 'image_size': image_size, 'members': len(members)}, handle)
  with tf.io.gfile.GFile(os.path.join(model_dir, TRAINING_GROUPS_FILE), 'w') as handle:
    json.dump(sorted(training_groups), handle)


def read_base_model(serving_model_dir: Optional[str], network: str,
                    image_size: int) -> Tuple[Optional[BaseModel], str]:
  """(the base model, '') when its members can start this network at this size, else (None,
  why not). `serving_model_dir` is the Trainer's `fn_args.base_model`."""
  if not serving_model_dir:
    return None, 'no blessed model to start from'
  model_dir = os.path.dirname(serving_model_dir.rstrip('/'))
  about_path = os.path.join(model_dir, MEMBERS_DIR, ABOUT_FILE)
  if not tf.io.gfile.exists(about_path):
    return None, f'the blessed model {model_dir} kept no member weights (trained before warm start)'
  with tf.io.gfile.GFile(about_path) as handle:
    about = json.load(handle)
  if (about['network'], about['image_size']) != (network, image_size):
    return None, (f'the blessed model is a {about["network"]} at {about["image_size"]} px, this '
                  f'run trains a {network} at {image_size} px')
  with tf.io.gfile.GFile(os.path.join(model_dir, TRAINING_GROUPS_FILE)) as handle:
    groups = json.load(handle)
  return BaseModel(model_dir, [_member_weights(model_dir, member)
                               for member in range(about['members'])], groups), ''


def write_warm_start(model_dir: str, base: Optional[BaseModel], epochs: int,
                     cold_reason: str) -> None:
  record = ({'base_model': base.model_dir, 'epochs': epochs} if base
            else {'cold_start': cold_reason})
  with tf.io.gfile.GFile(os.path.join(model_dir, WARM_START_FILE), 'w') as handle:
    json.dump(record, handle)
