"""A Grad-CAM heat map drawn over the pixels the model saw: the picture of where it looked.

The model's `explain` signature gives both (`heat_map` in [0, 1], `image_pixels` in [0, 1]); the
prediction CLI writes this overlay for `--explain`, and the run report draws it for eval images.
"""

import numpy as np
from PIL import Image


def heat_colours(heat: np.ndarray) -> np.ndarray:
  """[h, w] in [0, 1] → [h, w, 3] in [0, 1]: blue (cold) through green and yellow to red."""
  heat = np.clip(heat, 0.0, 1.0)[..., None]
  return np.clip(1.5 - np.abs(4.0 * heat - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)


def heat_overlay(heat: np.ndarray, pixels: np.ndarray, strength: float = 0.6) -> np.ndarray:
  """uint8 [h, w, 3]: the pixels, coloured where the heat is, in proportion to it."""
  heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
  weight = strength * heat[..., None]
  blended = (1.0 - weight) * np.asarray(pixels, dtype=np.float32) + weight * heat_colours(heat)
  return (np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8)


def save_overlay(path: str, heat: np.ndarray, pixels: np.ndarray, scale: int = 2) -> None:
  """Writes the overlay as a PNG, enlarged `scale` times so small inputs stay readable."""
  image = Image.fromarray(heat_overlay(heat, pixels))
  image.resize((image.width * scale, image.height * scale), Image.BICUBIC).save(path, 'PNG')
