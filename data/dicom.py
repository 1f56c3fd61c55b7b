"""Synthetic DICOM ultrasound files, written from pictures, as a hospital's PACS would export them.

`write_ultrasound` writes one picture (uint8 RGB or grey) as a DICOM file in any of the transfer
syntaxes and photometric interpretations ultrasound uses (`TRANSFER_SYNTAXES`,
`PHOTOMETRICS`), optionally as a cine clip (frames around the picture, which is the middle one),
inside a scanner's interface (a border with burned-in text) described by a Sequence of
Ultrasound Regions, and with the patient's identifiers in the header. Tests and benchmarks make
their DICOM data with it; nothing is downloaded.

Encoders: pydicom's for RLE, pylibjpeg's for JPEG 2000, Pillow's for JPEG baseline (as a
scanner writes it, YBR_FULL_422), GDCM's for JPEG extended, JPEG lossless and JPEG-LS.
"""

import io
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

EXPLICIT = 'explicit'
IMPLICIT = 'implicit'
JPEG_BASELINE = 'jpeg-baseline'
JPEG_EXTENDED = 'jpeg-extended'
JPEG_LOSSLESS = 'jpeg-lossless'
JPEG_LS = 'jpeg-ls'
JPEG_2000 = 'jpeg-2000'
JPEG_2000_LOSSLESS = 'jpeg-2000-lossless'
RLE = 'rle'
TRANSFER_SYNTAXES = (EXPLICIT, IMPLICIT, JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LS,
                     JPEG_2000, JPEG_2000_LOSSLESS, RLE)
# Which give back exactly the pixels written.
LOSSLESS = (EXPLICIT, IMPLICIT, JPEG_LOSSLESS, JPEG_LS, JPEG_2000_LOSSLESS, RLE)
PHOTOMETRICS = ('MONOCHROME2', 'MONOCHROME1', 'RGB', 'YBR_FULL', 'YBR_FULL_422', 'PALETTE COLOR')

# Header fields that identify a patient, a study or a place, with distinctive values a test can
# search every output for.
IDENTIFIERS: Dict[str, str] = {
    'PatientName': 'Zyxwvut^Qorvath', 'PatientID': 'PID-93C7A1', 'PatientBirthDate': '19471203',
    'OtherPatientIDs': 'OPID-5E2F88', 'PatientAddress': '17 Quillfeather Lane',
    'AccessionNumber': 'ACC-7734Q9', 'StudyID': 'STUDY-4D1B', 'InstitutionName':
    'Vantorr Regional Hospital', 'InstitutionAddress': '2 Brindlemoor Road',
    'ReferringPhysicianName': 'Oxtrell^Maud', 'OperatorsName': 'Pellinore^Jax',
    'StationName': 'USROOM-K7',
}


def identifier_tokens() -> List[str]:
  """The distinctive parts of `IDENTIFIERS` to search an output for (a person name's parts
  apart, as a log or a page might write them)."""
  return sorted({part for value in IDENTIFIERS.values()
                 for part in value.replace('^', ' ').split() if len(part) >= 6})


def _uids():
  from pydicom import uid  # pylint: disable=g-import-not-at-top
  return {EXPLICIT: uid.ExplicitVRLittleEndian, IMPLICIT: uid.ImplicitVRLittleEndian,
          JPEG_BASELINE: uid.JPEGBaseline8Bit, JPEG_EXTENDED: uid.JPEGExtended12Bit,
          JPEG_LOSSLESS: uid.JPEGLosslessSV1, JPEG_LS: uid.JPEGLSLossless,
          JPEG_2000: uid.JPEG2000, JPEG_2000_LOSSLESS: uid.JPEG2000Lossless, RLE: uid.RLELossless}


