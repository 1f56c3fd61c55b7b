"""ImageExampleGen's driver: decides, before the executor runs, whether the input changed.

TFX's file-based driver fingerprints the files an input pattern matches through TensorFlow's
filesystem layer, which sees neither nested folders nor files outside the pattern and fails on a
file name that is not valid UTF-8. This one fingerprints exactly what the executor lists
(`image_files.fingerprint_data_root`), so the cache reruns ImageExampleGen when any file under
the data root changes, and never on a file name. A data root of span folders (`span-1`,
`span-2`, ...) is read a span at a time, the newest first, as TFX's `{SPAN}` patterns are: the
span is recorded on the Examples artifact and the input pattern names its folder.
"""

from typing import Iterable, Optional, Tuple

from tfx.components.example_gen import driver, input_processor
from tfx.proto import example_gen_pb2, range_config_pb2

from inputs import image_files


class ImageFolderInputProcessor(input_processor.FileBasedInputProcessor):
  """The newest span folder (`span-<N>`), or the one a static range names, or span 0 for a
  data root without spans; version
  none; the fingerprint of the whole data root (an older span's files decide the newest one's
  split too)."""

  def __init__(self, input_base_uri: str, splits: Iterable[example_gen_pb2.Input.Split],
               range_config: Optional[range_config_pb2.RangeConfig] = None):
    # TFX's processor refuses a range config unless the pattern has {SPAN}: span folders are
    # found by name here instead.
    super().__init__(input_base_uri, splits, None)
    self._range_config = range_config

  def resolve_span_and_version(self) -> Tuple[int, Optional[int]]:
    self._fingerprint = image_files.fingerprint_data_root(self._input_base_uri)
    if self._range_config and self._range_config.HasField('static_range'):
      # One span, as TFX's own ExampleGens take it: start and end equal.
      span = self._range_config.static_range.start_span_number
      if span not in image_files.span_folders(self._input_base_uri):
        raise image_files.SpanLayoutError(f'there is no folder span-{span} under '
                                          f'{self._input_base_uri}')
      return span, None
    return image_files.newest_span(self._input_base_uri), None

  def get_pattern_for_span_version(self, pattern: str, span: int,
                                   version: Optional[int]) -> str:
    del version
    folder = image_files.span_folders(self._input_base_uri).get(span)
    return image_files.span_prefix(folder) + pattern if folder else pattern


class ImageFolderDriver(driver.FileBasedDriver):

  def get_input_processor(
      self,
      splits: Iterable[example_gen_pb2.Input.Split],
      range_config: Optional[range_config_pb2.RangeConfig] = None,
      input_base_uri: Optional[str] = None) -> input_processor.InputProcessor:
    return ImageFolderInputProcessor(input_base_uri, splits, range_config)
