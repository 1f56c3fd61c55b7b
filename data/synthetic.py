"""Generator of the synthetic breast-ultrasound data set the pipeline runs on by default.

Writes the public BUSI folder layout (`benign/benign (1).png` beside `benign/benign (1)_mask.png`)
so the real pipeline can run anywhere without patient data or a download. Each image is a
speckled echo texture with tissue layers; the classes differ the way the clinical signs do:

- normal: no lesion (its mask is empty, as in BUSI);
- benign: a smooth, oval, wider-than-tall hypoechoic mass, often with posterior enhancement;
- malignant: an irregular, spiculated, darker mass with posterior acoustic shadowing.

Everything is drawn from a random generator seeded per image, so a given seed, size and count
always produce the same files.

Public ultrasound sets also hold near-duplicates: the same frame re-encoded, resized, with a
different gain, with calipers and text burnt in, or filed under two classes. `near_duplicate`
makes such copies; `generate_dataset(..., with_near_duplicates=True)` (the default data set)
plants a few of each kind, two of them under another label, so the pipeline's data-quality check
has something to find.
"""

import argparse
import io
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from inputs.layout import MASK_SUFFIX
from models.features import LABEL_NAMES

DEFAULT_IMAGES_PER_CLASS = 80
DEFAULT_IMAGE_SIZE = 256
DEFAULT_SEED = 7


