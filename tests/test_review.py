"""Reviews of batch inference answers and their export as the next span: a reviewer's labels are
kept atomically with who and when, the export writes the reviewed images as `span-N/<label>/`,
records it in ML Metadata with lineage to the model that made the calls, and the next pipeline
run ingests it like any new span."""

import datetime
import json
import os
import shutil
import subprocess

import pytest

from data import synthetic
from models import features
from review import export, reviews
from runs import inference, metadata_store

ANSWERS = {'a.png': {'decision': 'benign'}, 'nested/b.png': {'decision': 'malignant'}}


def test_a_review_is_kept_with_who_and_when_and_the_newest_counts(tmp_path):
  first = datetime.datetime(2026, 12, 7, 9, 0, tzinfo=datetime.timezone.utc)
  reviews.record_review(str(tmp_path), 'run-1', 'a.png', 'malignant', ' Dr  Okafor ', ANSWERS,
                        now=first)
  reviews.record_review(str(tmp_path), 'run-1', 'a.png', 'benign', 'Dr Okafor', ANSWERS,
                        now=first + datetime.timedelta(minutes=1))
  reviews.record_review(str(tmp_path), 'run-1', 'nested/b.png', reviews.NOT_USABLE, 'R. Li',
                        ANSWERS, now=first)
  assert reviews.read_reviews(str(tmp_path), 'run-1') == [
      reviews.Review('run-1', 'a.png', 'benign', 'Dr Okafor', '2026-12-07T09:01:00+00:00',
                     {'decision': 'benign'}),
      reviews.Review('run-1', 'nested/b.png', 'not usable', 'R. Li', '2026-12-07T09:00:00+00:00',
                     {'decision': 'malignant'})]
  # One file per image, named by a digest; no temporary file left behind.
  assert sorted(len(name) for name in os.listdir(reviews.run_folder(str(tmp_path), 'run-1'))) == [
      37, 37]


@pytest.mark.parametrize('file, label, reviewer, message', [
    ('a.png', 'cancer', 'Dr Okafor', "unknown label 'cancer' (one of: benign, malignant, normal, "
                                     'not usable)'),
    ('a.png', 'benign', '   ', "a review needs the reviewer's name"),
    ('a.png', 'benign', 'x' * 81, "a reviewer's name of 81 characters (at most 80)"),
    ('../../etc/passwd', 'benign', 'Dr Okafor',
     "'../../etc/passwd' is not an image batch inference run run-1 answered"),
])
def test_a_review_that_cannot_be_is_refused(tmp_path, file, label, reviewer, message):
  with pytest.raises(reviews.ReviewError) as raised:
    reviews.record_review(str(tmp_path), 'run-1', file, label, reviewer, ANSWERS)
  assert str(raised.value) == message
  assert not os.path.exists(tmp_path / reviews.REVIEWS_FOLDER)


def test_the_next_span_is_one_above_the_newest_and_never_beside_class_folders(tmp_path):
  assert export.next_span(str(tmp_path / 'new')) == 1
  (tmp_path / 'spans' / 'span-1' / 'benign').mkdir(parents=True)
  (tmp_path / 'spans' / 'span-3' / 'benign').mkdir(parents=True)
  assert export.next_span(str(tmp_path / 'spans')) == 4
  (tmp_path / 'flat' / 'benign').mkdir(parents=True)
  with pytest.raises(reviews.ReviewError, match=r'has class folders at its top \(benign\): move '
                     r'them into .*/flat/span-1/ first'):
    export.next_span(str(tmp_path / 'flat'))


