"""Artifact types of the project's own components, for the components that write and read them.

`runs/` finds them in ML Metadata by `TYPE_NAME`.
"""

from tfx import types


class DataQualityReport(types.Artifact):
  """Near-duplicate groups, label conflicts and cross-split leaks of an Examples artifact.

  Written by DataQualityCheck, read by DataValidationGate; see components/data_quality/.
  """
  # '<namespace>.<Name>': the form Kubeflow V2 / Vertex needs to compile a custom artifact type.
  TYPE_NAME = 'breast_ultrasound.DataQualityReport'


class EvalExplanations(types.Artifact):
  """Grad-CAM heat maps of eval images the model got wrong and right, as explanations.npz.

  Written by EvalExplainer, read by the run report; see components/eval_explanations/.
  """
  TYPE_NAME = 'breast_ultrasound.EvalExplanations'


class ModelCard(types.Artifact):
  """A model's card, model_card.json and model_card.html (components/model_card/card.py).

  Written by ModelCardGenerator, which also writes both files for the pushed version, under
  `<output-dir>/model_cards/<model-name>/<version>/`.
  """
  TYPE_NAME = 'breast_ultrasound.ModelCard'


class Predictions(types.Artifact):
  """A batch inference's predictions as predictions.csv and predictions.jsonl.

  Written by InferenceExport from BulkInferrer's InferenceResult; see components/inference_export/.
  """
  TYPE_NAME = 'breast_ultrasound.Predictions'


class DriftReport(types.Artifact):
  """How far the newest span's statistics lie from the previous span's, feature by feature.

  Written by DriftCheck, read by DataValidationGate (which stops a run on drift, or only warns)
  and by runs/; see components/drift_check/.
  """
  TYPE_NAME = 'breast_ultrasound.DriftReport'
