"""ImageExampleGen's executor, run for real with Beam on small folders the tests make."""

import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from components import contracts
from components.image_example_gen import component, executor
from data import synthetic
from models import features


def read_split(examples: standard_artifacts.Examples, split: str) -> list:
  files = glob.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))
  return [tf.train.Example.FromString(record.numpy())
          for record in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def value(example: tf.train.Example, key: str):
  feature = example.features.feature[key]
  if feature.HasField('int64_list'):
    return feature.int64_list.value[0]
  return feature.bytes_list.value[0]


def write_png(path, array):
  Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path):
  root = tmp_path / 'images'
  synthetic.generate_dataset(str(root), images_per_class=10, image_size=40, seed=11)
  return root


def test_one_example_per_image_with_masks_attached(image_folder, tmp_path):
  # A second mask for one image: BUSI names them _mask_1, _mask_2, ...
  second = np.zeros((40, 40), dtype=np.uint8)
  second[:5, :5] = 255
  write_png(image_folder / 'benign' / 'benign (3)_mask_1.png', second)

  examples = component.run_executor_directly(str(image_folder), str(tmp_path / 'out'))

  all_examples = read_split(examples, 'train') + read_split(examples, 'eval')
  names = sorted(value(example, features.FILENAME_KEY).decode() for example in all_examples)
  assert len(all_examples) == 30
  assert not any('_mask' in name for name in names)
  assert 'benign/benign (3).png' in names
  by_name = {value(e, features.FILENAME_KEY).decode(): e for e in all_examples}
  merged = by_name['benign/benign (3).png']
  assert value(merged, features.MASK_COUNT_KEY) == 2
  merged_mask = np.asarray(Image.open(io.BytesIO(value(merged, features.MASK_KEY))))
  original = np.asarray(Image.open(image_folder / 'benign' / 'benign (3)_mask.png'))
  assert (merged_mask[:5, :5] == 255).all()  # from the second mask
  assert ((merged_mask > 0) >= (original > 0)).all()  # everything the first mask marks
  single = by_name['malignant/malignant (1).png']
  assert value(single, features.MASK_COUNT_KEY) == 1
  # Encoded bytes, byte for byte the file, with the label and its name.
  with open(image_folder / 'malignant' / 'malignant (1).png', 'rb') as handle:
    assert value(single, features.IMAGE_KEY) == handle.read()
  assert value(single, features.LABEL_KEY) == features.LABEL_NAMES.index('malignant')
  assert value(single, features.LABEL_NAME_KEY) == b'malignant'
  assert (value(single, features.HEIGHT_KEY), value(single, features.WIDTH_KEY)) == (40, 40)
  assert examples.get_json_value_custom_property('skipped_files') == []


def test_corrupt_and_non_image_files_are_reported_by_name(image_folder, tmp_path):
  (image_folder / 'malignant' / 'broken (1).png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  (image_folder / 'normal' / 'notes.txt').write_text('scanned on Tuesday')
  (image_folder / 'benign' / 'orphan (9)_mask.png').write_bytes(
      (image_folder / 'benign' / 'benign (1)_mask.png').read_bytes())
  (image_folder / 'README.md').write_text('outside the class folders: listed, not counted')

  examples = component.run_executor_directly(str(image_folder), str(tmp_path / 'out'), max_unreadable_fraction=0.5)

  skipped = {row['file']: row['reason']
             for row in examples.get_json_value_custom_property('skipped_files')}
  assert set(skipped) == {'README.md', 'malignant/broken (1).png', 'normal/notes.txt',
                          'benign/orphan (9)_mask.png'}
  assert skipped['malignant/broken (1).png'] == 'corrupt PNG header (Pillow cannot read it)'
  assert skipped['README.md'] == 'not in a class folder'
  assert 'not an image file' in skipped['normal/notes.txt']
  assert 'mask without an image' in skipped['benign/orphan (9)_mask.png']
  assert examples.get_int_custom_property('example_count') == 30
  assert examples.get_int_custom_property('skipped_count') == 4
  with open(os.path.join(examples.uri, contracts.SKIPPED_FILES_FILE)) as handle:
    assert 'broken (1).png' in handle.read()


def test_too_many_unusable_files_fail_naming_them(image_folder, tmp_path):
  for number in range(3):
    (image_folder / 'benign' / f'truncated ({number}).jpg').write_bytes(b'\xff\xd8\xff\xe0')
  with pytest.raises(executor.UnusableInputError, match=r'truncated \(0\)\.jpg'):
    component.run_executor_directly(str(image_folder), str(tmp_path / 'out'), max_unreadable_fraction=0.05)


def test_jpeg_bmp_and_file_names_with_spaces_and_parentheses(tmp_path):
  root = tmp_path / 'images'
  for class_name in features.LABEL_NAMES:
    (root / class_name).mkdir(parents=True)
  rng = np.random.default_rng(0)
  pixels = [rng.integers(0, 255, size=(30, 50, 3), dtype=np.uint8) for _ in range(3)]
  Image.fromarray(pixels[0]).save(root / 'benign' / 'case (1) left.jpg', format='JPEG')
  Image.fromarray(pixels[1]).save(root / 'malignant' / 'case (2).bmp', format='BMP')
  Image.fromarray(pixels[2][..., 0]).save(root / 'normal' / 'case (3).PNG', format='PNG')

  examples = component.run_executor_directly(str(root), str(tmp_path / 'out'), eval_percent=50)

  all_examples = read_split(examples, 'train') + read_split(examples, 'eval')
  names = {value(e, features.FILENAME_KEY).decode(): e for e in all_examples}
  assert set(names) == {'benign/case (1) left.jpg', 'malignant/case (2).bmp',
                        'normal/case (3).PNG'}
  for example in names.values():
    decoded = tf.io.decode_image(value(example, features.IMAGE_KEY), channels=3)
    assert decoded.shape == (30, 50, 3)
    assert value(example, features.MASK_COUNT_KEY) == 0
    assert value(example, features.MASK_KEY) == b''


def test_split_is_stratified_and_deterministic(tmp_path):
  root = tmp_path / 'images'
  synthetic.generate_dataset(str(root), images_per_class=40, image_size=48, seed=2)
  # Unequal classes: 40 benign, 20 malignant, 10 normal.
  for class_name, count in (('malignant', 20), ('normal', 10)):
    for number in range(count + 1, 41):
      for path in root.glob(f'{class_name}/{class_name} ({number})*.png'):
        path.unlink()

  first = component.run_executor_directly(str(root), str(tmp_path / 'first'))
  second = component.run_executor_directly(str(root), str(tmp_path / 'second'))

  counts = first.get_json_value_custom_property('class_counts')
  assert counts == {'train': {'benign': 32, 'malignant': 16, 'normal': 8},
                    'eval': {'benign': 8, 'malignant': 4, 'normal': 2}}
  for split in ('train', 'eval'):
    names_first = sorted(value(e, features.FILENAME_KEY) for e in read_split(first, split))
    names_second = sorted(value(e, features.FILENAME_KEY) for e in read_split(second, split))
    assert names_first == names_second
  eval_names = {value(e, features.FILENAME_KEY) for e in read_split(first, 'eval')}
  train_names = {value(e, features.FILENAME_KEY) for e in read_split(first, 'train')}
  assert not eval_names & train_names
  # Not simply the first or last numbers of each class.
  assert eval_names != {f'benign/benign ({n}).png'.encode() for n in range(1, 9)}
