"""Transform's preprocessing_fn: decode, resize and scale the images inside the TF graph.

Because this runs in the Transform graph, the exported model applies exactly the same steps to
the encoded bytes it receives at serving time: there is no second copy of the preprocessing.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from models import features, image_decoding

IMAGE_SIZE_CONFIG_KEY = 'image_size'


def _one_value_per_example(values) -> tf.Tensor:
  """[batch] dense tensor from a [batch, 1] dense or a sparse single-valued feature."""
  if isinstance(values, tf.SparseTensor):
    values = tf.sparse.to_dense(values)
  return tf.reshape(values, [-1])


def decode_and_resize(encoded_images: tf.Tensor, image_size: int) -> tf.Tensor:
  """[batch] encoded PNG/JPEG/BMP bytes of any size → [batch, size, size, 3] floats in [0, 1].

  Refuses (InvalidArgumentError) what image_decoding.decode_rgb refuses, before decoding.
  """

  def decode_one(encoded: tf.Tensor) -> tf.Tensor:
    image = image_decoding.decode_rgb(encoded)
    resized = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.clip_by_value(resized / 255.0, 0.0, 1.0)

  return tf.map_fn(
      decode_one, encoded_images,
      fn_output_signature=tf.TensorSpec([image_size, image_size, features.IMAGE_CHANNELS],
                                        tf.float32))


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
  """Raw examples → {image pixels, label, near-duplicate group}; `custom_config['image_size']`
  sets the size."""
  image_size = int((custom_config or {}).get(IMAGE_SIZE_CONFIG_KEY,
                                             features.DEFAULT_IMAGE_SIZE))
  outputs = {
      features.TRANSFORMED_IMAGE_KEY:
          decode_and_resize(_one_value_per_example(inputs[features.IMAGE_KEY]), image_size),
  }
  # The label and the group are absent at serving time; TFT then simply leaves them out.
  if features.LABEL_KEY in inputs:
    outputs[features.TRANSFORMED_LABEL_KEY] = _one_value_per_example(inputs[features.LABEL_KEY])
  if features.DUPLICATE_GROUP_KEY in inputs:
    outputs[features.TRANSFORMED_GROUP_KEY] = _one_value_per_example(
        inputs[features.DUPLICATE_GROUP_KEY])
  return outputs
