"""The input policy of ImageExampleGen: what each file under the data root is, what it holds, and
the tf.Example an image becomes. No Beam here.

Listing (`list_data_root`, `list_class_folder`) gives every file one entry:

- `image` or `mask` (a lesion mask beside its image: `x.png` has `x_mask.png`, `x_mask_1.png`);
- `ignored`: what operating systems and archivers leave behind (`.DS_Store`, `Thumbs.db`,
  `__MACOSX/`, `._x.png`, ...), listed but never counted as unusable;
- `skipped`, with the reason: not an image file, an unsupported image format, a name that is not
  valid UTF-8, a dangling link, a link to a file outside the data root, a file in a folder nested
  inside a class folder, a file outside the class folders.

The rules for folders and links: class folders may be symbolic links (they are followed);
folders nested inside a class folder are not searched, and every file in them is skipped by
name; a file that is a symbolic link is used when it points inside the data root or inside its
class folder, and skipped otherwise. Skipped files inside class folders count towards the
unusable fraction; files outside them are listed but do not count.

A file whose name is not an image's but which starts as DICOM (`DICM` at byte 128: a PACS
export's `IM0001`) is an image too. Reading a DICOM file gives its ultrasound picture
(inputs/dicom_files.py: the middle frame of a clip, cropped to the ultrasound region, in 8-bit
RGB), stored as a PNG of those pixels, or the reason there is none; a `.dcm` file that is not
DICOM is refused as such.

Reading (`check_image`) then either accepts an image or says precisely why not: an empty file, a
file over `layout.MAX_IMAGE_FILE_BYTES`, a PNG chunk whose CRC does not match, not an image
at all, more pixels than `features.MAX_IMAGE_PIXELS` (from the header, before decoding), a
truncated file, or corrupt data in the decoder's own words. Any image Pillow reads is used, in
any mode, bit depth or colour space; `tensorflow_ready_bytes` keeps the file's own bytes when
TensorFlow decodes them to the pixels Pillow saw, and otherwise stores a PNG of those pixels.
"""

import hashlib
import io
import os
import re
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from inputs import dicom_files, identifiers, layout, manifest
from models import features, image_decoding

_MASK_STEM = re.compile(r'^(?P<image_stem>.+)' + layout.MASK_SUFFIX + r'(?:_\d+)?$')
# Formats TensorFlow decodes itself (see models/image_decoding.py); others are re-encoded.
_TENSORFLOW_FORMATS = {'PNG', 'JPEG', 'BMP'}
_SIGNATURES = {b'\x89PNG\r\n\x1a\n': 'PNG', b'\xff\xd8\xff': 'JPEG', b'BM': 'BMP'}

Entry = Dict[str, Any]  # {'kind', 'file', 'path', and 'key' or 'reason' and 'counted'}


class UnusableFile(ValueError):
  """The file cannot be used; the message says precisely why."""


def relative_path(path: str, input_base: str) -> str:
  return os.path.relpath(path, input_base).replace(os.sep, '/')


def label_of_key(key: str) -> str:
  """The class name of a grouping key such as 'benign/benign (1)' or
  'span-2/benign/benign (1)'."""
  return key.rsplit('/', 1)[0].rsplit('/', 1)[-1]


class SpanLayoutError(ValueError):
  """The data root mixes span folders with class folders."""


def span_folders(input_base: str) -> Dict[int, str]:
  """{span number: folder name} of the data root's span folders (`span-1`, `span-2`, ...), or
  {} for a data root without spans, whose class folders sit at its top.

  Raises SpanLayoutError when class folders sit beside span folders: which images belong to
  which span would be a guess."""
  spans, class_folders = {}, []
  for name in _listdir(input_base):
    match = layout.SPAN_FOLDER.match(name)
    if match and _isdir(os.path.join(input_base, name)):
      spans[int(match.group(1))] = name
    elif name in features.LABEL_NAMES:
      class_folders.append(name)
  if spans and class_folders:
    raise SpanLayoutError(
        f'{input_base} holds span folders ({", ".join(spans[span] for span in sorted(spans))}) '
        f'and class folders ({", ".join(class_folders)}) side by side: move the class folders '
        f'into a span folder')
  return spans


def newest_span(input_base: str) -> int:
  """The newest span of the data root; 0 for a data root without spans."""
  return max(span_folders(input_base), default=0)


