"""The model card of a model: what it is for, what it was trained and measured on, how well it
did, and what it must not be trusted with, as `model_card.json` and `model_card.html`.

Google's model card toolkit does not install beside TFX 1.16 (it needs an older TFMA), so the
card is made here from the pipeline's artifacts as ML Metadata recorded them (the Examples'
class counts, the data-quality report, the Model's operating point, the Evaluator's metrics and
thresholds, the serving check, the push) and rendered with Jinja2, as the run report is. The
ModelCardGenerator component (component.py) gathers those facts for every run and calls
`write_model_cards`, which writes the card into its artifact and, for a pushed version, into
`<output-dir>/model_cards/<model-name>/<version>/`. How a metric, the operating point or the
serving check is said is `presentation/wording.py`'s, as in the summary and the report.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf

from components import contracts
from evaluation import blessing, results
from models import features
from presentation import pages, wording

SPLIT_ORDER = (contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT)
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')

INTENDED_USE = [
    'Research on computer-aided triage of breast-ultrasound images: ranking images by their '
    'malignant probability for a clinician to review.',
    'A second reader in studies where every image is also read by a radiologist.',
]
NOT_FOR = [
    'Diagnosis, or any decision about a patient without a clinician: it is not a medical device '
    'and has no regulatory clearance.',
    'Images other than B-mode breast ultrasound (mammography, MRI, Doppler, elastography), or '
    'populations and machines unlike those of its training data.',
    'Ruling out cancer: at its operating point it still misses malignant lesions (see the '
    'sensitivity below and its interval).',
]
CAVEATS = [
    'Small data set: a few hundred images; every metric has a wide interval (95 % bootstrap '
    'interval where shown).',
    'Single site: the images come from one hospital and one kind of machine; performance '
    'elsewhere is unknown until measured there.',
    'Labels are the data set\'s folder names, not biopsy results recorded with each image.',
    'Not a diagnostic device.',
]


NO_PATIENTS_CAVEAT = (
    'No patient identifiers: images of one patient may be in both training and evaluation '
    'beyond the near-duplicates the pipeline found, which would flatter the metrics.')


def caveats(data_quality: Dict[str, Any]) -> List[str]:
  """CAVEATS, and the patients' one unless every image's patient is known (and so each
  patient is on one side of the split)."""
  images, known = data_quality.get('image_count'), data_quality.get('images_with_patient')
  if images and known == images:
    return list(CAVEATS)
  if known:
    return [f'Patients known for {known} of {images} images: the others\' patients may be in '
            'both training and evaluation beyond the near-duplicates the pipeline found, which '
            'would flatter the metrics.', *CAVEATS]
  return [NO_PATIENTS_CAVEAT, *CAVEATS]


def _number(value: Any) -> Optional[float]:
  return None if value is None else float(value)


def metric_rows(metrics: Dict[str, float]) -> List[Dict[str, Any]]:
  """Every overall metric of the candidate with its interval, where the Evaluator computed one;
  per-class metrics are `per_class_rows`', differences to the baseline are left out."""
  per_class = {f'{kind}{name}' for name in features.LABEL_NAMES
               for kind in ('precision_', 'recall_', 'auc/')}
  rows = []
  for name in sorted(metrics):
    if (name.startswith('example_count') or name.endswith(('_lower', '_upper'))
        or '_diff' in name or name in per_class):
      continue
    rows.append({'metric': name, 'value': metrics[name],
                 'lower': metrics.get(f'{name}_lower'), 'upper': metrics.get(f'{name}_upper')})
  return rows


def per_class_rows(metrics: Dict[str, float]) -> List[Dict[str, Any]]:
  return [{'class': name, 'precision': metrics.get(f'precision_{name}'),
           'recall': metrics.get(f'recall_{name}'), 'auc': metrics.get(f'auc/{name}')}
          for name in features.LABEL_NAMES]


