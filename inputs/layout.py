"""The layout of a data root: which files are images, masks and spans, and what operating systems
leave behind. Light on purpose (nothing but `re`): the runners check a data root with it before
TensorFlow loads. The rules that read the files are in inputs/image_files.py.
"""

import re

# A span of new data: `<data root>/span-<N>/<class>/<image>` (TFX's {SPAN}, in a folder name).
SPAN_FOLDER = re.compile(r'^span-(\d+)$')

# Input files: `<data root>/<class>/<name><extension>`, masks beside their image as
# `<name>_mask<extension>`, `<name>_mask_1<extension>`, ... (any case of the extension). A DICOM
# file is also recognised by its content whatever it is called (PACS exports often have no
# extension): inputs/image_files.py looks.
DICOM_EXTENSIONS = ('.dcm', '.dicom')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp') + DICOM_EXTENSIONS
MASK_SUFFIX = '_mask'
# Image formats that are not accepted, so that such a file is skipped as an unsupported format
# rather than as "not an image".
OTHER_IMAGE_EXTENSIONS = ('.avif', '.dng', '.gif', '.heic', '.heif', '.ico',
                          '.jp2', '.jxl', '.pbm', '.pgm', '.ppm', '.psd', '.svg', '.tga', '.tif',
                          '.tiff', '.webp')
MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024  # larger input files are skipped unread
# What a DICOM cine clip gives the training data: its middle frame, or every frame as examples of
# one group.
MIDDLE_FRAME = 'middle'
EVERY_FRAME = 'all'
CLIP_FRAMES = (MIDDLE_FRAME, EVERY_FRAME)

# What operating systems and archivers leave in folders: ignored, counted and listed as ignored,
# never counted as unusable input.
OS_CLUTTER_NAMES = frozenset({
    '.DS_Store', '.AppleDouble', '.AppleDB', '.AppleDesktop', '.apdisk', '.fseventsd',
    '.Spotlight-V100', '.TemporaryItems', '.Trashes', '.VolumeIcon.icns', '.localized',
    '__MACOSX', 'Icon\r',  # macOS, and the folder macOS's zip archiver adds
    'Thumbs.db', 'ehthumbs.db', 'ehthumbs_vista.db', 'desktop.ini', 'Desktop.ini',
    '$RECYCLE.BIN', 'System Volume Information',  # Windows
    '.directory', '.Trash-1000', '.nfs',  # Linux desktops and NFS
})
OS_CLUTTER_PREFIXES = ('._', '.nfs', '.Trash-')  # AppleDouble resource forks, NFS, Linux trash


def is_os_clutter(name: str) -> bool:
  """Whether a file or folder name is one an operating system or archiver leaves behind."""
  return name in OS_CLUTTER_NAMES or name.startswith(OS_CLUTTER_PREFIXES)
