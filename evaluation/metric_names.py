"""The names every reader of the Evaluator's results shares: TFMA's metric keys (ours and Keras's
accuracy), the suffixes of the ends of a bootstrap interval, and the model's evaluated outputs.

The metrics are computed by evaluation/tfma_metrics.py and configured with their gates by
pipeline/eval_config.py; runs/ reads them back from the EvalResult by these names.
"""

ACCURACY_METRIC = 'SparseCategoricalAccuracy'
ACCURACY = 'sparse_categorical_accuracy'
# Names of the metrics in evaluation/tfma_metrics.py.
MALIGNANT_RECALL = 'malignant_recall'
MALIGNANT_SENSITIVITY = 'malignant_sensitivity'  # malignant recall at the operating point
MACRO_F1 = 'macro_f1'
MACRO_AUC = 'macro_auc'
EXPECTED_CALIBRATION_ERROR = 'expected_calibration_error'
BRIER_SCORE = 'brier_score'
UNCALIBRATED = '_uncalibrated'  # suffix of the metrics of the uncalibrated probabilities
ACCURACY_AT_OPERATING_POINT = 'accuracy_at_operating_point'
# The candidate's accuracy less the baseline's on the same eval images (a TFMA diff metric).
ACCURACY_VERSUS_BASELINE = 'accuracy_versus_baseline'
LOWER = '_lower'  # suffixes of the ends of a 95 % bootstrap interval
UPPER = '_upper'
# The outputs of the model's from_examples signature that are evaluated.
PROBABILITIES_OUTPUT = 'probabilities'
OPERATING_POINT_OUTPUT = 'operating_point'
UNCALIBRATED_OUTPUT = 'uncalibrated_probabilities'
# Read beside the decisions by the DecisionReview metric (not a labelled output of its own).
REVIEW_OUTPUT = 'review'
