"""Self-supervised pretraining of a network's trunk on the training images alone (SimCLR).

Before the supervised training, a recipe with `contrastive_epochs` > 0 trains the network up to
its penultimate features without labels: two views of each image, drawn by the network's own
ultrasound augmentation, are mapped through a small projection head and pulled together, while
the views of the other images in the batch are pushed away (the NT-Xent loss of Chen et al.,
2020). The projection head is then dropped and the whole network trained as usual. Only the
training images are seen, never their labels, never the calibration or eval images' labels.
"""

import tensorflow as tf
import tf_keras as keras

from models import explanation


def contrastive_loss(first: tf.Tensor, second: tf.Tensor, temperature: float) -> tf.Tensor:
  """NT-Xent of two [batch, dimensions] projections of the same images, row i of each being
  one image: each view must pick out its partner among the other 2·batch − 2 views."""
  projections = tf.math.l2_normalize(tf.concat([first, second], axis=0), axis=1)
  count = tf.shape(first)[0]
  similarities = tf.matmul(projections, projections, transpose_b=True) / temperature
  # A view is not a candidate partner of itself.
  similarities -= 1e9 * tf.eye(2 * count)
  partners = tf.concat([tf.range(count, 2 * count), tf.range(0, count)], axis=0)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(partners, similarities))


def pretrain(model: keras.Model, dataset: tf.data.Dataset, epochs: int,
             learning_rate: float = 1e-3, temperature: float = 0.2,
             verbose: int = 2) -> list:
  """Trains `model`'s layers below its final softmax layer contrastively on the pixels of
  `dataset` ((pixels, label) batches; labels ignored) and returns the loss per epoch."""
  encoder = keras.Model(model.inputs, model.get_layer(explanation.FINAL_LAYER).input)
  projection = keras.Sequential([keras.layers.Dense(128, activation='relu'),
                                 keras.layers.Dense(64)], name='projection')
  optimizer = keras.optimizers.Adam(learning_rate)

  @tf.function
  def step(pixels):
    with tf.GradientTape() as tape:
      # training=True: each call draws its own augmentation, so the two views differ.
      loss = contrastive_loss(projection(encoder(pixels, training=True)),
                              projection(encoder(pixels, training=True)), temperature)
    variables = encoder.trainable_variables + projection.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  losses = []
  for epoch in range(epochs):
    total, batches = 0.0, 0
    for pixels, _ in dataset:
      total += float(step(pixels))
      batches += 1
    losses.append(total / max(batches, 1))
    if verbose:
      print(f'contrastive pretraining epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}',
            flush=True)
  return losses