def span_folders_up_to(input_base: str, span: int) -> List[str]:
  """The folders of the spans up to `span`, oldest first: what ingesting `span` reads (its
  images, and the older ones' hashes). [''] for a data root without spans."""
  spans = span_folders(input_base)
  if not spans:
    return ['']
  if span not in spans:
    raise SpanLayoutError(f'span {span} is not under {input_base} (found: '
                          f'{", ".join(spans[number] for number in sorted(spans))})')
  return [spans[number] for number in sorted(spans) if number <= span]


def span_prefix(span_folder: str) -> str:
  """What a file's name relative to the data root starts with: 'span-2/', or '' without
  spans."""
  return span_folder + '/' if span_folder else ''


def with_prefix(entries: List[Entry], prefix: str) -> List[Entry]:
  """Entries listed below a span folder, their names made relative to the data root."""
  if not prefix:
    return entries
  return [{**entry, 'file': prefix + entry['file'],
           **({'key': prefix + entry['key']} if 'key' in entry else {})} for entry in entries]


def span_of_file(relative: str) -> int:
  """The span number a relative file name such as 'span-2/benign/x.png' lies in; 0 without
  spans."""
  match = layout.SPAN_FOLDER.match(relative.split('/', 1)[0])
  return int(match.group(1)) if match else 0


def _printable(name: str) -> Optional[str]:
  """None when `name` is valid UTF-8, else the name with its bad bytes escaped (\\xNN)."""
  try:
    name.encode('utf-8')
    return None
  except UnicodeEncodeError:
    return os.fsencode(name).decode('utf-8', 'backslashreplace')


def _skipped(file: str, path: str, reason: str, counted: bool) -> Entry:
  return {'kind': 'skipped', 'file': file, 'path': path, 'reason': reason, 'counted': counted}


def _ignored(file: str, path: str) -> Entry:
  return {'kind': 'ignored', 'file': file, 'path': path,
          'reason': 'left by an operating system or archiver'}


def classify_name(relative: str, path: str) -> Entry:
  """What a file directly inside a class folder is, from its name, or for a name that is not an
  image's, from whether it starts as DICOM."""
  folder, _, file_name = relative.rpartition('/')
  stem, extension = os.path.splitext(file_name)
  if extension.lower() not in layout.IMAGE_EXTENSIONS and dicom_files.starts_as_dicom(path):
    # A PACS export's names (`IM0001`, `1.2.840.113619.2.55.3.4`): the whole name is the stem.
    return {'kind': 'image', 'file': relative, 'path': path, 'key': f'{folder}/{file_name}'}
  if extension.lower() not in layout.IMAGE_EXTENSIONS:
    if extension.lower() in layout.OTHER_IMAGE_EXTENSIONS:
      return _skipped(relative, path, f'unsupported image format ({extension}; accepted: '
                      f'{", ".join(layout.IMAGE_EXTENSIONS)})', counted=True)
    return _skipped(relative, path,
                    f'not an image file ({extension or "no extension"})', counted=True)
  mask_match = _MASK_STEM.match(stem)
  if mask_match:
    return {'kind': 'mask', 'file': relative, 'path': path,
            'key': f'{folder}/{mask_match.group("image_stem")}'}
  return {'kind': 'image', 'file': relative, 'path': path, 'key': f'{folder}/{stem}'}


def _is_local(path: str) -> bool:
  return '://' not in path


def _listdir(folder: str) -> List[str]:
  """Names in a folder, sorted. Locally through `os`, which keeps names that are not valid
  UTF-8 (TensorFlow's filesystem layer fails on them); elsewhere through TensorFlow's, which
  marks folders with a trailing slash."""
  if _is_local(folder):
    return sorted(os.listdir(folder))
  return sorted(name.rstrip('/') for name in tf.io.gfile.listdir(folder))


def _isdir(path: str) -> bool:
  return os.path.isdir(path) if _is_local(path) else tf.io.gfile.isdir(path)


def _inside(path: str, folders: List[str]) -> bool:
  return any(path == folder or path.startswith(folder + os.sep) for folder in folders)


def _every_file_under(folder: str, relative_folder: str) -> Iterator[Tuple[str, str]]:
  """(relative name, path) of every file below `folder`, its own subfolders included."""
  found = False
  walk = os.walk(folder) if _is_local(folder) else tf.io.gfile.walk(folder)
  for directory, subfolders, files in walk:
    subfolders.sort()
    for name in sorted(files):
      found = True
      path = os.path.join(directory, name)
      yield relative_folder + '/' + relative_path(path, folder), path
  if not found:
    yield relative_folder + '/', folder


