"""The contract every step shares: feature keys, the label vocabulary and the image size.

ExampleGen writes these keys, Transform reads and rewrites them, the Trainer and the Evaluator
consume them and the exported model answers with the label names below. Spelled here once.
"""

# Raw features, as the image ExampleGen writes them (one tf.Example per image).
IMAGE_KEY = 'image'  # the encoded file bytes (PNG, JPEG or BMP), never decoded pixels
LABEL_KEY = 'label'  # integer index into LABEL_NAMES
LABEL_NAME_KEY = 'label_name'
FILENAME_KEY = 'filename'  # path relative to the data root, e.g. 'benign/benign (1).png'
HEIGHT_KEY = 'height'
WIDTH_KEY = 'width'
MASK_KEY = 'mask'  # PNG of the lesion masks merged; empty bytes when the image has none
MASK_COUNT_KEY = 'mask_count'  # how many mask files were merged into MASK_KEY
IMAGE_HASH_KEY = 'image_hash'  # 128-bit perceptual hash of the pixels, 32 hex digits
# Near-duplicate group, named after its first member's FILENAME_KEY; unique images are
# groups of one. A group never spans two splits.
DUPLICATE_GROUP_KEY = 'duplicate_group'

# What the image looks like, in numbers TFDV can compare between spans and with served requests
# (drift and skew): grey levels scaled to [0, 1], their mean and standard deviation, and the
# share of pixels darker than DARK_GREY_LEVEL.
MEAN_INTENSITY_KEY = 'mean_intensity'
CONTRAST_KEY = 'contrast'
DARK_FRACTION_KEY = 'dark_fraction'
CONTENT_KEYS = (MEAN_INTENSITY_KEY, CONTRAST_KEY, DARK_FRACTION_KEY)
DARK_GREY_LEVEL = 32  # of 255
# What a served request has (the schema's SERVING environment): the image and what ImageExampleGen
# computes from it. Labels, file names, masks, hashes and groups exist only in training data.
SERVING_KEYS = (IMAGE_KEY, HEIGHT_KEY, WIDTH_KEY, *CONTENT_KEYS)

# The class vocabulary: the data root's folder names, in this order. The order fixes the
# integer labels, so it must never change under a trained model.
LABEL_NAMES = ('benign', 'malignant', 'normal')
MALIGNANT_LABEL = LABEL_NAMES.index('malignant')

# Transformed features, as Transform writes them for the Trainer.
TRANSFORMED_IMAGE_KEY = 'image_pixels'  # float32 [height, width, 3] scaled to [0, 1]
TRANSFORMED_LABEL_KEY = 'label'
# Passed through Transform so that the Trainer carves its calibration set by near-duplicate group.
TRANSFORMED_GROUP_KEY = 'duplicate_group'

DEFAULT_IMAGE_SIZE = 180  # the seed notebook's input size
IMAGE_CHANNELS = 3
# The most pixels any step decodes (5000 × 5000; ultrasound frames are about a megapixel): a
# larger image is refused from its header, before decoding (see models/image_decoding.py).
MAX_IMAGE_PIXELS = 25_000_000
