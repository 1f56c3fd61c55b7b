"""The input policy, on a data root that holds every kind of file the policy names: operating-
system clutter is ignored, every other file is used or skipped with its precise reason, links and
nested folders follow the documented rule, and every image Pillow reads reaches Transform's
decoder as the pixels Pillow saw."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import contracts
from components.image_example_gen import component, executor
from data import synthetic
from inputs import image_files, layout
from models import features, image_decoding

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (40, 52, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (40, 52), dtype=np.uint8)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **options)
  return buffer.getvalue()


# Every mode, bit depth and colour space the test writes, with the format it is saved in.
MODES = {
    'one bit.png': encoded(Image.fromarray(GREY > 128), 'PNG'),
    'grey.png': encoded(Image.fromarray(GREY), 'PNG'),
    'grey alpha.png': encoded(Image.fromarray(GREY).convert('LA'), 'PNG'),
    'palette.png': encoded(Image.fromarray(PIXELS).quantize(32), 'PNG'),
    'palette transparency.png': encoded(Image.fromarray(PIXELS).quantize(32), 'PNG',
                                        transparency=0),
    'rgba.png': encoded(Image.fromarray(np.dstack([PIXELS, GREY])), 'PNG'),
    'sixteen bit grey.png': encoded(Image.fromarray(GREY.astype(np.uint16) * 257), 'PNG'),
    'interlaced.png': encoded(Image.fromarray(PIXELS), 'PNG', interlace=1),
    'UPPER CASE.PNG': encoded(Image.fromarray(PIXELS), 'PNG'),
    'rgb.jpg': encoded(Image.fromarray(PIXELS), 'JPEG', quality=90),
    'grey.jpeg': encoded(Image.fromarray(GREY), 'JPEG'),
    'cmyk.jpg': encoded(Image.fromarray(PIXELS).convert('CMYK'), 'JPEG'),
    'progressive.JPG': encoded(Image.fromarray(PIXELS), 'JPEG', progressive=True),
    'rgb.bmp': encoded(Image.fromarray(PIXELS), 'BMP'),
    'one bit.bmp': encoded(Image.fromarray(GREY > 128), 'BMP'),
    'palette.bmp': encoded(Image.fromarray(PIXELS).quantize(16), 'BMP'),
    'grey.bmp': encoded(Image.fromarray(GREY), 'BMP'),
    'tiff inside.png': encoded(Image.fromarray(PIXELS), 'TIFF'),
}
# Of those, the ones TensorFlow would not decode to Pillow's pixels: stored as PNG instead.
NORMALISED = {'one bit.bmp', 'palette.bmp', 'grey.bmp', 'tiff inside.png'}


def png_with_header(width: int, height: int) -> bytes:
  """A small, valid-looking PNG whose header claims `width` × `height` (CRC kept right)."""
  png = bytearray(MODES['grey.png'])
  struct.pack_into('>II', png, 16, width, height)
  struct.pack_into('>I', png, 29, zlib.crc32(bytes(png[12:29])) & 0xffffffff)
  return bytes(png)


@pytest.fixture(scope='module')
def messy_root(tmp_path_factory):
  """A data root with synthetic images plus every kind of file the input policy names."""
  base = tmp_path_factory.mktemp('messy')
  root = base / 'images'
  synthetic.generate_dataset(str(root), images_per_class=6, image_size=48, seed=8)
  # The normal class folder is a symbolic link to a folder outside the data root.
  os.rename(root / 'normal', base / 'normal elsewhere')
  os.symlink(base / 'normal elsewhere', root / 'normal')
  for name, content in MODES.items():
    (root / 'benign' / name).write_bytes(content)
  # Operating-system clutter, at the top and inside class folders.
  (root / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
  (root / '__MACOSX' / 'benign').mkdir(parents=True)
  (root / '__MACOSX' / 'benign' / '._benign (1).png').write_bytes(b'\x00\x05\x16\x07')
  (root / 'benign' / '._benign (1).png').write_bytes(b'\x00\x05\x16\x07')
  (root / 'malignant' / 'Thumbs.db').write_bytes(b'\xd0\xcf\x11\xe0')
  (root / 'normal' / 'desktop.ini').write_text('[.ShellClassInfo]')
  # Files to skip, one of each reason.
  good_png = MODES['grey.png']
  crc_broken = bytearray(good_png)
  crc_broken[good_png.index(b'IDAT') + 8] ^= 0xff
  (root / 'malignant' / 'bad crc.png').write_bytes(bytes(crc_broken))
  # The same broken data with its CRC made right: only the decoder can tell.
  idat = good_png.index(b'IDAT')
  length, = struct.unpack('>I', good_png[idat - 4:idat])
  struct.pack_into('>I', crc_broken, idat + 4 + length,
                   zlib.crc32(bytes(crc_broken[idat:idat + 4 + length])) & 0xffffffff)
  (root / 'malignant' / 'corrupt data.png').write_bytes(bytes(crc_broken))
  (root / 'malignant' / 'truncated.png').write_bytes(good_png[:len(good_png) // 2])
  (root / 'malignant' / 'truncated.jpg').write_bytes(MODES['rgb.jpg'][:len(MODES['rgb.jpg']) // 2])
  (root / 'normal' / 'empty.png').write_bytes(b'')
  (root / 'benign' / 'words.png').write_text('not an image at all')
  (root / 'benign' / 'animation.gif').write_bytes(encoded(Image.fromarray(PIXELS), 'GIF'))
  (root / 'benign' / 'notes.txt').write_text('scanned on Tuesday')
  (root / 'malignant' / 'huge header.png').write_bytes(png_with_header(8000, 8000))
  (root / 'malignant' / 'bomb.png').write_bytes(png_with_header(30000, 30000))
  with open(root / 'normal' / 'too large.png', 'wb') as handle:  # sparse: costs no disk
    handle.truncate(layout.MAX_IMAGE_FILE_BYTES + 1)
  with open(os.path.join(os.fsencode(root), b'benign', b'caf\xe9 latin-1.png'), 'wb') as handle:
    handle.write(good_png)
  os.symlink('/no/such/scan.png', root / 'benign' / 'dangling.png')
  (base / 'outside.png').write_bytes(good_png)
  os.symlink(base / 'outside.png', root / 'benign' / 'outside link.png')
  os.symlink(root / 'malignant' / 'malignant (1).png', root / 'benign' / 'inside link.png')
  (root / 'benign' / 'orphan_mask.png').write_bytes(good_png)
  (root / 'benign' / 'extra' / 'deeper').mkdir(parents=True)
  (root / 'benign' / 'extra' / 'x.png').write_bytes(good_png)
  (root / 'benign' / 'extra' / 'deeper' / 'y.png').write_bytes(good_png)
  (root / 'README.md').write_text('outside the class folders')
  return root


@pytest.fixture(scope='module')
def messy_examples(messy_root, tmp_path_factory):
  examples = component.run_executor_directly(
      str(messy_root), str(tmp_path_factory.mktemp('messy_out')), max_unreadable_fraction=0.9)
  return examples


def property_rows(examples, name):
  return {row['file']: row['reason'] for row in examples.get_json_value_custom_property(name)}


def written_examples(examples):
  found = {}
  for split in artifact_splits(examples):
    files = tf.io.gfile.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      name = example.features.feature[features.FILENAME_KEY].bytes_list.value[0].decode()
      found[name] = example
  return found


def artifact_splits(examples):
  return (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT, contracts.EXCLUDED_SPLIT)


def test_clutter_is_ignored_and_listed_never_unusable(messy_examples):
  ignored = property_rows(messy_examples, contracts.IGNORED_FILES_PROPERTY)
  assert set(ignored) == {'.DS_Store', '__MACOSX/', 'benign/._benign (1).png',
                          'malignant/Thumbs.db', 'normal/desktop.ini'}
  assert messy_examples.get_int_custom_property(contracts.IGNORED_COUNT_PROPERTY) == 5
  skipped = property_rows(messy_examples, contracts.SKIPPED_FILES_PROPERTY)
  assert not set(ignored) & set(skipped)


def test_every_other_file_is_skipped_with_its_precise_reason(messy_examples):
  skipped = property_rows(messy_examples, contracts.SKIPPED_FILES_PROPERTY)
  expected = {
      'malignant/bad crc.png': 'CRC error in the PNG IDAT chunk',
      'malignant/corrupt data.png': 'corrupt PNG data (broken data stream when reading image',
      'malignant/truncated.png': 'truncated PNG file',
      'malignant/truncated.jpg': 'truncated JPEG file',
      'normal/empty.png': 'empty file (0 bytes)',
      'benign/words.png': 'not an image: Pillow cannot identify',
      'benign/animation.gif': 'unsupported image format (.gif',
      'benign/notes.txt': 'not an image file (.txt)',
      'malignant/huge header.png': 'too many pixels: the header says 8000 × 8000',
      'malignant/bomb.png': 'too many pixels (Pillow: Image size (900000000 pixels)',
      'normal/too large.png': 'file too large',
      'benign/caf\\xe9 latin-1.png': 'file name is not valid UTF-8',
      'benign/dangling.png': 'dangling link (to /no/such/scan.png)',
      'benign/outside link.png': 'link to a file outside the data root',
      'benign/orphan_mask.png': 'mask without an image',
      'benign/extra/x.png': 'in a folder nested inside a class folder',
      'benign/extra/deeper/y.png': 'in a folder nested inside a class folder',
      'README.md': 'not in a class folder',
  }
  assert set(skipped) == set(expected)
  for file, reason in expected.items():
    assert skipped[file].startswith(reason), (file, skipped[file])


def test_every_readable_image_is_used_through_links_and_in_any_mode(messy_examples):
  names = set(written_examples(messy_examples))
  # The linked class folder is followed, a link inside the data root too.
  assert {f'normal/normal ({number}).png' for number in range(1, 7)} <= names
  assert 'benign/inside link.png' in names
  assert {f'benign/{name}' for name in MODES} <= names
  assert len(names) == 18 + len(MODES) + 1
  normalised = property_rows(messy_examples, contracts.NORMALISED_FILES_PROPERTY)
  assert set(normalised) == {f'benign/{name}' for name in NORMALISED}


@pytest.mark.parametrize('name', sorted(MODES))
def test_transform_decodes_each_image_to_the_pixels_pillow_saw(messy_examples, name):
  stored = written_examples(messy_examples)[f'benign/{name}'].features.feature[
      features.IMAGE_KEY].bytes_list.value[0]
  if name not in NORMALISED:
    assert stored == MODES[name]  # the file's own bytes, untouched
  # Transform's decoder, as preprocessing_fn and the serving signature run it.
  decoded = image_decoding.decode_rgb(tf.constant(stored)).numpy()
  expected = image_files.rgb_pixels(Image.open(io.BytesIO(MODES[name])))
  assert decoded.shape == expected.shape == (40, 52, 3)
  assert np.array_equal(decoded, expected)


def test_a_class_with_no_usable_image_stops_the_run_naming_it(tmp_path):
  root = tmp_path / 'images'
  synthetic.generate_dataset(str(root), images_per_class=3, image_size=32, seed=1)
  for path in (root / 'normal').iterdir():
    path.write_bytes(b'')
  with pytest.raises(executor.UnusableInputError,
                     match=r"class 'normal' has no usable image .* \(6 of its files skipped\)"):
    component.run_executor_directly(str(root), str(tmp_path / 'out'), max_unreadable_fraction=1)


def test_serving_decoder_refuses_before_allocating():
  for content, message in (
      (png_with_header(20000, 20000), 'Image too large or empty'),
      (b'hello', 'Unsupported image format'),
      (MODES['grey.png'][:20], 'Image header is truncated'),
      (MODES['palette.bmp'], 'Unsupported BMP'),
      (encoded(Image.fromarray(PIXELS), 'GIF'), 'Unsupported image format')):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      image_decoding.decode_rgb(tf.constant(content))


def test_the_whole_pipeline_runs_on_the_messy_root(messy_root, tmp_path, python, project_root,
                                                   run_pipeline):
  completed = run_pipeline(python, project_root, messy_root, tmp_path / 'output',
                           '--max-unreadable-fraction', '0.5', '--min-accuracy', '0',
                           '--epochs', '1', '--network', 'seed',  # the input is under test
                           '--tflite-weights', 'none')
  assert 'Transform done' in completed.stdout and 'blessed: yes' in completed.stdout
  assert ('ignored 5 files left by operating systems or archivers: .DS_Store, __MACOSX/, '
          'benign/._benign (1).png, malignant/Thumbs.db, normal/desktop.ini') in completed.stdout
  assert 'skipped 18 input files' in completed.stdout
  assert 'benign/extra/deeper/y.png: in a folder nested inside a class folder' in completed.stdout
  assert f'stored {len(NORMALISED)} images as PNG' in completed.stdout
  page = (tmp_path / 'output' / 'report' / 'index.html').read_text()
  assert '5 files left by operating systems or archivers were ignored' in page
