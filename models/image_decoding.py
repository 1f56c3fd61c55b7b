"""Encoded image bytes to pixels: the one way every step decodes an image, in the TF graph.

ImageExampleGen checks with `decode_rgb` that TensorFlow sees the pixels Pillow saw (and stores a
PNG of Pillow's pixels when it would not); Transform's `preprocessing_fn`, and so the exported
serving signature, decodes with it. Before decoding anything it reads the dimensions from the
header and refuses an image of more than `features.MAX_IMAGE_PIXELS`, so a small file that
claims enormous dimensions costs an error, not gigabytes, in the pipeline, in our server and in
TensorFlow Serving alike.

Accepted: PNG (any bit depth and colour type), JPEG (decoded with the accurate integer DCT,
which gives Pillow's pixels exactly) and BMP of 24 or 32 bits per pixel. TensorFlow decodes
palette and 1-bit BMPs wrongly, so those are refused here; ImageExampleGen re-encodes them as
PNG before Transform sees them.
"""

import tensorflow as tf

from models import features

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SIGNATURE = b'\xff\xd8\xff'
_BMP_SIGNATURE = b'BM'


def _integer(encoded: tf.Tensor, offset: int, length: int, big_endian: bool,
             signed: bool = False) -> tf.Tensor:
  """The `length`-byte integer at `offset` as int64; the string must be long enough."""
  values = tf.reshape(tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, offset, length),
                                               tf.uint8), tf.int64), [length])
  powers = [256 ** position for position in range(length)]
  weights = tf.constant(powers[::-1] if big_endian else powers, tf.int64)
  value = tf.reduce_sum(values * weights)
  if signed:
    value = tf.where(value >= 2 ** (8 * length - 1), value - 2 ** (8 * length), value)
  return value


def _png_header(encoded: tf.Tensor):
  """(height, width, 24): IHDR is the first chunk, width and height big-endian at 16 and 20."""
  return (_integer(encoded, 20, 4, big_endian=True), _integer(encoded, 16, 4, big_endian=True),
          tf.constant(24, tf.int64))


def _bmp_header(encoded: tf.Tensor):
  """(height, width, bits per pixel) from the DIB header (the old 12-byte core one or later)."""
  core = tf.equal(_integer(encoded, 14, 4, big_endian=False), 12)
  width = tf.where(core, _integer(encoded, 18, 2, False, signed=True),
                   _integer(encoded, 18, 4, False, signed=True))
  # A negative height means rows stored top-down.
  height = tf.abs(tf.where(core, _integer(encoded, 20, 2, False, signed=True),
                           _integer(encoded, 22, 4, False, signed=True)))
  bits_per_pixel = tf.where(core, _integer(encoded, 24, 2, False),
                            _integer(encoded, 28, 2, False))
  return height, width, bits_per_pixel


def _jpeg_header(encoded: tf.Tensor):
  """(height, width, 24) from the JPEG's frame header, without decoding."""
  shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)
  return shape[0], shape[1], tf.constant(24, tf.int64)


def _starts_with(encoded: tf.Tensor, signature: bytes) -> tf.Tensor:
  return tf.equal(tf.strings.substr(encoded, 0, len(signature)), signature)


def refusal_message(error: tf.errors.InvalidArgumentError) -> str:
  """The readable part of decode_rgb's refusal: 'Unsupported BMP: bits per pixel 8 (...)'."""
  message = error.message
  if 'Summarized data: ' in message:  # eager: one value a line
    message = message.split('Summarized data: ', 1)[1]
  elif 'assertion failed: ' in message:  # in a graph: '[text] [value] ...', then the node
    message = message.split('assertion failed: ', 1)[1].split('\n', 1)[0]
  parts = [part.strip().strip('[]') for part in message.replace('] [', '\n').splitlines()]
  parts = [part[2:-1] if part.startswith(("b'", 'b"')) else part for part in parts if part]
  return ' '.join(parts)


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
  """One encoded image (a scalar string) → uint8 [height, width, 3].

  Raises InvalidArgumentError, before decoding, for an unknown format, a header too short to
  read, an unsupported BMP, or more than MAX_IMAGE_PIXELS pixels.
  """
  length = tf.strings.length(encoded)
  is_png = _starts_with(encoded, _PNG_SIGNATURE)
  is_jpeg = _starts_with(encoded, _JPEG_SIGNATURE)
  is_bmp = _starts_with(encoded, _BMP_SIGNATURE)
  known = tf.debugging.Assert(
      is_png | is_jpeg | is_bmp,
      ['Unsupported image format: expected PNG, JPEG or BMP bytes'])
  with tf.control_dependencies([known]):
    readable = tf.debugging.Assert(
        is_jpeg | (is_png & (length >= 24)) | (is_bmp & (length >= 30)),
        ['Image header is truncated'])
  with tf.control_dependencies([readable]):
    height, width, bits_per_pixel = tf.case(
        [(is_png, lambda: _png_header(encoded)), (is_bmp, lambda: _bmp_header(encoded))],
        default=lambda: _jpeg_header(encoded))
  pixels = height * width
  checks = [
      tf.debugging.Assert(
          (height > 0) & (width > 0) & (pixels <= features.MAX_IMAGE_PIXELS),
          ['Image too large or empty: header says height', height, 'width', width,
           f'(at most {features.MAX_IMAGE_PIXELS} pixels are decoded)']),
      tf.debugging.Assert(
          ~is_bmp | tf.equal(bits_per_pixel, 24) | tf.equal(bits_per_pixel, 32),
          ['Unsupported BMP: bits per pixel', bits_per_pixel,
           '(24 and 32 are decoded; convert it to PNG)']),
  ]
  with tf.control_dependencies(checks):
    decoded = tf.case([
        (is_png, lambda: tf.io.decode_png(encoded, channels=features.IMAGE_CHANNELS)),
        (is_bmp, lambda: tf.io.decode_bmp(encoded, channels=features.IMAGE_CHANNELS)),
    ], default=lambda: tf.io.decode_jpeg(encoded, channels=features.IMAGE_CHANNELS,
                                         dct_method='INTEGER_ACCURATE'))
  decoded.set_shape([None, None, features.IMAGE_CHANNELS])
  return decoded
