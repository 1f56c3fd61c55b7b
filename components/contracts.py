"""What the components agree on: split names, artifact property keys and the files inside
artifacts.

One component writes these and others (and `runs/`, which reads recorded runs back) read them,
so each is spelled here once. Feature keys and the class names are the model's contract and live
in `models/features.py`. This module imports nothing heavy: the runners read it before TFX loads.
"""

# Splits of ImageExampleGen's Examples artifact. Label conflicts the policy leaves out go to
# EXCLUDED_SPLIT: written, so nothing is lost, but read by no trainer or evaluator.
TRAIN_SPLIT = 'train'
EVAL_SPLIT = 'eval'
EXCLUDED_SPLIT = 'excluded'
# The one split of UnlabelledImageExampleGen's Examples: images to classify (batch inference).
UNLABELLED_SPLIT = 'unlabelled'

# Near-duplicate groups and what happens to label conflicts (see components/near_duplicates.py).
LABEL_CONFLICT_POLICIES = ('exclude', 'keep', 'fail')
DEFAULT_LABEL_CONFLICT_POLICY = 'exclude'

# Custom properties of ImageExampleGen's Examples artifact.
CLASS_NAMES_PROPERTY = 'class_names'
# The data root an Examples artifact was read from: its spans belong together.
DATA_ROOT_PROPERTY = 'data_root'
CLASS_COUNTS_PROPERTY = 'class_counts'  # {split: {class name: images}}
SKIPPED_FILES_PROPERTY = 'skipped_files'  # [{'file', 'reason'}]
EXAMPLE_COUNT_PROPERTY = 'example_count'
SKIPPED_COUNT_PROPERTY = 'skipped_count'
IGNORED_FILES_PROPERTY = 'ignored_files'  # [{'file', 'reason'}]: operating-system clutter
IGNORED_COUNT_PROPERTY = 'ignored_count'
# [{'file', 'reason'}]: images stored as a PNG of the pixels Pillow read, because TensorFlow
# would not decode the original to the same pixels.
NORMALISED_FILES_PROPERTY = 'normalised_files'
# Also properties of the DataQualityReport artifact: the settings the split was made with.
MAX_HASH_DISTANCE_PROPERTY = 'max_hash_distance'
LABEL_CONFLICT_POLICY_PROPERTY = 'label_conflict_policy'

# Files inside ImageExampleGen's Examples artifact, beside the split folders.
SKIPPED_FILES_FILE = 'skipped_files.jsonl'
IGNORED_FILES_FILE = 'ignored_files.jsonl'
NORMALISED_FILES_FILE = 'normalised_files.jsonl'
CLASS_COUNTS_FILE = 'class_counts.jsonl'
# Older spans' images sharing a near-duplicate group with one of the newest span's.
OLDER_SPAN_COMPANIONS_FILE = 'older_span_companions.jsonl'
# {'file', 'patient'} of every image whose patient is known, the patient as its keyed hash
# (inputs/identifiers.py); the counts are properties too.
PATIENTS_FILE = 'patients.jsonl'
PATIENT_COUNT_PROPERTY = 'patient_count'
IMAGES_WITH_PATIENT_PROPERTY = 'images_with_patient'

# Custom properties of DataQualityCheck's DataQualityReport artifact: the headline counts, and
# the violations that DataValidationGate stops the run on.
DATA_QUALITY_COUNT_PROPERTIES = (
    'image_count', 'group_count', 'patient_count', 'images_with_patient',
    'duplicate_group_count', 'images_in_duplicate_groups',
    'label_conflict_count', 'images_in_label_conflicts', 'excluded_image_count',
    'cross_split_leak_count')
VIOLATIONS_PROPERTY = 'violations'

# Files inside the DataQualityReport artifact.
DATA_QUALITY_FILE = 'data_quality.json'
IMAGE_GROUPS_FILE = 'image_groups.csv'
CONTACT_SHEET_FILE = 'contact_sheet.png'

# The file per split that TFX's ExampleValidator writes its anomalies to.
ANOMALIES_FILE = 'SchemaDiff.pb'

# The Model artifact: the SavedModel's folder (TFX's), and custom properties the Trainer's
# executor records: the TFLite model's path inside the artifact and its size.
SAVED_MODEL_DIR = 'Format-Serving'
TFLITE_MODEL_PROPERTY = 'tflite_model'
TFLITE_BYTES_PROPERTY = 'tflite_bytes'
TFLITE_ERROR_PROPERTY = 'tflite_error'  # why there is no TFLite model

# ServingCheck's InfraBlessing artifact: its files and custom properties (besides TFX's
# `blessed`), and the marker files TFX's InfraValidator writes.
SERVING_CHECK_FILE = 'serving_check.json'
CANARIES_FILE = 'canaries.tfrecord'
INFRA_BLESSED_FILE = 'INFRA_BLESSED'
INFRA_NOT_BLESSED_FILE = 'INFRA_NOT_BLESSED'
SERVING_CHECK_PROPERTY = 'serving_check'
TFLITE_AGREES_PROPERTY = 'tflite_agrees'

# ModelCardGenerator's ModelCard artifact, and the pushed version's copy of it; the custom
# property `pushed_copy` names the copy's HTML file.
MODEL_CARD_JSON_FILE = 'model_card.json'
MODEL_CARD_HTML_FILE = 'model_card.html'
MODEL_CARD_PUSHED_COPY_PROPERTY = 'pushed_copy'

# EvalExplainer's EvalExplanations artifact; `explained` counts its rows.
EXPLANATIONS_FILE = 'explanations.npz'
EXPLAINED_PROPERTY = 'explained'

# InferenceExport's Predictions artifact.
PREDICTIONS_CSV_FILE = 'predictions.csv'
PREDICTIONS_JSONL_FILE = 'predictions.jsonl'