def list_data_root(input_base: str) -> Tuple[List[str], List[Entry]]:
  """(class folders to list, entries for everything else at the top of the data root)."""
  class_folders, entries = [], []
  for name in _listdir(input_base):
    path = os.path.join(input_base, name)
    printable = _printable(name)
    if printable is not None:
      entries.append(_skipped(printable, '', 'file name is not valid UTF-8', counted=False))
    elif layout.is_os_clutter(name):
      entries.append(_ignored(name + ('/' if _isdir(path) else ''), path))
    elif name in features.LABEL_NAMES and _isdir(path):
      class_folders.append(name)
    elif _isdir(path):
      entries += [_skipped(file, file_path, 'not in a class folder', counted=False)
                  for file, file_path in _every_file_under(path, name)]
    else:
      entries.append(_skipped(name, path, 'not in a class folder', counted=False))
  return class_folders, entries


def _link_problem(path: str, allowed: List[str]) -> Optional[str]:
  """Why a symbolic link is not followed, or None (also for a path that is not a link)."""
  if not (_is_local(path) and os.path.islink(path)):
    return None
  target = os.path.realpath(path)
  if not os.path.exists(target):
    return f'dangling link (to {os.readlink(path)})'
  if not _inside(target, allowed):
    return f'link to a file outside the data root ({target})'
  return None


def list_class_folder(input_base: str, class_name: str) -> List[Entry]:
  """An entry for every file in the class folder, nested folders' files included."""
  folder = os.path.join(input_base, class_name)
  allowed = ([os.path.realpath(input_base), os.path.realpath(folder)]
             if _is_local(input_base) else [])
  entries = []
  for name in _listdir(folder):
    path = os.path.join(folder, name)
    relative = f'{class_name}/{name}'
    printable = _printable(name)
    if printable is not None:
      entries.append(_skipped(f'{class_name}/{printable}', '', 'file name is not valid UTF-8',
                              counted=True))
      continue
    if layout.is_os_clutter(name):
      entries.append(_ignored(relative + ('/' if _isdir(path) else ''), path))
      continue
    problem = _link_problem(path, allowed)
    if problem:
      entries.append(_skipped(relative, path, problem, counted=True))
    elif _isdir(path):
      entries += [
          _skipped(file, file_path, 'in a folder nested inside a class folder (nested folders '
                   'are not searched)', counted=True)
          for file, file_path in _every_file_under(path, relative)]
    else:
      entry = classify_name(relative, path)
      entries.append({**entry, 'label': class_name} if entry['kind'] == 'image' else entry)
  return entries


def _walk(input_base: str) -> Iterator[Entry]:
  """An entry for every file below `input_base`, subfolders included (classify_name's kinds,
  clutter ignored, bad names and links skipped)."""
  allowed = [os.path.realpath(input_base)] if _is_local(input_base) else []
  walk = os.walk(input_base) if _is_local(input_base) else tf.io.gfile.walk(input_base)
  for directory, subfolders, files in walk:
    clutter = sorted(name for name in subfolders if layout.is_os_clutter(name))
    for name in clutter:
      yield _ignored(relative_path(os.path.join(directory, name), input_base) + '/',
                     os.path.join(directory, name))
    subfolders[:] = sorted(name for name in subfolders if name not in clutter)
    for name in sorted(files):
      path = os.path.join(directory, name)
      relative = relative_path(path, input_base)
      printable = _printable(name)
      if printable is not None:
        yield _skipped(relative_path(os.path.join(directory, printable), input_base),
                       '', 'file name is not valid UTF-8', counted=True)
      elif layout.is_os_clutter(name):
        yield _ignored(relative, path)
      elif _link_problem(path, allowed):
        yield _skipped(relative, path, _link_problem(path, allowed), counted=True)
      else:
        yield classify_name(relative, path)


def list_unlabelled_folder(input_base: str) -> List[Entry]:
  """An entry for every file below a folder of images to classify, subfolders included: images
  as in a class folder, lesion masks and what is not an image skipped, clutter ignored."""
  return [_skipped(entry['file'], entry['path'], 'a lesion mask (masks are not classified)',
                   counted=True) if entry['kind'] == 'mask' else entry
          for entry in _walk(input_base)]


