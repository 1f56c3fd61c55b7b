"""The on-device export (models/on_device.py): TFLite has no area resize, so the networks are
converted as copies whose area resizing is two matrix products; the TFLite model answers as the
network does, and its metadata says how to feed it."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import networks, on_device, training
from serving import canary


@pytest.mark.parametrize('in_size, out_size', [(180, 160), (72, 64), (50, 48)])
def test_the_area_matrix_is_tensorflows_area_resize(in_size, out_size):
  images = np.random.default_rng(0).random((2, in_size, in_size, 3), dtype=np.float32)
  resized = tf.image.resize(images, [out_size, out_size], method='area').numpy()
  matrix = on_device.area_matrix(out_size, in_size)
  by_matrix = np.einsum('wl,bhlc->bhwc', matrix, np.einsum('hk,bkwc->bhwc', matrix, images))
  np.testing.assert_allclose(by_matrix, resized, atol=1e-5)


def test_a_network_with_area_resizing_converts_and_answers_alike(tmp_path):
  keras.utils.set_random_seed(3)
  # Larger than its working size: the network starts with an area resize, as at 180 px.
  members = [networks.sepconv_residual(72, 3, width=0.25, working_size=64) for _ in range(2)]
  assert any(isinstance(layer, keras.layers.Resizing) for layer in members[0].layers)
  copy = on_device.tflite_ready(members[0])
  assert not any(isinstance(layer, keras.layers.Resizing) for layer in copy.layers)
  pixels = np.random.default_rng(1).random((4, 72, 72, 3), dtype=np.float32)
  np.testing.assert_allclose(copy(pixels, training=False), members[0](pixels, training=False),
                             atol=1e-5)

  def pixels_function(converted):
    @tf.function(input_signature=[tf.TensorSpec([None, 72, 72, 3], tf.float32,
                                                name='image_pixels')])
    def from_pixels(image_pixels):
      return {'probabilities': training.predict_probabilities(converted, image_pixels, True)}
    return from_pixels

  path = on_device.export_tflite(pixels_function, members, str(tmp_path / 'tflite'), 72, 0.3)
  expected = training.predict_probabilities(members, pixels, True).numpy()
  np.testing.assert_allclose(canary.tflite_model(path)(pixels), expected, atol=5e-3)
  with open(tmp_path / 'tflite' / 'metadata.json') as handle:
    metadata = json.load(handle)
  assert metadata['input']['shape'] == [-1, 72, 72, 3] and metadata['weights'] == 'float16'
  assert metadata['malignant_threshold'] == 0.3 and metadata['labels'] == [
      'benign', 'malignant', 'normal']
  with pytest.raises(ValueError, match='use one of float16, float32'):
    on_device.export_tflite(pixels_function, members, str(tmp_path / 'other'), 72, None, 'int4')