def in_scanner_interface(picture: np.ndarray, margin: int = 24) -> Tuple[np.ndarray, Tuple]:
  """The picture inside a scanner's screen: a dark border with burned-in text and a bright
  logo around it. Returns (screen, the picture's (x0, y0, x1, y1), inclusive)."""
  height, width = picture.shape[:2]
  shape = (height + 2 * margin, width + 2 * margin) + picture.shape[2:]
  screen = np.full(shape, 12, dtype=np.uint8)
  screen[margin:margin + height, margin:margin + width] = picture
  canvas = Image.fromarray(screen)
  draw = ImageDraw.Draw(canvas)
  white = (255, 255, 255) if picture.ndim == 3 else 255
  draw.text((2, 2), 'ZYXWVUT QORVATH 03/12/1947', fill=white)
  draw.rectangle((shape[1] - 14, shape[0] - 14, shape[1] - 3, shape[0] - 3), fill=white)
  return np.asarray(canvas), (margin, margin, margin + width - 1, margin + height - 1)


def _palette(picture: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(indices, 256 × 3 uint8 palette) of an RGB picture, its colours quantised to 256."""
  quantised = Image.fromarray(picture).quantize(256, dither=Image.Dither.NONE)
  palette = np.zeros((256, 3), dtype=np.uint8)
  used = np.array(quantised.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
  palette[:len(used)] = used
  return np.asarray(quantised), palette


def _jpeg_frame(frame: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  # 4:2:2, as DICOM's YBR_FULL_422 for JPEG baseline says.
  Image.fromarray(frame).save(buffer, format='JPEG', quality=95, subsampling=1)
  return buffer.getvalue()


def _gdcm_transcode(content: bytes, syntax: str) -> bytes:
  """The file re-encoded by GDCM (JPEG extended, JPEG lossless, JPEG-LS)."""
  import gdcm  # pylint: disable=g-import-not-at-top
  targets = {JPEG_EXTENDED: gdcm.TransferSyntax.JPEGExtendedProcess2_4,
             JPEG_LOSSLESS: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
             JPEG_LS: gdcm.TransferSyntax.JPEGLSLossless}
  with tempfile.TemporaryDirectory() as folder:
    source, target = os.path.join(folder, 'in.dcm'), os.path.join(folder, 'out.dcm')
    with open(source, 'wb') as handle:
      handle.write(content)
    reader = gdcm.ImageReader()
    reader.SetFileName(source)
    if not reader.Read():
      raise RuntimeError('GDCM cannot read the file it is to encode')
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(targets[syntax]))
    change.SetInput(reader.GetImage())
    if not change.Change():
      raise RuntimeError(f'GDCM cannot encode {syntax}')
    writer = gdcm.ImageWriter()
    writer.SetFileName(target)
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
      raise RuntimeError(f'GDCM cannot write {syntax}')
    with open(target, 'rb') as handle:
      return handle.read()


def ultrasound_bytes(picture: np.ndarray, transfer_syntax: str = EXPLICIT,
                     photometric: Optional[str] = None, frames: int = 1,
                     region: Optional[Tuple[int, int, int, int]] = None,
                     identifiers: Optional[Dict[str, str]] = None, bits_stored: int = 8,
                     window: Optional[Tuple[float, float]] = None, modality: str = 'US',
                     sop_class: Optional[str] = None) -> bytes:
  """A DICOM file of `picture` (uint8, [h, w, 3] or [h, w]); see the module docstring.

  `photometric` defaults to MONOCHROME2 for grey and RGB for colour (YBR_FULL_422 for JPEG
  baseline colour); with `frames` > 1 the picture is the middle frame of a clip whose other
  frames are it, shifted; `region` (x0, y0, x1, y1) is recorded as the ultrasound region;
  `bits_stored` 12 stores grey × 16 (with `window` (center, width) as its VOI window)."""
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
  from pydicom.encaps import encapsulate  # pylint: disable=g-import-not-at-top
  from pydicom.pixels import convert_color_space  # pylint: disable=g-import-not-at-top
  from pydicom.uid import UltrasoundImageStorage, UltrasoundMultiFrameImageStorage  # pylint: disable=g-import-not-at-top

  grey = picture.ndim == 2
  photometric = photometric or ('MONOCHROME2' if grey else (
      'YBR_FULL_422' if transfer_syntax == JPEG_BASELINE else 'RGB'))
  clip = [np.roll(picture, shift, axis=1) for shift in range(-(frames // 2), frames - frames // 2)]
  syntaxes = _uids()
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = sop_class or (
      UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage)
  meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
  meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
  dataset = Dataset()
  dataset.file_meta = meta
  dataset.SOPClassUID = meta.MediaStorageSOPClassUID
  dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  dataset.StudyInstanceUID = pydicom.uid.generate_uid()
  dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
  dataset.Modality = modality
  for name, value in (identifiers or {}).items():
    setattr(dataset, name, value)
  dataset.Rows, dataset.Columns = picture.shape[:2]
  dataset.BitsAllocated = 8 if bits_stored <= 8 else 16
  dataset.BitsStored = bits_stored
  dataset.HighBit = bits_stored - 1
  dataset.PixelRepresentation = 0
  if frames > 1:
    dataset.NumberOfFrames = frames
  if photometric in ('MONOCHROME2', 'MONOCHROME1'):
    stored = [frame if grey else np.asarray(Image.fromarray(frame).convert('L')) for frame in clip]
    if photometric == 'MONOCHROME1':
      stored = [255 - frame for frame in stored]
    if bits_stored > 8:
      stored = [frame.astype(np.uint16) << (bits_stored - 8) for frame in stored]
    dataset.SamplesPerPixel = 1
    if window is not None:
      dataset.WindowCenter, dataset.WindowWidth = window
  elif photometric == 'PALETTE COLOR':
    indexed = [_palette(frame if not grey else np.repeat(frame[..., None], 3, axis=2))
               for frame in clip]
    palette = indexed[len(indexed) // 2][1]
    stored = [indices for indices, _ in indexed]
    dataset.SamplesPerPixel = 1
    for channel, name in enumerate(('Red', 'Green', 'Blue')):
      setattr(dataset, f'{name}PaletteColorLookupTableDescriptor', [256, 0, 16])
      setattr(dataset, f'{name}PaletteColorLookupTableData',
              (palette[:, channel].astype('<u2') * 257).tobytes())
  else:
    rgb = [frame if not grey else np.repeat(frame[..., None], 3, axis=2) for frame in clip]
    stored = rgb if photometric == 'RGB' or transfer_syntax == JPEG_BASELINE else [
        convert_color_space(frame, 'RGB', 'YBR_FULL') for frame in rgb]
    if bits_stored > 8:
      stored = [frame.astype(np.uint16) << (bits_stored - 8) for frame in stored]
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
  dataset.PhotometricInterpretation = photometric

  if transfer_syntax == JPEG_BASELINE:
    if photometric not in ('YBR_FULL_422', 'MONOCHROME2'):
      raise ValueError('JPEG baseline is written as YBR_FULL_422 or MONOCHROME2')
    meta.TransferSyntaxUID = syntaxes[JPEG_BASELINE]
    dataset.PixelData = encapsulate([_jpeg_frame(frame) for frame in stored])
    dataset['PixelData'].VR = 'OB'
    dataset['PixelData'].is_undefined_length = True
    if dataset.SamplesPerPixel == 3:
      dataset.PlanarConfiguration = 0
  else:
    dataset.PixelData = b''.join(np.ascontiguousarray(frame).astype(
        '<u2' if bits_stored > 8 else np.uint8).tobytes() for frame in stored)
    if transfer_syntax == IMPLICIT:
      meta.TransferSyntaxUID = syntaxes[IMPLICIT]
    elif transfer_syntax in (RLE, JPEG_2000_LOSSLESS):
      dataset.compress(syntaxes[transfer_syntax])
    elif transfer_syntax == JPEG_2000:
      dataset.compress(syntaxes[transfer_syntax], j2k_psnr=[45])  # lossy, nearly invisibly
  content = _file_bytes(dataset)
  if transfer_syntax in (JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LS):
    content = _gdcm_transcode(content, transfer_syntax)
  if region is not None:
    # Added after GDCM's encoding, whose reader stops at pydicom's region sequence.
    dataset = pydicom.dcmread(io.BytesIO(content))
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
    (item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1,
     item.RegionLocationMaxY1) = region
    dataset.SequenceOfUltrasoundRegions = [item]
    content = _file_bytes(dataset)
  return content


def _file_bytes(dataset) -> bytes:
  buffer = io.BytesIO()
  dataset.save_as(buffer, enforce_file_format=True)
  return buffer.getvalue()


def write_ultrasound(path: str, picture: np.ndarray, **options) -> str:
  """Writes `ultrasound_bytes(picture, **options)` to `path`; returns it."""
  with open(path, 'wb') as handle:
    handle.write(ultrasound_bytes(picture, **options))
  return path


def every_variant(picture: np.ndarray) -> List[Tuple[str, bytes]]:
  """(name, DICOM bytes) of the picture in every transfer syntax and photometric
  interpretation `ultrasound_bytes` writes that a scanner would: what the tests read back."""
  found = []
  for syntax in TRANSFER_SYNTAXES:
    photometrics: Sequence[str] = {
        JPEG_BASELINE: ('YBR_FULL_422', 'MONOCHROME2'),
        JPEG_EXTENDED: ('MONOCHROME2',),
        JPEG_LS: ('MONOCHROME2', 'RGB'),
        JPEG_LOSSLESS: ('MONOCHROME2', 'RGB'),
        JPEG_2000: ('MONOCHROME2', 'RGB'),
        JPEG_2000_LOSSLESS: ('MONOCHROME2', 'RGB'),
    }.get(syntax, ('MONOCHROME2', 'MONOCHROME1', 'RGB', 'YBR_FULL', 'PALETTE COLOR'))
    for photometric in photometrics:
      found.append((f'{syntax} {photometric}', ultrasound_bytes(
          picture, transfer_syntax=syntax, photometric=photometric)))
  # More than 8 bits, with a VOI window over the whole stored range.
  found.append(('explicit MONOCHROME2 12-bit windowed', ultrasound_bytes(
      picture, photometric='MONOCHROME2', bits_stored=12, window=(2047.5, 4096))))
  return found


LABELS_FILE = 'labels.csv'
EXPORT_SYNTAXES = (EXPLICIT, RLE, JPEG_LS, JPEG_2000_LOSSLESS, JPEG_LOSSLESS, IMPLICIT,
                   JPEG_BASELINE)


def patient_identifiers(patient: int) -> Dict[str, str]:
  """`IDENTIFIERS` of patient number `patient`: every planted value, the ID made its own."""
  return {**IDENTIFIERS, 'PatientID': f'{IDENTIFIERS["PatientID"]}-{patient}'}


def write_hospital_export(root: str, source: str, patients: int = 6,
                          clip_every: int = 5) -> Dict[str, Tuple[str, int]]:
  """A hospital's export of `source`'s class folders (the synthetic PNG layout) under `root`:
  DICOM files without an extension in `P<patient>/ST1/IM<n>` folders (neutral names: a folder
  named after a patient would carry the identifier into every path), the patients dealt round
  the images so that each has several images and several labels, transfer syntaxes in turn
  (`EXPORT_SYNTAXES`, lossless but JPEG baseline), every `clip_every`-th file a cine clip inside
  the scanner's interface, every identifier of `patient_identifiers` in the headers, and a
  manifest `labels.csv` (file, label) at the top instead of class folders.

  Returns {file relative to root: (label, patient number)}."""
  names = sorted((label, name) for label in sorted(os.listdir(source))
                 if os.path.isdir(os.path.join(source, label))
                 for name in os.listdir(os.path.join(source, label))
                 if name.endswith('.png') and '_mask' not in name)
  written = {}
  for index, (label, name) in enumerate(names):
    patient = index % patients
    with Image.open(os.path.join(source, label, name)) as image:
      picture = np.asarray(image.convert('RGB'))
    folder = os.path.join(root, f'P{patient:02d}', 'ST1')
    os.makedirs(folder, exist_ok=True)
    file = f'P{patient:02d}/ST1/IM{index:04d}'
    options = dict(transfer_syntax=EXPORT_SYNTAXES[index % len(EXPORT_SYNTAXES)],
                   identifiers=patient_identifiers(patient))
    if index % clip_every == clip_every - 1:
      picture, region = in_scanner_interface(picture)
      options.update(frames=3, region=region)
    write_ultrasound(os.path.join(root, file), picture, **options)
    written[file] = (label, patient)
  with open(os.path.join(root, LABELS_FILE), 'w', encoding='utf-8') as handle:
    handle.write('file,label\n')
    handle.writelines(f'{file},{label}\n' for file, (label, _) in sorted(written.items()))
  return written