def list_labelled_tree(input_base: str, labels: manifest.Manifest,
                       key: Optional[str]) -> List[Entry]:
  """An entry for every file below a data root whose labels are in a manifest, subfolders
  included: an image on a row gets the row's label and its patient's pseudonym
  (identifiers.MissingKey when a row names a patient and there is no key); an image on no row,
  or on rows the manifest refused, is skipped with the reason; masks beside their image are
  masks; a row naming a file that is not there is skipped as that row. The manifest itself, when
  it lies under the data root, is ignored."""
  if labels.has_patients and key is None:
    raise identifiers.MissingKey(identifiers.missing_key_message(f'the rows of {labels.name}'))
  entries, found = [], set()
  for entry in _walk(input_base):
    if entry.get('path') and os.path.abspath(entry['path']) == labels.path:
      entries.append({**_ignored(entry['file'], entry['path']), 'reason': 'the labels file'})
      continue
    if entry['kind'] == 'image':
      found.add(entry['file'])
      row = labels.rows.get(entry['file'])
      if row is None:
        entry = _skipped(entry['file'], entry['path'], labels.refused.get(
            entry['file'], f'on no row of {labels.name}'), counted=True)
      else:
        patient = manifest.patient_of(row)
        entry = {**entry, 'label': row.label,
                 'patient': identifiers.pseudonym(patient, key) if patient else None}
    entries.append(entry)
  for file, row in labels.rows.items():
    if file not in found:
      entries.append(_skipped(file, '', f'row {row.line} of {labels.name} names a file that is '
                              'not an image under the data root', counted=True))
  entries += [_skipped(file, '', reason, counted=True) for file, reason in labels.refused.items()
              if file not in found]
  return entries


def patient_of(content: bytes, entry: Entry, key: Optional[str]) -> Optional[str]:
  """The pseudonym of the image's patient: its manifest row's, else its DICOM header's, else
  None (identifiers.MissingKey when the header names a patient and there is no key)."""
  if entry.get('patient'):
    return entry['patient']
  return dicom_files.patient_pseudonym(content, key) if dicom_files.is_dicom(content) else None


def _size_and_mtime(path: str) -> Tuple[int, int]:
  if not path:
    return 0, 0
  if _is_local(path):
    try:
      stat = os.stat(path)
    except OSError:  # a dangling link
      stat = os.lstat(path)
    return stat.st_size, stat.st_mtime_ns // 1_000_000_000
  stat = tf.io.gfile.stat(path)
  return stat.length, stat.mtime_nsec // 1_000_000_000


def fingerprint_data_root(input_base: str) -> str:
  """Everything the listing sees under the data root, by name, size and modification time
  (to the second), so that TFX's cache reruns ImageExampleGen when any file changes: an image,
  a skipped file or an ignored one, nested folders and link targets included."""
  class_folders, entries = list_data_root(input_base)
  for class_name in class_folders:
    entries += list_class_folder(input_base, class_name)
  digest = hashlib.sha256()
  for entry in sorted(entries, key=lambda entry: entry['file']):
    size, mtime = _size_and_mtime(entry['path'])
    digest.update(f'{entry["file"]}\0{entry["kind"]}\0{size}\0{mtime}\n'.encode())
  return f'files:{len(entries)},sha256:{digest.hexdigest()}'


def png_crc_problem(content: bytes) -> Optional[str]:
  """The first PNG chunk whose stored CRC does not match its data, or None (also for non-PNGs
  and for a truncated last chunk, which the decoder reports)."""
  if not content.startswith(b'\x89PNG\r\n\x1a\n'):
    return None
  position = 8
  while position + 12 <= len(content):
    length, = struct.unpack('>I', content[position:position + 4])
    end = position + 12 + length
    if end > len(content):
      return None
    chunk = content[position + 4:position + 8 + length]
    stored, = struct.unpack('>I', content[end - 4:end])
    if zlib.crc32(chunk) & 0xffffffff != stored:
      name = chunk[:4].decode('latin-1')
      return (f'CRC error in the PNG {name} chunk at byte {position} (stored {stored:08x}, '
              f'computed {zlib.crc32(chunk) & 0xffffffff:08x})')
    if chunk[:4] == b'IEND':
      return None
    position = end
  return None


