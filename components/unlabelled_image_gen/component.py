"""UnlabelledImageExampleGen: a folder of images to classify → Examples for TFX's BulkInferrer.

The images have no class folders: every file below the folder is considered, with the input
policy of ImageExampleGen (image_files.py): PNG, JPEG, BMP and DICOM images are read and checked as for
training; lesion masks, files that are not images, corrupt or oversized images, dangling links
and links out of the folder are skipped, each with its reason; what operating systems leave
behind is ignored. Each image becomes a tf.Example with the raw features a model's
`from_examples` signature reads (the encoded image, its path relative to the folder, its size),
in one split, `unlabelled`.

Nothing is lost silently: the Examples artifact records `example_count`, and `skipped_files` and
`ignored_files` ({'file', 'reason'}), as ImageExampleGen's does. A folder with no usable image
fails the run, naming what was skipped.
"""

import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import contracts
from inputs import image_files

EXAMPLES_FILE = 'data_tfrecord-00000-of-00001.gz'


class NoImagesError(ValueError):
  """The folder holds no image that can be classified."""


@component
def UnlabelledImageExampleGen(examples: OutputArtifact[standard_artifacts.Examples],
                              input_base: Parameter[str], code_version: Parameter[str] = ''):
  """Writes one example per usable image below `input_base`; see the module docstring.
  `code_version` only keys TFX's cache."""
  del code_version
  examples.split_names = artifact_utils.encode_split_names([contracts.UNLABELLED_SPLIT])
  split_folder = os.path.join(examples.uri, f'Split-{contracts.UNLABELLED_SPLIT}')
  tf.io.gfile.makedirs(split_folder)
  skipped, ignored, count = [], [], 0
  with tf.io.TFRecordWriter(os.path.join(split_folder, EXAMPLES_FILE),
                            options='GZIP') as writer:
    for entry in image_files.list_unlabelled_folder(input_base):
      if entry['kind'] == 'ignored':
        ignored.append({'file': entry['file'], 'reason': entry['reason']})
        continue
      if entry['kind'] != 'image':
        skipped.append({'file': entry['file'], 'reason': entry['reason']})
        continue
      try:
        content, image = image_files.read_image(entry['path'])
        stored, _ = image_files.tensorflow_ready_bytes(content, image)
      except (image_files.UnusableFile, OSError, tf.errors.OpError) as error:
        skipped.append({'file': entry['file'],
                        'reason': getattr(error, 'message', None) or str(error)})
        continue
      writer.write(image_files.build_unlabelled_example(stored, image, entry['file'])
                   .SerializeToString())
      count += 1
  examples.set_int_custom_property(contracts.EXAMPLE_COUNT_PROPERTY, count)
  examples.set_int_custom_property(contracts.SKIPPED_COUNT_PROPERTY, len(skipped))
  examples.set_json_value_custom_property(contracts.SKIPPED_FILES_PROPERTY, skipped)
  examples.set_int_custom_property(contracts.IGNORED_COUNT_PROPERTY, len(ignored))
  examples.set_json_value_custom_property(contracts.IGNORED_FILES_PROPERTY, ignored)
  if not count:
    named = '; '.join(f'{row["file"]}: {row["reason"]}' for row in skipped[:10])
    raise NoImagesError(f'no image to classify in {input_base}'
                        + (f' (skipped {len(skipped)} files: {named})' if skipped else ''))
