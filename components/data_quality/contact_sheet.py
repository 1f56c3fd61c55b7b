"""A PNG contact sheet of near-duplicate groups: one row per group, one thumbnail per image.

Label conflicts come first (their row title is red), then the largest duplicate groups. Each
thumbnail is captioned with its file name, label and split, so a reader can judge at a glance
whether the grouping is right and which label is wrong.
"""

import io
from typing import Dict, List

from PIL import Image, ImageDraw, ImageFont

THUMBNAIL = 128
MAX_ROWS = 12
MAX_PER_ROW = 8
_CAPTION_HEIGHT = 34
_TITLE_HEIGHT = 24
_PADDING = 8
_BACKGROUND = (24, 24, 24)
_TEXT = (230, 230, 230)
_CONFLICT = (255, 110, 100)
_DUPLICATE = (140, 200, 255)


def _font(size: int) -> ImageFont.ImageFont:
  return ImageFont.load_default(size=size)


def _fit(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> str:
  """`text` shortened from the left with '...' until it fits `width` pixels."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength('...' + text, font=font) > width:
    text = text[1:]
  return '...' + text


def _thumbnail(encoded: bytes) -> Image.Image:
  image = Image.open(io.BytesIO(encoded)).convert('RGB')
  image.thumbnail((THUMBNAIL, THUMBNAIL))
  tile = Image.new('RGB', (THUMBNAIL, THUMBNAIL), _BACKGROUND)
  tile.paste(image, ((THUMBNAIL - image.width) // 2, (THUMBNAIL - image.height) // 2))
  return tile


def draw_contact_sheet(groups: List[dict], images: Dict[str, bytes], title: str) -> Image.Image:
  """The sheet for `groups` (data-quality report entries) with thumbnails from `images`."""
  groups = groups[:MAX_ROWS]
  cell_width = THUMBNAIL + _PADDING
  row_height = _TITLE_HEIGHT + THUMBNAIL + _CAPTION_HEIGHT + _PADDING
  widest = max([min(group['size'], MAX_PER_ROW) for group in groups] + [1])
  width = max(720, _PADDING + widest * cell_width)
  height = 40 + max(1, len(groups)) * row_height
  sheet = Image.new('RGB', (width, height), _BACKGROUND)
  draw = ImageDraw.Draw(sheet)
  title_font, row_font, caption_font = _font(18), _font(14), _font(11)
  draw.text((_PADDING, 10), title, fill=_TEXT, font=title_font)
  if not groups:
    draw.text((_PADDING, 50), 'No near-duplicates found.', fill=_TEXT, font=row_font)
  for row, group in enumerate(groups):
    top = 40 + row * row_height
    labels = ', '.join(f'{count} {label}' for label, count in group['labels'].items())
    kind = 'LABEL CONFLICT' if group['label_conflict'] else 'near-duplicates'
    shown = min(group['size'], MAX_PER_ROW)
    more = f'  (first {shown} shown)' if group['size'] > shown else ''
    draw.text((_PADDING, top + 4),
              f'{kind}: {group["size"]} images, {labels}; split: {" + ".join(group["splits"])}'
              f'{more}',
              fill=_CONFLICT if group['label_conflict'] else _DUPLICATE, font=row_font)
    for column, member in enumerate(group['files'][:MAX_PER_ROW]):
      left = _PADDING + column * cell_width
      if member['file'] in images:
        sheet.paste(_thumbnail(images[member['file']]), (left, top + _TITLE_HEIGHT))
      caption_top = top + _TITLE_HEIGHT + THUMBNAIL + 2
      # The folder is the label, shown below; the file name alone fits the thumbnail better.
      file_name = member['file'].rsplit('/', 1)[-1]
      draw.text((left, caption_top), _fit(file_name, caption_font, THUMBNAIL, draw),
                fill=_TEXT, font=caption_font)
      draw.text((left, caption_top + 14), f'{member["label"]} · {member["split"]}',
                fill=_CONFLICT if group['label_conflict'] else _TEXT, font=caption_font)
  return sheet
