"""The trained network (or ensemble) as a SavedModel that serves, and as a TFLite model.

The exported SavedModel carries the Transform graph, so it takes what a user has (encoded image
bytes, or serialized raw tf.Examples) and applies the same preprocessing as training did:

- `serving_default`: `image_bytes` (encoded PNG/JPEG/BMP, any size) → `probabilities`
  (calibrated), `classes` (the class names, in probability order), `most_probable_class` and
  `most_probable_probability` (its calibrated probability), `decision` (the decision at the
  operating point: malignant when its probability reaches the threshold, else the more probable
  of the others), `malignant_threshold` (above 1 when there is none: then the decision is the
  most probable class), `review` (whether the image should go to a person first) and
  `review_reason` ('' or why: near the threshold, members disagree, or both;
  models/calibration.py's rule); models/answer.py says the answers apart;
- `from_examples`: serialized raw tf.Examples → `probabilities` (calibrated; what TFMA
  evaluates), `uncalibrated_probabilities`, `operating_point` (the decision, one-hot),
  `malignant_threshold` and `review` (the review flag's reason as a code, 0.0 for none:
  calibration.REVIEW_REASONS);
- `transform_features`: serialized raw tf.Examples → the transformed features;
- `from_pixels`: `image_pixels` (decoded, resized and scaled as Transform does, [batch, size,
  size, 3]) → `probabilities` (calibrated): what the on-device TFLite model is converted from
  (models/on_device.py);
- `explain`: `image_bytes` → `probabilities`, `decision`, `heat_map` (Grad-CAM of the decided
  class, [batch, size, size] in [0, 1]) and `image_pixels` (what the network saw).

The SavedModel carries TF Serving's warmup requests (models/serving_warmup.py) for
`serving_default`, `explain` and `from_pixels`, so a server answers its first clients at full
speed.
"""

import dataclasses
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import calibration, explanation, features, on_device, serving_warmup, training


