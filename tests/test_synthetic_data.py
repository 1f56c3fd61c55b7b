"""The synthetic default data set: BUSI layout, masks where lesions are, deterministic."""

import hashlib
import os

import numpy as np
from PIL import Image

from data import synthetic


def _digest_tree(root: str) -> dict:
  digests = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as handle:
        digests[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
  return digests


def test_layout_counts_and_masks(tmp_path):
  count = synthetic.generate_dataset(str(tmp_path), images_per_class=3, image_size=64, seed=1)
  assert count == 9
  for class_name in ('benign', 'malignant', 'normal'):
    names = sorted(os.listdir(tmp_path / class_name))
    assert names == sorted([f'{class_name} ({n}).png' for n in (1, 2, 3)] +
                           [f'{class_name} ({n})_mask.png' for n in (1, 2, 3)])
    for number in (1, 2, 3):
      image = Image.open(tmp_path / class_name / f'{class_name} ({number}).png')
      mask = np.asarray(Image.open(tmp_path / class_name / f'{class_name} ({number})_mask.png'))
      assert image.size == (64, 64)
      lesion_pixels = int((mask > 0).sum())
      if class_name == 'normal':
        assert lesion_pixels == 0
      else:
        assert lesion_pixels > 20


def test_lesions_are_darker_than_surrounding_tissue(tmp_path):
  synthetic.generate_dataset(str(tmp_path), images_per_class=4, image_size=128, seed=3)
  for class_name in ('benign', 'malignant'):
    for number in range(1, 5):
      image = np.asarray(Image.open(tmp_path / class_name / f'{class_name} ({number}).png'),
                         dtype=float)
      mask = np.asarray(Image.open(tmp_path / class_name / f'{class_name} ({number})_mask.png'))
      assert image[mask > 0].mean() < 0.6 * image[mask == 0].mean()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
  synthetic.generate_dataset(str(tmp_path / 'a'), images_per_class=2, image_size=48, seed=5)
  synthetic.generate_dataset(str(tmp_path / 'b'), images_per_class=2, image_size=48, seed=5)
  synthetic.generate_dataset(str(tmp_path / 'c'), images_per_class=2, image_size=48, seed=6)
  assert _digest_tree(tmp_path / 'a') == _digest_tree(tmp_path / 'b')
  assert _digest_tree(tmp_path / 'a') != _digest_tree(tmp_path / 'c')
