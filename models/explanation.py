"""Where the network looks: Grad-CAM heat maps from a trained network.

Grad-CAM (Selvaraju et al., 2017) weighs the last convolutional feature maps by the gradient of a
class's score with respect to them, averaged over the map, and keeps the positive part: the
regions that raise that class. The score is the class's logit, the input of the final softmax
(read from the `probabilities` layer every network ends with): a confident probability's gradient
vanishes, its logit's does not. The map is scaled to [0, 1] and resized to the input. The exported
model carries it as its `explain` signature (models/model.py), so the report and the prediction
CLI draw it from the SavedModel alone. An ensemble's map is the mean of its members' maps.
"""

from typing import Sequence

import tensorflow as tf
import tf_keras as keras


def output_in_network(layer: keras.layers.Layer):
  """The layer's output in the network it was last called in. A nested model (a pretrained
  backbone) also has its own graph's output, which the outer network's inputs do not reach."""
  return layer.get_output_at(-1)


def last_feature_layer(model: keras.Model) -> keras.layers.Layer:
  """The last layer that computes a spatial feature map (batch, height, width, channels): not
  the augmentation, and not a pooling or dropout layer, which only coarsen or mask the maps
  Grad-CAM reads."""
  for layer in reversed(model.layers):
    shape = output_in_network(layer).shape
    if (len(shape) == 4 and shape[1] > 1 and layer.name != 'augmentation'
        and not isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.Dropout))):
      return layer
  raise ValueError(f'{model.name} has no spatial feature map to explain')


FINAL_LAYER = 'probabilities'  # the softmax Dense layer every network in networks.py ends with


def feature_model(model: keras.Model) -> keras.Model:
  """The network with two outputs: its last feature maps and the input of its final layer."""
  return keras.Model(model.inputs,
                     [output_in_network(last_feature_layer(model)),
                      model.get_layer(FINAL_LAYER).input],
                     name=f'{model.name}_with_features')


def grad_cam(model: keras.Model, features_and_penultimate: keras.Model, pixels: tf.Tensor,
             class_indices: tf.Tensor) -> tf.Tensor:
  """[batch, height, width] heat maps in [0, 1], at the input's size, of `class_indices` [batch]
  for `pixels` [batch, height, width, 3]; `features_and_penultimate` is `feature_model(model)`."""
  final = model.get_layer(FINAL_LAYER)
  with tf.GradientTape() as tape:
    feature_maps, penultimate = features_and_penultimate(pixels, training=False)
    logits = tf.matmul(penultimate, final.kernel) + final.bias
    score = tf.gather(logits, tf.cast(class_indices, tf.int32), batch_dims=1)
  gradients = tape.gradient(score, feature_maps)
  weights = tf.reduce_mean(gradients, axis=[1, 2])
  maps = tf.nn.relu(tf.einsum('bhwc,bc->bhw', feature_maps, weights))
  maps = maps / (tf.reduce_max(maps, axis=[1, 2], keepdims=True) + 1e-8)
  size = tf.shape(pixels)[1:3]
  return tf.image.resize(maps[..., tf.newaxis], size, method='bilinear')[..., 0]


def ensemble_grad_cam(members: Sequence[keras.Model], feature_models: Sequence[keras.Model],
                      pixels: tf.Tensor, class_indices: tf.Tensor) -> tf.Tensor:
  """The members' maps of `class_indices`, averaged and scaled to [0, 1] again: where the
  ensemble as a whole looks. `feature_models[i]` is `feature_model(members[i])`."""
  maps = tf.add_n([grad_cam(member, features_and_penultimate, pixels, class_indices)
                   for member, features_and_penultimate in zip(members, feature_models)])
  return maps / (tf.reduce_max(maps, axis=[1, 2], keepdims=True) + 1e-8)
