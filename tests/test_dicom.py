"""DICOM ultrasound files (inputs/dicom_files.py): every transfer syntax and photometric
interpretation a scanner writes gives the pixels of the same picture saved as PNG; cine clips give
their middle frame; the scanner's interface is cropped away; what is not an ultrasound picture is
refused with its reason. The files are written by data/dicom.py from a synthetic image."""

import gzip
import io
import json
import os
import pathlib
import re
import subprocess

import numpy as np
import pydicom
import pydicom.data
import pytest
import tensorflow as tf
from PIL import Image

from components import contracts
from components.image_example_gen import component
from data import dicom, synthetic
from inputs import dicom_files, identifiers, image_files
from models import features, image_decoding

# Lossy transfer syntaxes give back nearly the picture written.
LOSSY_MAX_DIFFERENCE, LOSSY_MEAN_DIFFERENCE = 8, 2.0


@pytest.fixture(scope='module')
def picture(tmp_path_factory):
  """A synthetic malignant image, uint8 RGB, as ExampleGen would read its PNG."""
  folder = tmp_path_factory.mktemp('picture')
  synthetic.generate_dataset(str(folder), images_per_class=1, image_size=64, seed=3)
  content = (folder / 'malignant' / 'malignant (1).png').read_bytes()
  return image_files.rgb_pixels(image_files.check_image(content))


def grey_of(picture):
  return np.repeat(np.asarray(Image.fromarray(picture).convert('L'))[..., None], 3, axis=2)


@pytest.mark.quick
def test_every_transfer_syntax_and_colour_space_gives_the_pictures_pixels(picture):
  variants = dicom.every_variant(picture)
  syntaxes = {name.split()[0] for name, _ in variants}
  assert syntaxes == set(dicom.TRANSFER_SYNTAXES)
  for name, content in variants:
    assert dicom_files.is_dicom(content), name
    read = dicom_files.read_dicom(content)
    expected = grey_of(picture) if 'MONOCHROME' in name else picture
    assert read.pixels.dtype == np.uint8 and read.pixels.shape == expected.shape, name
    difference = np.abs(read.pixels.astype(int) - expected.astype(int))
    if name.split()[0] in dicom.LOSSLESS:
      assert difference.max() == 0, name
    else:
      assert difference.max() <= LOSSY_MAX_DIFFERENCE, name
      assert difference.mean() <= LOSSY_MEAN_DIFFERENCE, name
    assert (read.frames, read.frame, read.region) == (1, 0, None), name


@pytest.mark.quick
def test_a_cine_clip_gives_its_middle_frame_or_the_one_asked_for(picture):
  content = dicom.ultrasound_bytes(picture, transfer_syntax=dicom.RLE, frames=5)
  middle = dicom_files.read_dicom(content)
  assert (middle.frames, middle.frame) == (5, 2)
  assert np.array_equal(middle.pixels, picture)
  first = dicom_files.read_dicom(content, frame=0)
  assert np.array_equal(first.pixels, np.roll(picture, -2, axis=1))
  with pytest.raises(dicom_files.UnusableDicom, match='no frame 5: the file has 5'):
    dicom_files.read_dicom(content, frame=5)


@pytest.mark.quick
def test_the_scanners_interface_is_cropped_to_the_ultrasound_region(picture):
  screen, region = dicom.in_scanner_interface(picture)
  assert screen.shape[0] > picture.shape[0]
  read = dicom_files.read_dicom(dicom.ultrasound_bytes(screen, region=region))
  assert read.region == region
  assert np.array_equal(read.pixels, picture)
  # Without the region sequence the whole screen, burned-in text and all, is the picture.
  whole = dicom_files.read_dicom(dicom.ultrasound_bytes(screen))
  assert whole.region is None and whole.pixels.shape == screen.shape


