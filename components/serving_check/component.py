"""ServingCheck: will the candidate serve? TFX's InfraValidator, without Docker.

TFX's InfraValidator starts TensorFlow Serving (in Docker or Kubernetes) on the candidate and
sends it requests; neither can run here. This component does the same job with what can: it
loads the candidate SavedModel in a fresh Python process, as a model server loads it, and sends
it canary requests built from eval examples through `serving_default` (encoded image bytes) and
`from_examples` (serving/canary.py says what fails a canary, the latency ceiling included). It
writes TFX's `InfraBlessing`, so TFX's Pusher, given `infra_blessing`, pushes only a model that
passed, whatever the Evaluator said.

It also measures the Trainer's TFLite model against the SavedModel on the whole eval split
(share of identical labels, largest probability difference); the Pusher publishes the TFLite
model beside the SavedModel only when `tflite_agrees`.

The InfraBlessing artifact holds `serving_check.json` (the whole report), the canaries sent
(`canaries.tfrecord`) and InfraValidator's marker file (`INFRA_BLESSED` or `INFRA_NOT_BLESSED`);
its custom properties are `blessed` (1 or 0, as InfraValidator's), `serving_check` (the report
without each request's latency) and `tflite_agrees` (1 or 0).
"""

import json
import math
import os
import subprocess
import sys
from typing import Any, Dict, List

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import contracts
from models import features

# Loading, canaries and the TFLite comparison of a large eval split fit well within this.
_CHECK_TIMEOUT_SECONDS = 1800
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def choose_canaries(eval_split_uri: str, count: int) -> List[bytes]:
  """The first examples of the eval split, at most ⌈count / classes⌉ of each label, so that every
  class the split has is asked about."""
  per_label = math.ceil(count / len(features.LABEL_NAMES))
  taken: Dict[int, int] = {}
  chosen = []
  files = sorted(tf.io.gfile.glob(os.path.join(eval_split_uri, '*')))
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    serialized = record.numpy()
    label = tf.train.Example.FromString(serialized).features.feature[
        features.LABEL_KEY].int64_list.value[0]
    if taken.get(label, 0) < per_label:
      taken[label] = taken.get(label, 0) + 1
      chosen.append(serialized)
      if len(chosen) == count:
        break
  return chosen


def run_canary_process(arguments: List[str]) -> str:
  """Runs serving/canary.py in a fresh Python process; returns '' or why it did not report."""
  environment = dict(os.environ)
  environment['PYTHONPATH'] = os.pathsep.join(
      [_PROJECT_ROOT] + [path for path in [environment.get('PYTHONPATH')] if path])
  try:
    completed = subprocess.run([sys.executable, '-m', 'serving.canary', *arguments],
                               capture_output=True, text=True, env=environment,
                               timeout=_CHECK_TIMEOUT_SECONDS, check=False)
  except subprocess.TimeoutExpired:
    return f'the serving check process did not finish within {_CHECK_TIMEOUT_SECONDS} s'
  if completed.returncode != 0:
    last = [line for line in completed.stderr.splitlines() if line.strip()][-1:] or ['']
    return f'the serving check process exited with code {completed.returncode}: {last[0]}'
  return ''


def mark(blessing: standard_artifacts.InfraBlessing, report: Dict[str, Any],
         min_tflite_agreement: float) -> None:
  """Records the report on the artifact as InfraValidator records its verdict."""
  blessed = not report['failures']
  tflite = report.get('tflite')
  agrees = bool(tflite) and tflite['identical_labels'] >= min_tflite_agreement
  with tf.io.gfile.GFile(os.path.join(blessing.uri, contracts.SERVING_CHECK_FILE), 'w') as handle:
    json.dump({**report, 'tflite_agrees': agrees,
               'min_tflite_agreement': min_tflite_agreement}, handle, indent=1)
  marker = contracts.INFRA_BLESSED_FILE if blessed else contracts.INFRA_NOT_BLESSED_FILE
  with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), 'w') as handle:
    handle.write('')
  blessing.set_int_custom_property('blessed', int(blessed))
  blessing.set_int_custom_property(contracts.TFLITE_AGREES_PROPERTY, int(agrees))
  latency = dict(report.get('latency_ms') or {})
  latency.pop('requests', None)
  blessing.set_json_value_custom_property(contracts.SERVING_CHECK_PROPERTY, {
      **{key: value for key, value in report.items() if key != 'latency_ms'},
      'latency_ms': latency or None, 'min_tflite_agreement': min_tflite_agreement})


@component
def ServingCheck(model: InputArtifact[standard_artifacts.Model],
                 examples: InputArtifact[standard_artifacts.Examples],
                 blessing: OutputArtifact[standard_artifacts.InfraBlessing],
                 latency_ceiling_ms: Parameter[float],
                 canary_count: Parameter[int],
                 min_tflite_agreement: Parameter[float],
                 code_version: Parameter[str] = ''):
  """Loads `model` in a fresh process, sends it `canary_count` eval examples and blesses it when
  every canary passes; see the module docstring. `code_version` only keys TFX's cache."""
  del code_version
  eval_split_uri = artifact_utils.get_split_uri([examples], contracts.EVAL_SPLIT)
  canaries = choose_canaries(eval_split_uri, canary_count)
  canaries_path = os.path.join(blessing.uri, contracts.CANARIES_FILE)
  with tf.io.TFRecordWriter(canaries_path) as writer:
    for serialized in canaries:
      writer.write(serialized)
  report_path = os.path.join(blessing.uri, contracts.SERVING_CHECK_FILE)
  arguments = [
      '--model-dir', os.path.join(model.uri, contracts.SAVED_MODEL_DIR),
      '--canaries', canaries_path, '--image-feature', features.IMAGE_KEY,
      '--classes', ','.join(features.LABEL_NAMES), '--latency-ceiling-ms', str(latency_ceiling_ms),
      '--report', report_path]
  tflite_model = model.get_string_custom_property(contracts.TFLITE_MODEL_PROPERTY)
  if tflite_model:
    arguments += ['--tflite-model', os.path.join(model.uri, tflite_model),
                  '--agreement-examples', os.path.join(eval_split_uri, '*')]
  problem = run_canary_process(arguments)
  if problem or not tf.io.gfile.exists(report_path):
    report = {'loaded': False, 'canaries': len(canaries), 'latency_ms': None, 'tflite': None,
              'failures': [problem or 'the serving check process wrote no report']}
  else:
    with tf.io.gfile.GFile(report_path) as handle:
      report = json.load(handle)
  if not canaries:
    report['failures'].append('the eval split has no examples to send as canaries')
  mark(blessing, report, min_tflite_agreement)