def check_image(content: bytes) -> Image.Image:
  """The image, fully decoded by Pillow, or UnusableFile with the precise reason."""
  if not content:
    raise UnusableFile('empty file (0 bytes)')
  if len(content) > layout.MAX_IMAGE_FILE_BYTES:
    raise UnusableFile(f'file too large ({len(content)} bytes; the limit is '
                       f'{layout.MAX_IMAGE_FILE_BYTES} bytes)')
  if dicom_files.is_dicom(content):
    return dicom_image(content)
  crc_problem = png_crc_problem(content)
  if crc_problem:
    raise UnusableFile(crc_problem)
  try:
    image = Image.open(io.BytesIO(content))
  except Image.DecompressionBombError as error:  # far beyond our own limit
    raise UnusableFile(f'too many pixels (Pillow: {error})') from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error):
    claimed = [name for signature, name in _SIGNATURES.items() if content.startswith(signature)]
    if claimed:
      raise UnusableFile(f'corrupt {claimed[0]} header (Pillow cannot read it)') from None
    raise UnusableFile('not an image: Pillow cannot identify the file\'s format') from None
  width, height = image.size
  if width * height > features.MAX_IMAGE_PIXELS or not width or not height:
    raise UnusableFile(f'too many pixels: the header says {width} × {height} (at most '
                       f'{features.MAX_IMAGE_PIXELS} pixels are decoded)')
  try:
    image.load()
  except OSError as error:
    if 'truncated' in str(error):
      raise UnusableFile(f'truncated {image.format} file ({error})') from None
    raise UnusableFile(f'corrupt {image.format} data ({error})') from None
  except Exception as error:  # pylint: disable=broad-except  # plugins raise many types
    raise UnusableFile(f'corrupt {image.format} data ({error.__class__.__name__}: '
                       f'{error})') from None
  return image


def dicom_image(content: bytes, frame: Optional[int] = None) -> Image.Image:
  """A DICOM file's ultrasound picture (inputs/dicom_files.py: `frame` of a clip, its middle one
  by default, cropped to the ultrasound region) as an RGB image whose format is 'DICOM' and whose
  `info['frames']` is the file's frame count, or UnusableFile."""
  try:
    picture = dicom_files.read_dicom(content, frame=frame, max_pixels=features.MAX_IMAGE_PIXELS)
  except dicom_files.UnusableDicom as error:
    raise UnusableFile(str(error)) from None
  image = Image.fromarray(picture.pixels)
  image.format = 'DICOM'
  image.info['frames'] = picture.frames
  return image


def frame_file(file: str, frame: int) -> str:
  """The name of a clip's frame as an example's file name: `IM0004#frame2` (from 1)."""
  return f'{file}#frame{frame + 1}'


def examples_of_file(file: str, content: bytes, image: Image.Image,
                     clip_frames: str) -> Iterator[Tuple[str, Optional[str], Image.Image]]:
  """(example's file name, the clip it is a frame of or None, image) of each example a file
  gives: the file itself, or under layout.EVERY_FRAME each frame of a DICOM clip, named by
  `frame_file`; UnusableFile for a frame that cannot be read."""
  frames = image.info.get('frames', 1) if image.format == 'DICOM' else 1
  if clip_frames != layout.EVERY_FRAME or frames < 2:
    yield file, None, image
    return
  for frame in range(frames):
    yield frame_file(file, frame), file, dicom_image(content, frame)