@pytest.mark.quick
@pytest.mark.parametrize('name, shape, frames, region', [
    # A 30-frame JPEG baseline YBR_FULL_422 echo clip; its region, declared for a larger
    # acquisition than the stored frames, clipped to them.
    ('examples_ybr_color.dcm', (209, 236, 3), 30, (84, 31, 319, 239)),
    ('examples_palette.dcm', (290, 680, 3), 1, (120, 60, 799, 349)),  # two regions: the tissue one
    ('examples_jpeg2k.dcm', (480, 640, 3), 1, None),  # JPEG 2000, YBR_RCT
    ('examples_rgb_color.dcm', (240, 320, 3), 1, None),
    ('ExplVR_BigEnd.dcm', (60, 80, 3), 1, None),  # explicit VR big endian
])
def test_the_scanner_files_pydicom_ships_give_their_pictures(name, shape, frames, region):
  """Real ultrasound files from scanners' own encoders, shipped with the pinned pydicom."""
  content = pathlib.Path(pydicom.data.get_testdata_file(name)).read_bytes()
  picture = dicom_files.read_dicom(content)
  assert (picture.pixels.shape, picture.frames, picture.frame, picture.region) == (
      shape, frames, frames // 2, region)
  assert picture.pixels.dtype == np.uint8 and 5 < picture.pixels.mean() < 200
  # What ImageExampleGen stores: the picture's PNG, decoded by Transform to the same pixels.
  image = image_files.check_image(content)
  stored, _ = image_files.tensorflow_ready_bytes(content, image)
  assert np.array_equal(image_decoding.decode_rgb(tf.constant(stored)).numpy(), picture.pixels)


def dataset_of(content):
  return pydicom.dcmread(io.BytesIO(content))


def bytes_of(dataset):
  buffer = io.BytesIO()
  dataset.save_as(buffer, enforce_file_format=True)
  return buffer.getvalue()


@pytest.mark.quick
def test_what_is_not_an_ultrasound_picture_is_refused_with_its_reason(picture):
  good = dicom.ultrasound_bytes(picture)

  def refusal(content):
    with pytest.raises(dicom_files.UnusableDicom) as raised:
      dicom_files.read_dicom(content)
    return str(raised.value)

  assert refusal(b'\0' * 200) == 'not DICOM: no "DICM" marker at byte 128'
  mammogram = dataset_of(good)
  mammogram.Modality = 'MG'
  assert refusal(bytes_of(mammogram)) == 'modality MG (mammography), not ultrasound (US)'
  report = dataset_of(good)
  del report.PixelData
  report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
  assert refusal(bytes_of(report)) == ('no pixel data: Basic Text SR Storage (a report or a '
                                       'document, not an image)')
  directory = dataset_of(good)  # a media set's index: directory records, no pixels
  directory.SOPClassUID = directory.file_meta.MediaStorageSOPClassUID = (
      pydicom.uid.MediaStorageDirectoryStorage)
  del directory.PixelData
  directory.DirectoryRecordSequence = []
  assert refusal(bytes_of(directory)) == 'a DICOMDIR: an index of a DICOM media set, no image'
  assert refusal(good[:-500]).startswith(
      'corrupt or truncated pixel data (Explicit VR Little Endian: ')
  video = dataset_of(dicom.ultrasound_bytes(picture, transfer_syntax=dicom.JPEG_BASELINE))
  video.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # a cine loop as MPEG-2 video
  assert refusal(bytes_of(video)).startswith(
      'transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100): no decoder')
  huge = dataset_of(good)
  with pytest.raises(dicom_files.UnusableDicom, match='too many pixels: the header says 64 × 64'):
    dicom_files.read_dicom(bytes_of(huge), max_pixels=100)


def identifiers_in(data: bytes):
  return [token for token in dicom.identifier_tokens() if token.encode() in data]


def write_dicom_root(root, source):
  """A data root of DICOM exports made from `source`'s PNGs: several transfer syntaxes, names
  with and without an extension, a clip inside a scanner's interface; and three files that give
  no picture. Returns {file under the root: the source PNG's pixels}."""
  pictures = {}
  syntaxes = [dicom.EXPLICIT, dicom.RLE, dicom.JPEG_LS, dicom.JPEG_2000_LOSSLESS,
              dicom.JPEG_LOSSLESS, dicom.IMPLICIT]
  for label in ('benign', 'malignant', 'normal'):
    (root / label).mkdir(parents=True)
    for index, png in enumerate(sorted((source / label).glob(f'{label} (*).png'))):
      pixels = image_files.rgb_pixels(image_files.check_image(png.read_bytes()))
      name = (f'IM{index:04d}' if index % 3 == 0 else f'{png.stem}.DCM' if index % 3 == 1
              else f'{png.stem}.dcm')
      syntax = syntaxes[(index + len(label)) % len(syntaxes)]
      if index == 2:  # a cine clip inside the scanner's screen
        screen, region = dicom.in_scanner_interface(pixels)
        dicom.write_ultrasound(str(root / label / name), screen, transfer_syntax=syntax,
                               frames=3, region=region, identifiers=dicom.IDENTIFIERS)
      else:
        dicom.write_ultrasound(str(root / label / name), pixels, transfer_syntax=syntax,
                               identifiers=dicom.IDENTIFIERS)
      pictures[f'{label}/{name}'] = pixels
  picture = next(iter(pictures.values()))
  (root / 'benign' / 'fake.dcm').write_bytes(b'not DICOM at all' * 20)
  dicom.write_ultrasound(str(root / 'benign' / 'mammogram.dcm'), picture, modality='MG',
                         identifiers=dicom.IDENTIFIERS)
  report = dataset_of(dicom.ultrasound_bytes(picture))
  del report.PixelData
  report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
  (root / 'normal' / 'RPT0001').write_bytes(bytes_of(report))
  return pictures


def test_image_example_gen_reads_a_dicom_export_as_the_same_pictures(tmp_path, monkeypatch):
  source = tmp_path / 'png'
  synthetic.generate_dataset(str(source), images_per_class=6, image_size=64, seed=4)
  root = tmp_path / 'dicom'
  pictures = write_dicom_root(root, source)
  # The headers name a patient: without a key to pseudonymise the ID, the run stops.
  monkeypatch.delenv(identifiers.KEY_VARIABLE, raising=False)
  with pytest.raises(identifiers.MissingKey, match=re.escape(
      'DICOM headers (PatientID) name patients, and no identifier key was given')):
    component.run_executor_directly(str(root), str(tmp_path / 'refused'),
                                    max_unreadable_fraction=0.5)
  monkeypatch.setenv(identifiers.KEY_VARIABLE, 'a key of more than sixteen characters')
  examples = component.run_executor_directly(str(root), str(tmp_path / 'out'),
                                             max_unreadable_fraction=0.5)
  written = {}
  for split in (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT, contracts.EXCLUDED_SPLIT):
    files = tf.io.gfile.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      name = example.features.feature[features.FILENAME_KEY].bytes_list.value[0].decode()
      written[name] = example
  assert set(written) == set(pictures)
  # The headers' identifiers stay in the reader: not in any example, property or file written.
  assert identifiers_in((root / 'benign' / 'IM0000').read_bytes())  # they were planted
  assert not [name for name, example in written.items()
              if identifiers_in(example.SerializeToString())]
  assert not identifiers_in(json.dumps(
      {name: examples.get_custom_property(name) for name in examples.mlmd_artifact.custom_properties},
      default=str).encode())
  for folder, _, names in os.walk(tmp_path / 'out'):
    for name in names:
      data = (pathlib.Path(folder) / name).read_bytes()
      assert not identifiers_in(gzip.decompress(data) if name.endswith('.gz') else data), name
  for name, pixels in pictures.items():
    stored = written[name].features.feature[features.IMAGE_KEY].bytes_list.value[0]
    # What Transform decodes: the picture itself, the scanner's interface cropped away.
    decoded = image_decoding.decode_rgb(tf.constant(stored)).numpy()
    assert np.array_equal(decoded, pixels), name
    label = written[name].features.feature[features.LABEL_NAME_KEY].bytes_list.value[0].decode()
    assert label == name.split('/')[0]
  skipped = {row['file']: row['reason']
             for row in examples.get_json_value_custom_property(contracts.SKIPPED_FILES_PROPERTY)}
  assert skipped == {
      'benign/fake.dcm': 'not DICOM after all: no "DICM" marker at byte 128',
      'benign/mammogram.dcm': 'modality MG (mammography), not ultrasound (US)',
      'normal/RPT0001': 'no pixel data: Basic Text SR Storage (a report or a document, not an '
                        'image)'}


def test_every_frame_of_a_clip_becomes_an_example_of_one_group(tmp_path):
  source = tmp_path / 'png'
  synthetic.generate_dataset(str(source), images_per_class=6, image_size=64, seed=6)
  pixels = image_files.rgb_pixels(image_files.check_image(
      (source / 'malignant' / 'malignant (1).png').read_bytes()))
  screen, region = dicom.in_scanner_interface(pixels)
  clip = dicom.write_ultrasound(str(source / 'malignant' / 'IM0007'), screen,
                                transfer_syntax=dicom.JPEG_LS, frames=5, region=region)
  expected = {image_files.frame_file('malignant/IM0007', frame):
              dicom_files.read_dicom(pathlib.Path(clip).read_bytes(), frame=frame).pixels
              for frame in range(5)}

  def written(clip_frames):
    examples = component.run_executor_directly(str(source), str(tmp_path / clip_frames),
                                               clip_frames=clip_frames)
    found = {}
    for split in (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT, contracts.EXCLUDED_SPLIT):
      files = tf.io.gfile.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))
      for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
        example = tf.train.Example.FromString(record.numpy())
        text = lambda key: example.features.feature[key].bytes_list.value[0]
        found[text(features.FILENAME_KEY).decode()] = (
            split, text(features.DUPLICATE_GROUP_KEY).decode(),
            image_decoding.decode_rgb(tf.constant(text(features.IMAGE_KEY))).numpy())
    return found

  middle = written('middle')
  assert len(middle) == 19 and np.array_equal(middle['malignant/IM0007'][2],
                                               expected['malignant/IM0007#frame3'])
  every = written('all')
  assert len(every) == 23 and 'malignant/IM0007' not in every
  frames = {name: every[name] for name in expected}
  assert len({(split, group) for split, group, _ in frames.values()}) == 1
  for name, pixels in expected.items():
    assert np.array_equal(frames[name][2], pixels), name
  assert not np.array_equal(expected['malignant/IM0007#frame1'], expected['malignant/IM0007#frame5'])