def calibrated(uncalibrated: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
  """Temperature-scaled probabilities (models/calibration.py's rule)."""
  return tf.nn.softmax(tf.math.log(tf.maximum(uncalibrated, 1e-7)) / temperature)


def _probabilities_of(members: Sequence[keras.Model],
                      test_time_flips: bool) -> Callable[[tf.Tensor], tf.Tensor]:
  return lambda pixels: training.predict_probabilities(members, pixels, test_time_flips)


def _member_probabilities_of(members: Sequence[keras.Model],
                             test_time_flips: bool) -> Callable[[tf.Tensor], tf.Tensor]:
  return lambda pixels: training.member_probabilities(members, pixels, test_time_flips)


@dataclasses.dataclass(frozen=True)
class _Networks:
  """The Keras networks the signatures call. Not a trackable object, so the SavedModel keeps
  their variables (ExportModule.member_variables) but not the networks themselves."""
  members: Tuple[keras.Model, ...]
  explainers: Tuple[keras.Model, ...]  # explanation.feature_model of each member
  # training.member_probabilities of the members ([members, batch, classes]), as one
  # tf.function of Transform's pixels
  member_probabilities: Callable[[tf.Tensor], tf.Tensor]


class ExportModule(tf.Module):
  """The trained network (or ensemble: the mean of its members' probabilities) plus the
  Transform layer and the operating point, with the serving signatures. Probabilities are
  temperature-scaled; `decision` follows the malignant threshold (models/calibration.py's rule), or
  the arg-max when there is none."""

  def __init__(self, members: Sequence[keras.Model], tf_transform_output: tft.TFTransformOutput,
               test_time_flips: bool, operating_point: calibration.OperatingPoint):
    super().__init__()
    # Saved as Keras objects, the members would bring every layer's traced call functions and
    # their optimizer's slots: the BUSI model (two EfficientNet-Lite0 at 180 px) was 90.9 MB
    # instead of 31.0 and loaded in 8.2 s instead of 2.3 (docs/performance.md), with the same
    # signatures' outputs. The signatures need only the weights.
    size = tf_transform_output.transformed_feature_spec()[features.TRANSFORMED_IMAGE_KEY].shape[0]
    self._networks = _Networks(
        members=tuple(members),
        explainers=tuple(explanation.feature_model(member) for member in members),
        # Traced once and called by every signature, rather than traced into each of them:
        # the members' graphs are the bulk of both the export's time and the SavedModel.
        member_probabilities=tf.function(
            _member_probabilities_of(members, test_time_flips),
            input_signature=[tf.TensorSpec([None, size, size, features.IMAGE_CHANNELS],
                                           tf.float32)]))
    self.member_variables = [list(member.variables) for member in members]
    self._test_time_flips = test_time_flips
    self.transform_layer = tf_transform_output.transform_features_layer()
    self._raw_feature_spec = tf_transform_output.raw_feature_spec()
    self._class_names = tf.constant(features.LABEL_NAMES)
    self._temperature = tf.constant(operating_point.temperature, tf.float32)
    threshold = operating_point.malignant_threshold
    # Above 1, no probability reaches it: the arg-max decides.
    self._threshold = tf.constant(2.0 if threshold is None else threshold, tf.float32)
    # Negative: no band (calibration.review_reasons is the rule).
    half_width = operating_point.review_half_width
    self._review_half_width = tf.constant(-1.0 if half_width is None or threshold is None
                                          else half_width, tf.float32)
    self._review_reasons = tf.constant(calibration.REVIEW_REASONS)

  @property
  def members(self) -> Tuple[keras.Model, ...]:
    return self._networks.members

  def _member_uncalibrated(self, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
    transformed = self.transform_layer(raw_features)
    return self._networks.member_probabilities(transformed[features.TRANSFORMED_IMAGE_KEY])

  def _calibrated(self, uncalibrated: tf.Tensor) -> tf.Tensor:
    return calibrated(uncalibrated, self._temperature)

  def _decision(self, probabilities: tf.Tensor) -> tf.Tensor:
    """Class index per row by the operating point (as calibration.operating_point_labels)."""
    malignant = features.MALIGNANT_LABEL
    is_malignant = tf.equal(tf.range(len(features.LABEL_NAMES)), malignant)[tf.newaxis, :]
    others = tf.argmax(tf.where(is_malignant, -1.0, probabilities), axis=1)
    above = probabilities[:, malignant] >= self._threshold
    argmax = tf.argmax(probabilities, axis=1)
    return tf.where(self._threshold > 1.0, argmax,
                    tf.where(above, tf.cast(malignant, tf.int64), others))

  def _review(self, member_uncalibrated: tf.Tensor, probabilities: tf.Tensor
              ) -> Tuple[tf.Tensor, tf.Tensor]:
    """(the reason's code in calibration.REVIEW_REASONS, 0 when the image need not go to a
    person first; the reason, or ''), as
    calibration.review_reasons: the ensemble's calibrated malignant probability within the band
    around the threshold, or the members, each calibrated alike, on both sides of the band (with
    no threshold: of different most probable classes)."""
    def log_odds(probability):
      probability = tf.clip_by_value(probability, 1e-7, 1 - 1e-7)
      return tf.math.log(probability) - tf.math.log1p(-probability)

    malignant = features.MALIGNANT_LABEL
    distance = log_odds(probabilities[:, malignant]) - log_odds(tf.minimum(self._threshold, 1.0))
    near = tf.logical_and(self._review_half_width >= 0.0,
                          tf.abs(distance) <= self._review_half_width)
    members = self._calibrated(member_uncalibrated)  # softmax over the last axis, per member
    member_distance = (log_odds(members[:, :, malignant])
                       - log_odds(tf.minimum(self._threshold, 1.0)))
    half_width = tf.maximum(self._review_half_width, 0.0)
    most_probable = tf.argmax(members, axis=2)
    disagree = tf.where(
        self._threshold > 1.0,
        tf.reduce_any(tf.not_equal(most_probable, most_probable[:1]), axis=0),
        tf.logical_and(tf.reduce_max(member_distance, axis=0) > half_width,
                       tf.reduce_min(member_distance, axis=0) < -half_width))
    code = tf.cast(near, tf.int32) + 2 * tf.cast(disagree, tf.int32)
    return code, tf.gather(self._review_reasons, code)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve_image_bytes(self, image_bytes):
    members = self._member_uncalibrated({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})
    probabilities = self._calibrated(tf.reduce_mean(members, axis=0))
    code, reason = self._review(members, probabilities)
    batch = tf.shape(probabilities)[0]
    return {
        'probabilities': probabilities,
        'classes': tf.tile(self._class_names[tf.newaxis, :], [batch, 1]),
        'most_probable_class': tf.gather(self._class_names, tf.argmax(probabilities, axis=1)),
        'most_probable_probability': tf.reduce_max(probabilities, axis=1),
        'decision': tf.gather(self._class_names, self._decision(probabilities)),
        # A threshold above 1 means there is none: the decision is the most probable class.
        'malignant_threshold': tf.fill([batch], self._threshold),
        'review': code > 0,
        'review_reason': reason,
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def explain(self, image_bytes):
    """The decision with a Grad-CAM heat map of the decided class over the pixels it was made
    on (models/explanation.py)."""
    transformed = self.transform_layer({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})
    pixels = transformed[features.TRANSFORMED_IMAGE_KEY]
    probabilities = self._calibrated(tf.reduce_mean(self._networks.member_probabilities(pixels),
                                                    axis=0))
    decision = self._decision(probabilities)
    return {
        'probabilities': probabilities,
        'decision': tf.gather(self._class_names, decision),
        'heat_map': explanation.ensemble_grad_cam(self.members, self._networks.explainers, pixels,
                                                  decision),
        'image_pixels': pixels,
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(self, examples):
    spec = {features.IMAGE_KEY: self._raw_feature_spec[features.IMAGE_KEY]}
    members = self._member_uncalibrated(tf.io.parse_example(examples, spec))
    uncalibrated = tf.reduce_mean(members, axis=0)
    probabilities = self._calibrated(uncalibrated)
    code, _ = self._review(members, probabilities)
    return {
        'probabilities': probabilities,
        'uncalibrated_probabilities': uncalibrated,
        # One-hot of the decision at the operating point, for TFMA's metrics at that point.
        'operating_point': tf.one_hot(self._decision(probabilities), len(features.LABEL_NAMES)),
        'malignant_threshold': tf.fill([tf.shape(probabilities)[0]], self._threshold),
        # The review flag as its reason's code (calibration.REVIEW_REASONS; 0: not flagged): a
        # number, which TFMA's metrics and BulkInferrer's prediction logs take.
        'review': tf.cast(code, tf.float32),
    }

  def pixels_signature(self, image_size: int, members: Optional[Sequence[keras.Model]] = None):
    """The `from_pixels` signature for pixels of `image_size` (Transform's output), on the
    module's members or on `members` (the on-device copies of them)."""
    probabilities = (
        (lambda pixels: tf.reduce_mean(self._networks.member_probabilities(pixels), axis=0))
        if members is None else _probabilities_of(members, self._test_time_flips))

    @tf.function(input_signature=[tf.TensorSpec(
        [None, image_size, image_size, features.IMAGE_CHANNELS], tf.float32,
        name=features.TRANSFORMED_IMAGE_KEY)])
    def from_pixels(image_pixels):
      return {'probabilities': self._calibrated(probabilities(image_pixels))}

    return from_pixels

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def transform_features(self, examples):
    return self.transform_layer(tf.io.parse_example(examples, self._raw_feature_spec))


def export_model(members: Sequence[keras.Model], tf_transform_output: tft.TFTransformOutput,
                 export_dir: str, test_time_flips: bool,
                 operating_point: calibration.OperatingPoint, image_size: int) -> ExportModule:
  """Saves the SavedModel with its signatures (the module docstring); returns its module."""
  module = ExportModule(members, tf_transform_output, test_time_flips, operating_point)
  tf.saved_model.save(module, export_dir, signatures={
      'serving_default': module.serve_image_bytes,
      'from_examples': module.serve_examples,
      'transform_features': module.transform_features,
      'explain': module.explain,
      on_device.PIXELS_SIGNATURE: module.pixels_signature(image_size),
  })
  blank_image = tf.io.encode_png(tf.zeros([image_size, image_size, 3], tf.uint8)).numpy()
  serving_warmup.write_requests(export_dir, [
      ('serving_default', {'image_bytes': np.array([blank_image])}),
      ('explain', {'image_bytes': np.array([blank_image])}),
      (on_device.PIXELS_SIGNATURE,
       {'image_pixels': np.zeros([1, image_size, image_size, 3], np.float32)}),
  ])
  return module


def export_on_device(module: ExportModule, model_dir: str, image_size: int,
                     operating_point: calibration.OperatingPoint, weight_type: str) -> None:
  """The TFLite model of `from_pixels` in `<model_dir>/tflite/`. A network TFLite cannot
  convert must not cost the trained model: the reason goes to `tflite/conversion_error.txt`
  (the Trainer's executor records it) and training goes on."""
  output_dir = os.path.join(model_dir, on_device.TFLITE_DIR)
  try:
    on_device.export_tflite(
        lambda members: module.pixels_signature(image_size, members), module.members,
        output_dir, image_size, operating_point.malignant_threshold, weight_type)
  except Exception as error:  # pylint: disable=broad-except  # the converter raises many kinds
    reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    logging.warning('No TFLite model: %s', reason)
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, on_device.TFLITE_ERROR_FILE), 'w') as handle:
      handle.write(reason)