def _blurred_noise(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
  """Smooth random field in [0, 1]: low-frequency tissue echogenicity."""
  noise = rng.random((size, size)).astype(np.float32)
  blurred = Image.fromarray((noise * 255).astype(np.uint8)).filter(
      ImageFilter.GaussianBlur(radius))
  field = np.asarray(blurred, dtype=np.float32)
  field -= field.min()
  return field / max(field.max(), 1e-6)


def _tissue_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Echo amplitude before speckle: skin line, fat, glandular layer, chest wall."""
  rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
  skin_depth = rng.uniform(0.03, 0.07)
  skin = 0.9 * np.exp(-((rows - skin_depth) / 0.015) ** 2)
  glandular_top = rng.uniform(0.2, 0.35)
  glandular = 0.55 / (1.0 + np.exp(-(rows - glandular_top) / 0.03))
  chest_wall = 0.35 / (1.0 + np.exp(-(rows - rng.uniform(0.8, 0.92)) / 0.02))
  layers = 0.25 + skin + glandular - 0.3 * chest_wall
  texture = 0.55 + 0.9 * _blurred_noise(rng, size, radius=size / 40)
  depth_attenuation = 1.0 - 0.35 * rows
  return np.clip(layers * texture * depth_attenuation, 0.02, None)


def _lesion_polar_radius(rng: np.random.Generator, angles: np.ndarray,
                         malignant: bool) -> np.ndarray:
  """Lesion outline as a radius per angle, relative to its nominal size."""
  if not malignant:
    # A smooth or gently lobulated ellipse: few, weak low-order harmonics.
    radius = np.ones_like(angles)
    for harmonic in (2, 3, 4):
      radius += rng.uniform(0.0, 0.07) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    return radius
  # Irregular margin: strong harmonics plus narrow spicules radiating out; some malignant
  # masses are only microlobulated, with few short spicules.
  radius = np.ones_like(angles)
  for harmonic in range(2, 7):
    radius += rng.uniform(0.03, 0.12) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
  for _ in range(rng.integers(2, 11)):
    centre = rng.uniform(0, 2 * np.pi)
    width = rng.uniform(0.04, 0.09)
    distance = np.angle(np.exp(1j * (angles - centre)))
    radius += rng.uniform(0.15, 0.7) * np.exp(-(distance / width) ** 2)
  return radius


def _lesion_mask(rng: np.random.Generator, size: int,
                 malignant: bool) -> Tuple[np.ndarray, Tuple[float, float, float]]:
  """Boolean lesion mask and (centre row, centre column, half width) of the lesion."""
  centre_row = rng.uniform(0.38, 0.62) * size
  centre_col = rng.uniform(0.3, 0.7) * size
  nominal = rng.uniform(0.09, 0.16) * size
  if malignant:
    # Malignant masses tend to be taller than wide; benign ones wider than tall.
    half_height, half_width = nominal * rng.uniform(0.9, 1.2), nominal * rng.uniform(0.75, 1.0)
  else:
    half_height, half_width = nominal * rng.uniform(0.55, 0.75), nominal * rng.uniform(1.0, 1.4)
  tilt = rng.uniform(-0.3, 0.3)
  rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
  dy, dx = rows - centre_row, cols - centre_col
  along = dx * np.cos(tilt) + dy * np.sin(tilt)
  across = -dx * np.sin(tilt) + dy * np.cos(tilt)
  angles = np.arctan2(across / half_height, along / half_width)
  distance = np.hypot(along / half_width, across / half_height)
  mask = distance <= _lesion_polar_radius(rng, angles, malignant)
  return mask, (centre_row, centre_col, half_width)


def _soften(mask: np.ndarray, radius: float) -> np.ndarray:
  image = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(radius))
  return np.asarray(image, dtype=np.float32) / 255.0


def synthesize_image(class_name: str, rng: np.random.Generator,
                     size: int = DEFAULT_IMAGE_SIZE) -> Tuple[np.ndarray, np.ndarray]:
  """Returns one (image, mask) pair as uint8 arrays of shape (size, size)."""
  echo = _tissue_background(rng, size)
  mask = np.zeros((size, size), dtype=bool)
  if class_name != 'normal':
    malignant = class_name == 'malignant'
    mask, (centre_row, centre_col, half_width) = _lesion_mask(rng, size, malignant)
    inside = _soften(mask, radius=0.8 if malignant else 2.0)
    darkness = rng.uniform(0.08, 0.3) if malignant else rng.uniform(0.12, 0.4)
    echo = echo * (1.0 - inside) + echo * darkness * inside
    # Behind the lesion: acoustic shadow (malignant) or enhancement (benign).
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    column_profile = np.exp(-((cols - centre_col) / (0.9 * half_width)) ** 2)
    below = 1.0 / (1.0 + np.exp(-(rows - centre_row - 0.5 * half_width) / 3.0))
    if malignant:
      echo *= 1.0 - rng.uniform(0.15, 0.7) * column_profile * below * (1.0 - inside)
    else:
      echo *= 1.0 + rng.uniform(0.0, 0.35) * column_profile * below * (1.0 - inside)
  # Machines and operators differ in overall gain.
  echo *= rng.uniform(0.7, 1.3)
  # Multiplicative Rayleigh speckle, lightly blurred as a transducer's point spread would.
  speckle = rng.rayleigh(scale=0.8, size=(size, size)).astype(np.float32)
  image = echo * speckle
  image = np.asarray(
      Image.fromarray(np.clip(image * 110, 0, 255).astype(np.uint8)).filter(
          ImageFilter.GaussianBlur(0.7)))
  return image, mask.astype(np.uint8) * 255


NEAR_DUPLICATE_KINDS = ('exact', 'jpeg', 'resized', 'overlay', 'brighter', 'darker')


def _draw_calipers_and_text(image: Image.Image) -> Image.Image:
  """Caliper crosses joined by a dotted line and a burnt-in annotation, as scanners draw them."""
  marked = image.convert('L').copy()
  draw = ImageDraw.Draw(marked)
  width, height = marked.size
  arm = max(2, width // 40)
  ends = [(int(width * 0.35), int(height * 0.45)), (int(width * 0.62), int(height * 0.55))]
  for x, y in ends:
    draw.line((x - arm, y, x + arm, y), fill=255)
    draw.line((x, y - arm, x, y + arm), fill=255)
  for step in range(0, 20, 2):
    x0 = ends[0][0] + (ends[1][0] - ends[0][0]) * step / 20
    y0 = ends[0][1] + (ends[1][1] - ends[0][1]) * step / 20
    draw.point((x0, y0), fill=230)
  draw.text((3, height - 12), 'RT 10:00 3CM FN', fill=255)
  return marked


def near_duplicate(image: Image.Image, kind: str) -> Tuple[Image.Image, str]:
  """A copy of `image` altered as `kind` says; returns (image, file format to save it in)."""
  grey = image.convert('L')
  if kind == 'exact':
    return grey, 'PNG'
  if kind == 'jpeg':
    buffer = io.BytesIO()
    grey.save(buffer, format='JPEG', quality=70)
    return Image.open(io.BytesIO(buffer.getvalue())), 'JPEG'
  if kind == 'resized':
    return grey.resize((grey.width * 3 // 4, grey.height * 3 // 4), Image.BILINEAR), 'PNG'
  if kind == 'overlay':
    return _draw_calipers_and_text(grey), 'PNG'
  if kind in ('brighter', 'darker'):
    pixels = np.asarray(grey, dtype=np.float32)
    pixels = pixels + 35 if kind == 'brighter' else pixels * 0.7
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), 'PNG'
  raise ValueError(f'unknown near-duplicate kind {kind!r} (one of {NEAR_DUPLICATE_KINDS})')


def save_near_duplicate(source: str, target_stem: str, kind: str) -> str:
  """Writes a `kind` copy of the image file `source` as `target_stem` + extension; returns it."""
  copy, file_format = near_duplicate(Image.open(source), kind)
  path = target_stem + ('.jpg' if file_format == 'JPEG' else '.png')
  copy.save(path, format=file_format)
  return path


def plant_near_duplicates(output_dir: str, images_per_class: int) -> List[str]:
  """Adds near-duplicates to a generated data set: one of each kind within a class, and two
  copies filed under another class (label conflicts). Returns the files written."""
  written = []
  for index, kind in enumerate(NEAR_DUPLICATE_KINDS):
    class_name = LABEL_NAMES[index % len(LABEL_NAMES)]
    number = images_per_class + 1 + index // len(LABEL_NAMES)
    source = os.path.join(output_dir, class_name, f'{class_name} ({1 + index}).png')
    written.append(save_near_duplicate(
        source, os.path.join(output_dir, class_name, f'{class_name} ({number})'), kind))
  for source_class, target_class, kind in (('benign', 'malignant', 'exact'),
                                           ('normal', 'benign', 'jpeg')):
    source = os.path.join(output_dir, source_class, f'{source_class} (10).png')
    count = len([name for name in os.listdir(os.path.join(output_dir, target_class))
                 if MASK_SUFFIX not in name])
    written.append(save_near_duplicate(
        source, os.path.join(output_dir, target_class, f'{target_class} ({count + 1})'), kind))
  return written


def generate_dataset(output_dir: str, images_per_class: int = DEFAULT_IMAGES_PER_CLASS,
                     image_size: int = DEFAULT_IMAGE_SIZE, seed: int = DEFAULT_SEED,
                     with_near_duplicates: bool = False,
                     class_counts: Optional[Dict[str, int]] = None, gain: float = 1.0) -> int:
  """Writes the data set under `output_dir` in the BUSI layout; returns the number of images.

  With `with_near_duplicates`, also plants the copies of `plant_near_duplicates` (their lesion
  masks are not copied: BUSI's duplicates do not always have them either). `class_counts`
  gives some classes another number of images than `images_per_class`, and `gain` scales every
  grey level (a scanner set darker or brighter): what a span that drifted looks like.
  """
  counts = {name: images_per_class for name in LABEL_NAMES}
  counts.update(class_counts or {})
  for class_index, class_name in enumerate(LABEL_NAMES):
    class_dir = os.path.join(output_dir, class_name)
    os.makedirs(class_dir, exist_ok=True)
    for number in range(1, counts[class_name] + 1):
      rng = np.random.default_rng([seed, class_index, number])
      image, mask = synthesize_image(class_name, rng, image_size)
      if gain != 1.0:
        image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
      stem = os.path.join(class_dir, f'{class_name} ({number})')
      Image.fromarray(image).save(stem + '.png')
      Image.fromarray(mask).save(stem + MASK_SUFFIX + '.png')
  planted = plant_near_duplicates(output_dir, images_per_class) if with_near_duplicates else []
  return sum(counts.values()) + len(planted)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('output_dir')
  parser.add_argument('--images-per-class', type=int, default=DEFAULT_IMAGES_PER_CLASS)
  parser.add_argument('--image-size', type=int, default=DEFAULT_IMAGE_SIZE)
  parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
  parser.add_argument('--no-near-duplicates', action='store_true',
                      help='do not plant near-duplicates and label conflicts')
  args = parser.parse_args(argv)
  if args.images_per_class < 10 or args.image_size < 32:
    parser.error('--images-per-class must be at least 10 and --image-size at least 32')
  count = generate_dataset(args.output_dir, args.images_per_class, args.image_size, args.seed,
                           with_near_duplicates=not args.no_near_duplicates)
  print(f'wrote {count} images with masks under {args.output_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