def test_the_prediction_cli_answers_a_dicom_file_as_the_same_picture_as_png(
    python, project_root, pushed_model_dir, tmp_path, pipeline_runs):
  """Lossless DICOM (a clip in a scanner's screen among them) and the PNGs they were made from
  get the same answers; a file without a picture gets its reason."""
  pngs = [pipeline_runs['data_root'] / label / f'{label} (4).png'
          for label in ('benign', 'malignant', 'normal')]
  files = []
  for index, png in enumerate(pngs):
    pixels = image_files.rgb_pixels(image_files.check_image(png.read_bytes()))
    if index == 1:
      screen, region = dicom.in_scanner_interface(pixels)
      files.append(dicom.write_ultrasound(str(tmp_path / f'IM{index}'), screen,
                                          transfer_syntax=dicom.JPEG_LS, frames=3,
                                          region=region))
    else:
      files.append(dicom.write_ultrasound(str(tmp_path / f'{png.stem}.dcm'), pixels,
                                          transfer_syntax=dicom.RLE))
  mammogram = dicom.write_ultrasound(str(tmp_path / 'mammogram.dcm'), pixels, modality='MG')
  completed = subprocess.run(
      [python, '-m', 'serving.predict', '--model-dir', pushed_model_dir, *map(str, pngs), *files,
       mammogram], cwd=project_root, capture_output=True, text=True, timeout=600, check=False)
  lines = [json.loads(line) for line in completed.stdout.splitlines()]
  assert completed.returncode == 1  # one file was not classified
  by_png, by_dicom, refused = lines[:3], lines[3:6], lines[6]
  for png_line, dicom_line in zip(by_png, by_dicom):
    assert (dicom_line['decision'], dicom_line['review']) == (png_line['decision'],
                                                               png_line['review'])
    assert dicom_line['scores'] == pytest.approx(png_line['scores'], abs=1e-6)
  assert refused == {'path': mammogram,
                     'error': 'not classified: modality MG (mammography), not ultrasound (US)'}
