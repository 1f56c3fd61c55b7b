"""`create_inference_pipeline(config, ...)`: batch inference with TFX's BulkInferrer.

UnlabelledImageExampleGen (a folder of images, ImageExampleGen's input policy) → BulkInferrer (the
model's `from_examples` signature, over Beam) → InferenceExport (predictions.csv and
predictions.jsonl). The model and its blessing come in through TFX Importers of the artifacts ML
Metadata already holds (the runner takes the version a server would serve and the model pushed as
it: local_runner.py), so the InferenceResult's lineage leads back to the Trainer's Model and the
Evaluator's blessing. It is a pipeline of its own (`<pipeline name>-inference`) in the same ML
Metadata store and pipeline root, and never cached: every run classifies the folder as it is now.
"""

from tfx.components import BulkInferrer
from tfx.dsl.components.common.importer import Importer
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import bulk_inferrer_pb2
from tfx.types import standard_artifacts

from components import contracts
from components.inference_export.component import InferenceExport
from components.unlabelled_image_gen.component import UnlabelledImageExampleGen
from pipeline.code_version import code_version
from pipeline.configs import PipelineConfig

# The signature BulkInferrer calls: it needs exactly one string input, serialized examples.
INFERENCE_SIGNATURE = 'from_examples'


def create_inference_pipeline(config: PipelineConfig, infer_dir: str, model_uri: str,
                              model_blessing_uri: str,
                              metadata_connection_config=None) -> Pipeline:
  """The inference pipeline over the images in `infer_dir`, with the Model and ModelBlessing
  artifacts at those URIs."""
  example_gen = UnlabelledImageExampleGen(
      input_base=infer_dir,
      code_version=code_version('components.unlabelled_image_gen.component'))
  # reimport=False: the artifacts ML Metadata has at these URIs, not copies of them.
  model = Importer(source_uri=model_uri, artifact_type=standard_artifacts.Model,
                   reimport=False).with_id('blessed_model')
  model_blessing = Importer(source_uri=model_blessing_uri,
                            artifact_type=standard_artifacts.ModelBlessing,
                            reimport=False).with_id('model_blessing')
  bulk_inferrer = BulkInferrer(
      examples=example_gen.outputs['examples'],
      model=model.outputs['result'],
      model_blessing=model_blessing.outputs['result'],
      data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[contracts.UNLABELLED_SPLIT]),
      model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[INFERENCE_SIGNATURE]))
  export = InferenceExport(
      inference_result=bulk_inferrer.outputs['inference_result'],
      code_version=code_version('components.inference_export.component'))
  return Pipeline(
      pipeline_name=config.inference_pipeline_name,
      pipeline_root=config.pipeline_root,
      components=[example_gen, model, model_blessing, bulk_inferrer, export],
      enable_cache=False,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam_pipeline_args)
