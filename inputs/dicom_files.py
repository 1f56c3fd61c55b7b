"""DICOM ultrasound files, read into the pixels the PNG path would give.

A hospital's images come out of its PACS as DICOM: compressed or not, in grey, RGB, YBR or
palette colour, sometimes several frames of a cine clip, with the scanner's interface (text,
calipers, a logo) around the B-mode picture. `read_dicom` turns one file into an 8-bit RGB
picture of the ultrasound region, or says precisely why it cannot (`UnusableDicom`):

- recognised by content, the `DICM` marker at byte 128, whatever the file is called;
- refused, named: not DICOM after all, a DICOMDIR, no pixel data (a structured report, an
  encapsulated PDF), another modality than ultrasound, a transfer syntax no installed decoder
  reads (with the package that would), truncated or corrupt pixel data, too many pixels;
- decoded by pydicom with pylibjpeg's and GDCM's plugins: uncompressed, JPEG baseline, extended
  and lossless, JPEG-LS, JPEG 2000 and RLE;
- colour: YBR_FULL and YBR_FULL_422 to RGB, PALETTE COLOR through its lookup table, MONOCHROME1
  inverted, a VOI LUT or window applied where the header has one, more than 8 bits scaled to 8;
- a multi-frame file gives its middle frame (`frame=None`) or the frame asked for;
- cropped to the ultrasound region (the Sequence of Ultrasound Regions' largest tissue region)
  before anything else sees the pixels: the interface around it is where burned-in text lives.

The file's header never leaves this module: `DicomImage` carries pixels and the few technical
facts a reader is told (frames, the region, the transfer syntax), no identifier.
"""

import dataclasses
import io
from typing import Optional, Tuple

import numpy as np

from inputs import identifiers

DICOM_MARKER = b'DICM'
MARKER_OFFSET = 128
ULTRASOUND = 'US'
_DICOMDIR_CLASS = '1.2.840.10008.1.3.10'
_MODALITY_NAMES = {
    'MG': 'mammography', 'CT': 'computed tomography', 'MR': 'magnetic resonance',
    'CR': 'computed radiography', 'DX': 'digital radiography', 'NM': 'nuclear medicine',
    'PT': 'positron emission tomography', 'XA': 'X-ray angiography', 'OT': 'other',
    'SC': 'secondary capture', 'SR': 'structured report', 'DOC': 'document', 'OP': 'ophthalmic',
}
# What installs a decoder, by pydicom's plugin name.
_PLUGIN_PACKAGES = {'pylibjpeg': 'pylibjpeg with pylibjpeg-libjpeg, pylibjpeg-openjpeg and '
                                 'pylibjpeg-rle', 'gdcm': 'python-gdcm', 'pillow': 'Pillow'}
_TISSUE = 1  # RegionDataType: tissue
_TWO_DIMENSIONAL = 1  # RegionSpatialFormat: 2D


class UnusableDicom(Exception):
  """A DICOM file that gives no picture; the message says why."""


@dataclasses.dataclass
class DicomImage:
  pixels: np.ndarray  # uint8 [height, width, 3]
  frames: int  # frames in the file
  frame: int  # the frame read
  region: Optional[Tuple[int, int, int, int]]  # (x0, y0, x1, y1) cropped to, inclusive
  transfer_syntax: str


def is_dicom(content: bytes) -> bool:
  """Whether the bytes are a DICOM file (Part 10: a 128-byte preamble, then `DICM`)."""
  return content[MARKER_OFFSET:MARKER_OFFSET + 4] == DICOM_MARKER


def starts_as_dicom(path: str) -> bool:
  """Whether the file at `path` begins as a DICOM file (only its first 132 bytes are read)."""
  try:
    if '://' in path:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  # remote file systems
      with tf.io.gfile.GFile(path, 'rb') as handle:
        return is_dicom(handle.read(MARKER_OFFSET + 4))
    with open(path, 'rb') as handle:
      return is_dicom(handle.read(MARKER_OFFSET + 4))
  except Exception:  # pylint: disable=broad-except  # unreadable: not DICOM, said elsewhere
    return False


def _modality_words(modality: str) -> str:
  name = _MODALITY_NAMES.get(modality)
  return f'{modality} ({name})' if name else modality


