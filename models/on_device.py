"""The on-device export: the model on decoded pixels as TensorFlow Lite, for tablets and phones.

Point-of-care ultrasound runs on devices that have TFLite, not TensorFlow: there is no Transform
graph and no PNG decoder in the model, so the device decodes, resizes and scales the image itself
(the steps `metadata.json` spells out) and feeds the pixels. The TFLite model is converted from
the exported SavedModel's `from_pixels` signature, so it is the same network, ensemble, test-time
flips and temperature as `serving_default`, with float16 weights by default (half the size; the
serving check measures what that costs in agreement, components/serving_check/).

Files, in `<Model artifact>/tflite/`: `model.tflite` and `metadata.json`.
"""

import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf

from models import features

TFLITE_DIR = 'tflite'
TFLITE_MODEL_FILE = 'model.tflite'
TFLITE_METADATA_FILE = 'metadata.json'
PIXELS_SIGNATURE = 'from_pixels'
WEIGHT_TYPES = ('float16', 'float32')
DEFAULT_WEIGHT_TYPE = 'float16'


def tflite_metadata(image_size: int, weight_type: str,
                    malignant_threshold: Optional[float]) -> Dict[str, Any]:
  """What a device needs to use `model.tflite`: its input, the preprocessing, the labels and the
  decision rule."""
  return {
      'input': {
          'name': features.TRANSFORMED_IMAGE_KEY,
          'shape': [-1, image_size, image_size, features.IMAGE_CHANNELS],
          'dtype': 'float32',
          'preprocessing': (
              f'decode to RGB (a grey image repeated on 3 channels), resize to {image_size}×'
              f'{image_size} with bilinear antialiased resampling, divide by 255 and clip to '
              '[0, 1]'),
      },
      'output': {
          'name': 'probabilities',
          'shape': [-1, len(features.LABEL_NAMES)],
          'meaning': 'calibrated class probabilities, in the order of labels',
      },
      'labels': list(features.LABEL_NAMES),
      # The operating point: as serving_default's label.
      'malignant_threshold': malignant_threshold,
      'decision': ('malignant when its probability reaches malignant_threshold, else the more '
                   'probable other class' if malignant_threshold is not None
                   else 'the most probable class'),
      'weights': weight_type,
  }


def export_tflite(saved_model_dir: str, output_dir: str, image_size: int,
                  malignant_threshold: Optional[float],
                  weight_type: str = DEFAULT_WEIGHT_TYPE) -> str:
  """Converts `saved_model_dir`'s `from_pixels` signature into `<output_dir>/model.tflite` and
  writes `metadata.json` beside it; returns the model file's path."""
  if weight_type not in WEIGHT_TYPES:
    raise ValueError(f'weight type {weight_type!r}: use one of {", ".join(WEIGHT_TYPES)}')
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                       signature_keys=[PIXELS_SIGNATURE])
  if weight_type == 'float16':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  model = converter.convert()
  tf.io.gfile.makedirs(output_dir)
  path = os.path.join(output_dir, TFLITE_MODEL_FILE)
  with tf.io.gfile.GFile(path, 'wb') as handle:
    handle.write(model)
  with tf.io.gfile.GFile(os.path.join(output_dir, TFLITE_METADATA_FILE), 'w') as handle:
    json.dump(tflite_metadata(image_size, weight_type, malignant_threshold), handle, indent=1)
  return path