def build_model_card(*, model_name: str, training: Dict[str, Any],
                     class_counts: Dict[str, Dict[str, int]], data_quality: Dict[str, Any],
                     operating_point: Optional[Dict[str, Any]],
                     hyperparameters: Optional[Dict[str, Any]], evaluation_uri: str,
                     blessed: bool, serving_check: Optional[Dict[str, Any]],
                     serving_check_passed: Optional[bool], tflite_bytes: Optional[int],
                     tflite_error: Optional[str],
                     pushed_destination: Optional[str], tflite_pushed: bool,
                     created: str) -> Dict[str, Any]:
  """The card as a JSON-ready dict (the module docstring says where each part comes from)."""
  metrics, matrices = results.read_overall_evaluation(evaluation_uri)
  checks = blessing.checks_of_evaluation(evaluation_uri, metrics)
  return {
      'model': {
          'name': model_name,
          'version': os.path.basename(pushed_destination) if pushed_destination else None,
          'pushed_to': pushed_destination,
          'created': created,
          'task': f'classify a breast-ultrasound image as {", ".join(features.LABEL_NAMES)}',
          'inputs': 'an encoded PNG, JPEG or BMP image of any size (serving_default), or a '
                    f'tf.Example with it under "{features.IMAGE_KEY}" (from_examples)',
          'outputs': ('two answers, kept apart: the most probable class with its calibrated '
                      'probability, and the decision at the operating point (malignant when the '
                      'malignant probability reaches the threshold, otherwise the more probable '
                      'other class), which can be malignant while benign is the most probable; '
                      'the review flag (whether a person should look first, and why: the '
                      'malignant probability near the threshold, or the ensemble\'s members on '
                      'both sides of it); and the calibrated probability of every class'),
          'training': training,
          'hyperparameters': hyperparameters,
          'operating_point': operating_point,
          'operating_point_line': (wording.format_operating_point(operating_point)
                                   if operating_point else None),
          'tflite_bytes': tflite_bytes,
      },
      'intended_use': INTENDED_USE,
      'not_for': NOT_FOR,
      'data': {
          'classes': list(features.LABEL_NAMES),
          # Train, then eval, then the others (the excluded label conflicts).
          'class_counts': {
              split: {name: int(count) for name, count in class_counts[split].items()}
              for split in sorted(class_counts, key=lambda split: (
                  SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split))},
          'quality': data_quality,
      },
      'evaluation': {
          'split': contracts.EVAL_SPLIT,
          'metrics': metric_rows(metrics),
          'per_class': per_class_rows(metrics),
          'confusion_matrix_at_operating_point': matrices.get('operating_point'),
          'decision_review_lines': wording.format_decision_review(metrics),
      },
      'blessing': {
          'blessed': blessed,
          'checks': [dataclasses.asdict(check) for check in checks],
      },
      'serving_check': {
          'passed': serving_check_passed,
          'line': (wording.format_serving_check(serving_check or {}, serving_check_passed)
                   if serving_check_passed is not None else None),
          'tflite_line': (wording.format_tflite(serving_check, tflite_bytes, tflite_pushed,
                                                tflite_error)
                          if serving_check_passed is not None else None),
      },
      'caveats': caveats(data_quality),
  }


def render_html(card: Dict[str, Any]) -> str:
  return pages.environment(TEMPLATE_DIR).get_template(contracts.MODEL_CARD_HTML_FILE).render(
      card=card, class_names=features.LABEL_NAMES)


def write_model_card(card: Dict[str, Any], folder: str) -> List[str]:
  """Writes model_card.json and model_card.html into `folder`; returns their paths."""
  tf.io.gfile.makedirs(folder)
  paths = [os.path.join(folder, contracts.MODEL_CARD_JSON_FILE),
           os.path.join(folder, contracts.MODEL_CARD_HTML_FILE)]
  with tf.io.gfile.GFile(paths[0], 'w') as handle:
    json.dump(card, handle, indent=1)
  with tf.io.gfile.GFile(paths[1], 'w') as handle:
    handle.write(render_html(card))
  return paths


def write_model_cards(facts: Dict[str, Any], folders: List[str]) -> None:
  """ModelCardGenerator's card writer: the card of `facts` (build_model_card's arguments) into
  each of `folders`."""
  card = build_model_card(**facts)
  for folder in folders:
    write_model_card(card, folder)
