"""What the components agree on: split names, artifact property keys, the files inside artifacts,
and which input files are images.

One component writes these and others (and `runs/`, which reads recorded runs back) read them,
so each is spelled here once. Feature keys and the class names are the model's contract and live
in `models/features.py`. This module imports nothing heavy: the runners read it before TFX loads.
"""

# Splits of ImageExampleGen's Examples artifact. Label conflicts the policy leaves out go to
# EXCLUDED_SPLIT: written, so nothing is lost, but read by no trainer or evaluator.
TRAIN_SPLIT = 'train'
EVAL_SPLIT = 'eval'
EXCLUDED_SPLIT = 'excluded'

# Input files: `<data root>/<class>/<name><extension>`, masks beside their image as
# `<name>_mask<extension>`, `<name>_mask_1<extension>`, ...
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
MASK_SUFFIX = '_mask'

# Near-duplicate groups and what happens to label conflicts (see components/near_duplicates.py).
LABEL_CONFLICT_POLICIES = ('exclude', 'keep', 'fail')
DEFAULT_LABEL_CONFLICT_POLICY = 'exclude'

# Custom properties of ImageExampleGen's Examples artifact.
CLASS_NAMES_PROPERTY = 'class_names'
CLASS_COUNTS_PROPERTY = 'class_counts'  # {split: {class name: images}}
SKIPPED_FILES_PROPERTY = 'skipped_files'  # [{'file', 'reason'}]
EXAMPLE_COUNT_PROPERTY = 'example_count'
SKIPPED_COUNT_PROPERTY = 'skipped_count'
# Also properties of the DataQualityReport artifact: the settings the split was made with.
MAX_HASH_DISTANCE_PROPERTY = 'max_hash_distance'
LABEL_CONFLICT_POLICY_PROPERTY = 'label_conflict_policy'

# Files inside ImageExampleGen's Examples artifact, beside the split folders.
SKIPPED_FILES_FILE = 'skipped_files.jsonl'
CLASS_COUNTS_FILE = 'class_counts.jsonl'

# Custom properties of DataQualityCheck's DataQualityReport artifact: the headline counts, and
# the violations that DataValidationGate stops the run on.
DATA_QUALITY_COUNT_PROPERTIES = (
    'image_count', 'group_count', 'duplicate_group_count', 'images_in_duplicate_groups',
    'label_conflict_count', 'images_in_label_conflicts', 'excluded_image_count',
    'cross_split_leak_count')
VIOLATIONS_PROPERTY = 'violations'

# Files inside the DataQualityReport artifact.
DATA_QUALITY_FILE = 'data_quality.json'
IMAGE_GROUPS_FILE = 'image_groups.csv'
CONTACT_SHEET_FILE = 'contact_sheet.png'

# The file per split that TFX's ExampleValidator writes its anomalies to.
ANOMALIES_FILE = 'SchemaDiff.pb'
