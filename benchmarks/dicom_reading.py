"""How long reading DICOM takes against the same pictures as PNG, by transfer syntax.

    python -m benchmarks.dicom_reading [--count 1000] [--image-size 256]

Generates `count` synthetic pictures, writes each as PNG and as DICOM in every transfer syntax
data/dicom.py writes (grey, as B-mode ultrasound is, and a 24-pixel scanner border cropped away
by the ultrasound region), then times what ImageExampleGen does with each file in one process:
read it, check it (`image_files.read_image`: for DICOM the decode, the colour conversion and the
crop) and make the bytes it stores (`tensorflow_ready_bytes`: a PNG's own bytes, DICOM pixels
encoded as PNG). Prints files per second and milliseconds per file per format.
"""

import argparse
import os
import sys
import tempfile
import time

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT_ROOT)

from cli import command_line  # pylint: disable=g-import-not-at-top

command_line.prepare_environment()

import numpy as np  # pylint: disable=g-import-not-at-top

from data import dicom, synthetic  # pylint: disable=g-import-not-at-top
from inputs import image_files  # pylint: disable=g-import-not-at-top


def read_all(paths):
  """Seconds to read, check and make the stored bytes of every file."""
  started = time.perf_counter()
  for path in paths:
    content, image = image_files.read_image(path)
    image_files.tensorflow_ready_bytes(content, image)
  return time.perf_counter() - started


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--count', type=int, default=1000)
  parser.add_argument('--image-size', type=int, default=256)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    source = os.path.join(workdir, 'png')
    synthetic.generate_dataset(source, images_per_class=-(-args.count // 3),
                               image_size=args.image_size)
    pngs = sorted(os.path.join(folder, name) for folder, _, names in os.walk(source)
                  for name in names if name.endswith('.png') and '_mask' not in name)
    pngs = pngs[:args.count]
    rows = [('PNG', pngs)]
    for syntax in (dicom.EXPLICIT, dicom.JPEG_BASELINE, dicom.JPEG_LS, dicom.JPEG_2000_LOSSLESS,
                   dicom.RLE):
      folder = os.path.join(workdir, syntax)
      os.makedirs(folder)
      paths = []
      for index, png in enumerate(pngs):
        grey = np.asarray(image_files.check_image(open(png, 'rb').read()).convert('L'))
        screen, region = dicom.in_scanner_interface(grey)
        paths.append(dicom.write_ultrasound(os.path.join(folder, f'IM{index:05d}.dcm'), screen,
                                            transfer_syntax=syntax, region=region))
      rows.append((f'DICOM {syntax}', paths))
    print(f'{len(pngs)} pictures of {args.image_size} × {args.image_size} pixels; DICOM grey, '
          'in a 24-pixel scanner border cropped by its ultrasound region')
    print(f'{"format":<26} {"MB":>7} {"seconds":>8} {"files/s":>8} {"ms/file":>8}')
    for name, paths in rows:
      read_all(paths[:20])  # warm the decoders and the file cache
      seconds = read_all(paths)
      size = sum(os.path.getsize(path) for path in paths) / 2**20
      print(f'{name:<26} {size:>7.1f} {seconds:>8.2f} {len(paths) / seconds:>8.0f} '
            f'{1000 * seconds / len(paths):>8.2f}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