def test_reviewed_answers_become_the_next_span_the_pipeline_ingests(
    tmp_path, python, project_root, run_pipeline):
  data_root = tmp_path / 'spans'
  synthetic.generate_dataset(str(data_root / 'span-1'), images_per_class=15, image_size=64,
                             seed=7)
  output_dir = tmp_path / 'output'
  run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0')
  # New images to classify: two of each class, one in a nested folder.
  new = tmp_path / 'new'
  synthetic.generate_dataset(str(new / 'made'), images_per_class=2, image_size=64, seed=8)
  infer_dir = tmp_path / 'to_classify'
  (infer_dir / 'nested').mkdir(parents=True)
  for name in features.LABEL_NAMES:
    shutil.copy(new / 'made' / name / f'{name} (1).png', infer_dir / f'{name}.png')
    shutil.copy(new / 'made' / name / f'{name} (2).png', infer_dir / 'nested' / f'{name}.png')
  completed = subprocess.run(
      [python, 'local_runner.py', '--output-dir', str(output_dir), '--infer-dir', str(infer_dir)],
      cwd=project_root, capture_output=True, text=True, timeout=900, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  [run] = inference.inference_runs(metadata_store.open_store(str(output_dir / 'metadata.sqlite')))

  def review(*arguments):
    return subprocess.run([python, '-m', 'review', *arguments, '--output-dir', str(output_dir)],
                          cwd=project_root, capture_output=True, text=True, timeout=300,
                          check=False)

  labelled = review('label', '--reviewer', 'Dr Okafor', 'nested/malignant.png', 'malignant')
  assert labelled.returncode == 0, labelled.stderr
  assert labelled.stdout.startswith('nested/malignant.png: malignant (Dr Okafor, 20')
  answers = export.answers_of(run)
  for file, label in (('benign.png', 'benign'), ('normal.png', 'normal'),
                      ('nested/normal.png', 'benign'),  # a correction
                      ('malignant.png', reviews.NOT_USABLE)):
    reviews.record_review(str(output_dir), run['run'], file, label, 'R. Li', answers)
  refused = review('label', '--reviewer', 'R. Li', 'benign.png', 'tumour')
  assert (refused.returncode, refused.stderr.strip()) == (2, (
      "python -m review: error: unknown label 'tumour' (one of: benign, malignant, normal, not "
      'usable)'))

  exported = review('export', '--to', str(data_root))
  assert exported.returncode == 0, exported.stderr
  assert exported.stdout.startswith(f'span 2 written to {data_root}/span-2: benign 2, '
                                    'malignant 1, normal 1; 1 not usable, left out;')
  written = {os.path.relpath(os.path.join(folder, name), data_root / 'span-2')
             for folder, _, names in os.walk(data_root / 'span-2') for name in names}
  assert written == {'benign/benign.png', 'benign/nested__normal.png',
                     'malignant/nested__malignant.png', 'normal/normal.png'}

  # In ML Metadata: the export, in the inference run, from the model that made the calls.
  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  [span] = store.get_artifacts_by_type(export.REVIEWED_SPAN_TYPE)
  assert span.uri == str(data_root / 'span-2')
  assert json.loads(span.custom_properties['label_counts'].string_value) == {
      'benign': 2, 'malignant': 1, 'normal': 1}
  assert json.loads(span.custom_properties['reviewers'].string_value) == ['Dr Okafor', 'R. Li']
  [execution] = store.get_executions_by_type(export.EXPORT_EXECUTION_TYPE)
  inputs = {event.artifact_id for event in store.get_events_by_execution_ids([execution.id])
            if event.type == event.INPUT}
  assert inputs == {run['model_id'], run['predictions_id']}
  assert [context.name for context in store.get_contexts_by_execution(execution.id)] == [
      run['run']]

  # The next run ingests span 2 as any new span (its drift from span 1 only warned about).
  run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
               '--drift', 'warn')
  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  newest = max((artifact for artifact in store.get_artifacts_by_type('Examples')
                if 'class_counts' in artifact.custom_properties), key=lambda a: a.id)
  assert metadata_store.artifact_property(newest, 'span') == 2
  counts = metadata_store.artifact_property(newest, 'class_counts')
  assert {name: sum(split.get(name, 0) for split in counts.values())
          for name in features.LABEL_NAMES} == {'benign': 2, 'malignant': 1, 'normal': 1}