def read_header(content: bytes):
  """The pydicom Dataset of the bytes, or UnusableDicom: not DICOM, a DICOMDIR, no pixel data,
  not ultrasound."""
  import pydicom  # pylint: disable=g-import-not-at-top  # only when a DICOM file turns up
  from pydicom.errors import InvalidDicomError  # pylint: disable=g-import-not-at-top
  if not is_dicom(content):
    raise UnusableDicom('not DICOM: no "DICM" marker at byte 128')
  try:
    dataset = pydicom.dcmread(io.BytesIO(content))
  except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as error:
    raise UnusableDicom(f'corrupt DICOM header ({error.__class__.__name__}: {error})') from None
  storage_class = str(dataset.file_meta.get('MediaStorageSOPClassUID', ''))
  if storage_class == _DICOMDIR_CLASS or 'DirectoryRecordSequence' in dataset:
    raise UnusableDicom('a DICOMDIR: an index of a DICOM media set, no image')
  if not any(name in dataset for name in ('PixelData', 'FloatPixelData',
                                          'DoubleFloatPixelData')):
    sop_class = dataset.get('SOPClassUID') or storage_class
    kind = pydicom.uid.UID(str(sop_class)).name if sop_class else 'unknown SOP class'
    raise UnusableDicom(f'no pixel data: {kind} (a report or a document, not an image)')
  modality = str(dataset.get('Modality', '') or '')
  if modality != ULTRASOUND:
    raise UnusableDicom(f'modality {_modality_words(modality)}, not ultrasound (US)'
                        if modality else 'no modality in the header; only ultrasound (US) '
                        'is read')
  return dataset


def _check_decoder(dataset) -> str:
  """The transfer syntax's name; UnusableDicom when no installed decoder reads it."""
  from pydicom.pixels import get_decoder  # pylint: disable=g-import-not-at-top
  syntax = dataset.file_meta.TransferSyntaxUID
  try:
    decoder = get_decoder(syntax)
  except NotImplementedError:
    raise UnusableDicom(f'transfer syntax {syntax.name} ({syntax}): no decoder exists for it in '
                        'pydicom') from None
  if not decoder.is_available:
    wanted = sorted({_PLUGIN_PACKAGES.get(name, name) for name in decoder.missing_dependencies}
                    or {'python-gdcm'})
    raise UnusableDicom(f'transfer syntax {syntax.name} ({syntax}): no installed decoder reads '
                        f'it ({" or ".join(wanted)} would)')
  return syntax.name


def _eight_bits(values: np.ndarray, low: float, high: float) -> np.ndarray:
  scaled = (values.astype(np.float64) - low) * (255.0 / max(high - low, 1e-9))
  return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _grey_to_eight_bits(values: np.ndarray, dataset) -> np.ndarray:
  """A monochrome frame as uint8: its VOI LUT or window where the header has one, else its
  stored range (8 bits as they are; more bits keep their top 8, as the PNG path does)."""
  from pydicom.pixels import apply_voi_lut  # pylint: disable=g-import-not-at-top
  bits = int(dataset.get('BitsStored', 8))
  signed = int(dataset.get('PixelRepresentation', 0)) == 1
  has_voi = 'VOILUTSequence' in dataset or 'WindowCenter' in dataset
  if has_voi:
    values = apply_voi_lut(values, dataset)
  if values.dtype == np.uint8 and not has_voi:
    grey = values
  elif has_voi:
    # apply_voi_lut maps into the stored range (or the LUT's own output range).
    low, high = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1))
    if 'VOILUTSequence' in dataset and 'WindowCenter' not in dataset:
      lut_bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
      low, high = 0, (1 << lut_bits) - 1
    grey = _eight_bits(values, low, high)
  elif signed:
    grey = _eight_bits(values, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
  else:
    grey = (values.astype(np.uint32) >> max(bits - 8, 0)).clip(0, 255).astype(np.uint8)
  if dataset.PhotometricInterpretation == 'MONOCHROME1':  # 0 is white
    grey = 255 - grey
  return np.repeat(grey[..., None], 3, axis=2)


def _colour_to_eight_bits(values: np.ndarray, dataset) -> np.ndarray:
  from pydicom.pixels import apply_color_lut  # pylint: disable=g-import-not-at-top
  if dataset.PhotometricInterpretation == 'PALETTE COLOR':
    values = apply_color_lut(values, dataset)
    lut_bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    return (values.astype(np.uint32) >> max(lut_bits - 8, 0)).clip(0, 255).astype(np.uint8)
  bits = int(dataset.get('BitsStored', 8))
  if values.dtype == np.uint8:
    return values
  return (values.astype(np.uint32) >> max(bits - 8, 0)).clip(0, 255).astype(np.uint8)


def ultrasound_region(dataset, height: int,
                      width: int) -> Optional[Tuple[int, int, int, int]]:
  """(x0, y0, x1, y1), inclusive, of the largest 2D tissue region of the Sequence of Ultrasound
  Regions (any 2D region when none is tissue), clipped to the image; None without one."""
  regions = []
  for item in dataset.get('SequenceOfUltrasoundRegions', []) or []:
    try:
      box = (int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
             int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1))
    except (AttributeError, TypeError, ValueError):
      continue
    box = (max(box[0], 0), max(box[1], 0), min(box[2], width - 1), min(box[3], height - 1))
    if box[2] < box[0] or box[3] < box[1]:
      continue
    spatial = int(item.get('RegionSpatialFormat', _TWO_DIMENSIONAL) or 0)
    tissue = int(item.get('RegionDataType', _TISSUE) or 0) == _TISSUE
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    if spatial == _TWO_DIMENSIONAL:
      regions.append((tissue, area, box))
  if not regions:
    return None
  return max(regions)[2]