def rgb_pixels(image: Image.Image) -> np.ndarray:
  """uint8 [height, width, 3]: the pixels Pillow read, as every step must see them.

  Pillow's own RGB conversion clips 16-bit and 32-bit grey values at 255; these keep their
  top 8 bits instead, as TensorFlow's PNG decoder does. Alpha is dropped, not composited.
  """
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
    grey = (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
  if image.mode == 'F':
    grey = np.asarray(image).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
  return np.asarray(image.convert('RGB'))


def read_image(path: str) -> Tuple[bytes, Image.Image]:
  """(content, Pillow image) of an image file; UnusableFile saying why not (a file over the size
  limit is not read), or OSError."""
  size = tf.io.gfile.stat(path).length
  if size > layout.MAX_IMAGE_FILE_BYTES:
    raise UnusableFile(f'file too large ({size} bytes; the limit is '
                       f'{layout.MAX_IMAGE_FILE_BYTES} bytes)')
  with tf.io.gfile.GFile(path, 'rb') as handle:
    content = handle.read()
  if path.lower().endswith(layout.DICOM_EXTENSIONS) and not dicom_files.is_dicom(content):
    raise UnusableFile('not DICOM after all: no "DICM" marker at byte 128')
  return content, check_image(content)


def served_bytes(content: bytes) -> bytes:
  """What a served model is sent for a file: a DICOM file's picture as PNG (the bytes ExampleGen
  stores for it), any other file as it is. UnusableFile for a DICOM file without a picture."""
  if not dicom_files.is_dicom(content):
    return content
  return png_bytes(rgb_pixels(dicom_image(content)))


def png_bytes(pixels: np.ndarray) -> bytes:
  """A PNG of the pixels; grey when every pixel is (a third of the work and of the bytes, and
  decoded to RGB it gives the same pixels)."""
  if pixels.ndim == 3 and (pixels[..., 1:] == pixels[..., :1]).all():
    pixels = pixels[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='PNG')
  return buffer.getvalue()


def tensorflow_ready_bytes(content: bytes, image: Image.Image) -> Tuple[bytes, Optional[str]]:
  """(bytes to store, why they were re-encoded or None): the file's own bytes when TensorFlow
  decodes them to exactly the pixels Pillow read, else a PNG of Pillow's pixels."""
  pixels = rgb_pixels(image)
  if image.format not in _TENSORFLOW_FORMATS:
    return png_bytes(pixels), f'{image.format} content stored as PNG'
  try:
    decoded = image_decoding.decode_rgb(tf.constant(content)).numpy()
  except tf.errors.InvalidArgumentError as error:
    return png_bytes(pixels), (f'TensorFlow does not decode this {image.format} '
                               f'({image_decoding.refusal_message(error)}); stored as PNG')
  if decoded.shape != pixels.shape or not np.array_equal(decoded, pixels):
    return png_bytes(pixels), (f'TensorFlow decodes this {image.format} ({image.mode}) to other '
                               'pixels than Pillow; stored as PNG')
  return content, None


def merge_masks(mask_images: List[Image.Image], size: Tuple[int, int]) -> bytes:
  """One PNG marking every pixel that any of the masks marks (BUSI has up to three per image)."""
  merged = np.zeros((size[1], size[0]), dtype=np.uint8)
  for mask in mask_images:
    mask = mask.convert('L')
    if mask.size != size:
      mask = mask.resize(size, Image.NEAREST)
    merged = np.maximum(merged, np.where(np.asarray(mask) > 127, 255, 0).astype(np.uint8))
  return png_bytes(merged)


def _bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _float_feature(value: float) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def content_features(image: Image.Image) -> Dict[str, float]:
  """`features.CONTENT_KEYS` of an image: what drift and skew checks compare."""
  grey = rgb_pixels(image).mean(axis=2)
  return {features.MEAN_INTENSITY_KEY: float(grey.mean() / 255),
          features.CONTRAST_KEY: float(grey.std() / 255),
          features.DARK_FRACTION_KEY: float((grey < features.DARK_GREY_LEVEL).mean())}


def build_unlabelled_example(image_bytes: bytes, image: Image.Image,
                             relative: str) -> tf.train.Example:
  """The raw features of an image to classify: what `from_examples` reads, and its path."""
  width, height = image.size
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: _bytes_feature(image_bytes),
      features.FILENAME_KEY: _bytes_feature(relative.encode()),
      features.HEIGHT_KEY: _int_feature(height),
      features.WIDTH_KEY: _int_feature(width),
      **{key: _float_feature(value) for key, value in content_features(image).items()},
  }))


def build_example(image_bytes: bytes, image: Image.Image, label_name: str,
                  relative: str, mask_bytes: bytes, mask_count: int, image_hash: str,
                  duplicate_group: str) -> tf.train.Example:
  width, height = image.size
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: _bytes_feature(image_bytes),
      features.LABEL_KEY: _int_feature(features.LABEL_NAMES.index(label_name)),
      features.LABEL_NAME_KEY: _bytes_feature(label_name.encode()),
      features.FILENAME_KEY: _bytes_feature(relative.encode()),
      features.HEIGHT_KEY: _int_feature(height),
      features.WIDTH_KEY: _int_feature(width),
      features.MASK_KEY: _bytes_feature(mask_bytes),
      features.MASK_COUNT_KEY: _int_feature(mask_count),
      features.IMAGE_HASH_KEY: _bytes_feature(image_hash.encode()),
      features.DUPLICATE_GROUP_KEY: _bytes_feature(duplicate_group.encode()),
      **{key: _float_feature(value) for key, value in content_features(image).items()},
  }))