def patient_pseudonym(content: bytes, key: Optional[str]) -> Optional[str]:
  """The keyed hash of the header's PatientID (inputs/identifiers.py), None for a file that names
  no patient; identifiers.MissingKey when it names one and there is no key. The ID itself never
  leaves this function."""
  import pydicom  # pylint: disable=g-import-not-at-top  # only when a DICOM file turns up
  try:
    header = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True,
                             specific_tags=['PatientID'])
  except Exception:  # pylint: disable=broad-except  # an unreadable header is refused elsewhere
    return None
  patient = str(header.get('PatientID', '') or '').strip()
  if not patient:
    return None
  if key is None:
    raise identifiers.MissingKey(identifiers.missing_key_message('DICOM headers (PatientID)'))
  return identifiers.pseudonym(patient, key)


def read_dicom(content: bytes, frame: Optional[int] = None,
               max_pixels: Optional[int] = None) -> DicomImage:
  """The picture a DICOM ultrasound file holds (module docstring): `frame` of a multi-frame
  file, its middle frame when None. UnusableDicom says why there is none."""
  dataset = read_header(content)
  syntax = _check_decoder(dataset)
  rows, columns = int(dataset.get('Rows', 0) or 0), int(dataset.get('Columns', 0) or 0)
  if not rows or not columns:
    raise UnusableDicom('no image size in the header (Rows, Columns)')
  if max_pixels is not None and rows * columns > max_pixels:
    raise UnusableDicom(f'too many pixels: the header says {columns} × {rows} (at most '
                        f'{max_pixels} pixels are decoded)')
  frames = int(dataset.get('NumberOfFrames', 1) or 1)
  index = frames // 2 if frame is None else frame
  if not 0 <= index < frames:
    raise UnusableDicom(f'no frame {index}: the file has {frames}')
  try:
    dataset.pixel_array_options(index=index if frames > 1 else None)
    values = dataset.pixel_array
  except Exception as error:  # pylint: disable=broad-except  # decoders raise many types
    message = ' '.join(line.strip() for line in str(error).splitlines()) or (
        error.__class__.__name__)
    raise UnusableDicom(f'corrupt or truncated pixel data ({syntax}: {message})') from None
  photometric = str(dataset.get('PhotometricInterpretation', ''))
  if values.ndim == 2 and photometric == 'PALETTE COLOR':
    pixels = _colour_to_eight_bits(values, dataset)
  elif values.ndim == 2:
    pixels = _grey_to_eight_bits(values, dataset)
  elif values.ndim == 3 and values.shape[-1] == 3:
    pixels = _colour_to_eight_bits(values, dataset)
  else:
    raise UnusableDicom(f'pixel data of shape {values.shape} with photometric interpretation '
                        f'{photometric} is not one picture')
  region = ultrasound_region(dataset, *pixels.shape[:2])
  if region is not None:
    x0, y0, x1, y1 = region
    pixels = pixels[y0:y1 + 1, x0:x1 + 1]
  return DicomImage(np.ascontiguousarray(pixels), frames, index, region, syntax)
