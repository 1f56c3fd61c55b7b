"""Reviews of batch inference answers and their export as the next span: a reviewer's labels are
kept atomically with who and when, the export writes the reviewed images as `span-N/<label>/`,
records it in ML Metadata with lineage to the model that made the calls, and the next pipeline
run ingests it like any new span."""

import datetime
import io
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import urllib.parse
import zlib

import numpy as np
import pytest
from PIL import Image

from data import dicom, synthetic
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
                                     'not usable, second look)'),
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


def _page_percent(text: str, before: str) -> float:
  """The probability the page wrote as `<before> 12.3 %`."""
  return float(re.search(re.escape(before) + r' ([0-9.]+) %', text).group(1)) / 100


def test_a_reviewer_session_in_the_browser_becomes_the_next_span_the_pipeline_ingests(
    tmp_path, python, project_root, run_pipeline):
  """A person's session on the page in headless Chromium, driven through the DevTools protocol:
  classify uploaded files (a PNG and a DICOM file, their answers read off the page and compared
  with batch inference's for the same pixels, and a text file), open a batch inference run, flag
  an image for a second look, label images with the keys and the buttons; then the export as
  the next span, its lineage in ML Metadata, and the next run ingesting it. With
  REVIEW_SCREENSHOTS=FOLDER the page's screenshots are kept there (docs/)."""
  import conftest  # pylint: disable=g-import-not-at-top
  import devtools  # pylint: disable=g-import-not-at-top
  browser = devtools.Browser.start(str(tmp_path / 'chromium'))
  if browser is None:
    conftest.require_service("Debian's chromium", '.ci/run installs it, or apt-get install chromium')
  screenshots = os.environ.get('REVIEW_SCREENSHOTS')
  data_root = tmp_path / 'spans'
  synthetic.generate_dataset(str(data_root / 'span-1'), images_per_class=15, image_size=64,
                             seed=7)
  output_dir = tmp_path / 'output'
  run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
               *conftest.SMALL_NETWORK)
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
  answers = export.answers_of(run)

  station = subprocess.Popen(
      [python, '-m', 'review', 'serve', '--output-dir', str(output_dir), '--port', '0'],
      cwd=project_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    listening = station.stdout.readline()
    assert listening.startswith('review station on http://127.0.0.1:'), listening
    page = listening.split()[-1]
    with browser:
      browser.open(page)

      def answer_of_upload(count):
        """The newest upload's answer on the page, once the page shows `count` uploads."""
        return browser.wait_for(
            f"(items => items.length === {count} && !items[0].textContent.endsWith('classifying…')"
            " ? items[0].querySelector('span').textContent : null)"
            "([...document.querySelectorAll('#uploaded li')])")

      # Classify a dropped-in image: the same answer as batch inference gave for the same file.
      browser.choose_files('#upload', [str(infer_dir / 'benign.png')])
      said = answer_of_upload(1)
      batch = answers['benign.png']
      assert said.startswith(f' {batch["decision"]}; most probable {batch["most_probable_class"]} ')
      for before, value in (('most probable ' + batch['most_probable_class'],
                             batch['most_probable_probability']),
                            ('malignant', batch['malignant_probability']),
                            ('threshold', batch['malignant_threshold'])):
        assert _page_percent(said, before) == pytest.approx(value, abs=0.0011), (before, said)
      assert browser.wait_for("[...document.querySelectorAll('#uploaded img')]"
                              ".filter(image => image.naturalWidth > 0).length") == 2
      (tmp_path / 'notes.txt').write_text('not an image at all')
      browser.choose_files('#upload', [str(tmp_path / 'notes.txt')])
      assert answer_of_upload(2) == (
          " not classified: not an image: Pillow cannot identify the file's format")
      # normal.png's pixels in a scanner's DICOM file, named as scanners name them: its answer.
      dicom.write_ultrasound(str(tmp_path / 'IM0001'), np.asarray(Image.open(infer_dir /
                                                                             'normal.png')))
      browser.choose_files('#upload', [str(tmp_path / 'IM0001')])
      said = answer_of_upload(3)
      batch = answers['normal.png']
      assert said.startswith(f' {batch["decision"]}; most probable {batch["most_probable_class"]} ')
      assert browser.wait_for("[...document.querySelectorAll('#uploaded li')[0]"
                              ".querySelectorAll('img')].filter(i => i.naturalWidth > 0).length") == 2
      if screenshots:
        browser.wait_for("document.querySelector('#overlay').naturalWidth")
        browser.screenshot(os.path.join(screenshots, 'review-classify.png'))

      # Open the batch run; one image: its decision and overlay; a label needs a name first.
      browser.choose('#run', run['run'])
      assert browser.wait_for("document.querySelectorAll('#answers li').length") == 6

      def open_answer(file):
        index = browser.evaluate(
            "[...document.querySelectorAll('#answers li')].find(item => "
            f"item.querySelector('.name').textContent === {json.dumps(file)}).dataset.index")
        browser.click(f'#answers li[data-index="{index}"]')
        assert browser.text('#file') == file
        assert browser.text('#decision').startswith(answers[file]['decision'] + ' (malignant when')

      def recorded(file, label):
        browser.wait_for(f"document.querySelector('#message').textContent === "
                         f"{json.dumps(f'{file}: {label} recorded.')}")

      open_answer('nested/benign.png')
      assert browser.wait_for("document.querySelector('#overlay').naturalWidth") == 48
      browser.press('f')
      assert browser.text('#message') == (
          'Type your name first: each review is kept with who gave it.')
      browser.click('#reviewer')
      browser.type('Dr Okafor')
      open_answer('nested/benign.png')  # a click on the list: the name is kept
      browser.press('f')  # a second look: someone else should decide
      recorded('nested/benign.png', reviews.SECOND_LOOK)

      # Back later: the name is remembered, the flagged image comes first; labels by key and
      # by button.
      browser.open(page)
      assert browser.wait_for("document.querySelectorAll('#answers li').length") == 6
      assert browser.evaluate("document.querySelector('#reviewer').value") == 'Dr Okafor'
      assert browser.text('#answers li[data-index="0"]') == (
          f'nested/benign.png{answers["nested/benign.png"]["decision"]} '
          f'{100 * answers["nested/benign.png"]["malignant_probability"]:.1f} %'
          'second look asked by Dr Okafor')
      open_answer('nested/malignant.png')
      browser.click('#labels button[data-label="malignant"]')
      recorded('nested/malignant.png', 'malignant')
      open_answer('benign.png')
      browser.press('1')
      recorded('benign.png', 'benign')
      assert browser.text('#progress') == '2 of 6 reviewed'
      if screenshots:
        open_answer('nested/benign.png')
        browser.wait_for("document.querySelector('#overlay').naturalWidth")
        browser.screenshot(os.path.join(screenshots, 'review-station.png'))
  finally:
    station.terminate()
    station.wait(timeout=60)
  kept = {review.file: (review.label, review.reviewer)
          for review in reviews.read_reviews(str(output_dir), run['run'])}
  assert kept == {'nested/benign.png': (reviews.SECOND_LOOK, 'Dr Okafor'),
                  'nested/malignant.png': ('malignant', 'Dr Okafor'),
                  'benign.png': ('benign', 'Dr Okafor')}

  def review(*arguments):
    return subprocess.run([python, '-m', 'review', *arguments, '--output-dir', str(output_dir)],
                          cwd=project_root, capture_output=True, text=True, timeout=300,
                          check=False)

  labelled = review('label', '--reviewer', 'R. Li', 'normal.png', 'normal')
  assert labelled.returncode == 0, labelled.stderr
  assert labelled.stdout.startswith('normal.png: normal (R. Li, 20')
  for file, label in (('nested/normal.png', 'benign'),  # a correction
                      ('malignant.png', reviews.NOT_USABLE)):
    reviews.record_review(str(output_dir), run['run'], file, label, 'R. Li', answers)
  refused = review('label', '--reviewer', 'R. Li', 'benign.png', 'tumour')
  assert (refused.returncode, refused.stderr.strip()) == (2, (
      "python -m review: error: unknown label 'tumour' (one of: benign, malignant, normal, not "
      'usable, second look)'))

  exported = review('export', '--to', str(data_root))
  assert exported.returncode == 0, exported.stderr
  assert exported.stdout.startswith(
      f'span 2 written to {data_root}/span-2: benign 2, malignant 1, normal 1; left out: 1 not '
      'usable, 1 flagged for a second look;')
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
  assert json.loads(span.custom_properties['left_out'].string_value) == {
      reviews.NOT_USABLE: 1, reviews.SECOND_LOOK: 1}
  assert json.loads(span.custom_properties['reviewers'].string_value) == ['Dr Okafor', 'R. Li']
  [execution] = store.get_executions_by_type(export.EXPORT_EXECUTION_TYPE)
  inputs = {event.artifact_id for event in store.get_events_by_execution_ids([execution.id])
            if event.type == event.INPUT}
  assert inputs == {run['model_id'], run['predictions_id']}
  assert sorted(context.name for context in store.get_contexts_by_execution(execution.id)) == [
      run['run'], 'breast-ultrasound-inference']
  assert [found['run'] for found in inference.inference_runs(store)] == [run['run']]

  # The next run ingests span 2 as any new span (its drift from span 1 only warned about).
  run_pipeline(python, project_root, data_root, output_dir, '--min-accuracy', '0',
               '--drift', 'warn', *conftest.SMALL_NETWORK)
  store = metadata_store.open_store(str(output_dir / 'metadata.sqlite'))
  newest = max((artifact for artifact in store.get_artifacts_by_type('Examples')
                if 'class_counts' in artifact.custom_properties), key=lambda a: a.id)
  assert metadata_store.artifact_property(newest, 'span') == 2
  counts = metadata_store.artifact_property(newest, 'class_counts')
  assert {name: sum(split.get(name, 0) for split in counts.values())
          for name in features.LABEL_NAMES} == {'benign': 2, 'malignant': 1, 'normal': 1}


XSS_NAME = '<img src=x onerror=alert(1)>.png'


@pytest.fixture
def review_app(tmp_path):
  """The page's application over one made-up run: two answered images, one named as an attack."""
  from review import app  # pylint: disable=g-import-not-at-top
  input_dir = tmp_path / 'images'
  input_dir.mkdir()
  for name in ('a.png', XSS_NAME):
    Image.new('L', (8, 6), 90).save(input_dir / name)
  Image.new('L', (8, 6), 200).save(tmp_path / 'secret.png')  # an image no run answered
  predictions = tmp_path / 'predictions'
  predictions.mkdir()
  rows = [{'path': name, 'decision': 'benign', 'malignant_probability': 0.1, 'review': False}
          for name in ('a.png', XSS_NAME)]
  (predictions / 'predictions.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  run = {'run': 'run-1', 'input': str(input_dir), 'model_version': '7', 'images': 2,
         'predictions': str(predictions / 'predictions.csv'), 'state': 'complete'}
  cards = tmp_path / 'output' / 'model_cards' / 'breast_ultrasound'
  (cards / '7').mkdir(parents=True)
  (cards / '7' / 'model_card.html').write_text('<html><style>p {}</style><p>card 7</p></html>')
  (tmp_path / 'output' / 'model_cards' / 'model_card.html').write_text('not a card')
  return app.ReviewApplication(str(tmp_path / 'output'), lambda: [run], model_card_dir=str(cards))


def call(application, method, path, query='', body=b'', length=None):
  import io  # pylint: disable=g-import-not-at-top
  answer = {}

  def start_response(status, headers):
    answer.update(status=int(status.split()[0]), headers=dict(headers))

  payload = b''.join(application({
      'REQUEST_METHOD': method, 'PATH_INFO': path, 'QUERY_STRING': query,
      'CONTENT_LENGTH': str(len(body) if length is None else length),
      'wsgi.input': io.BytesIO(body)}, start_response))
  return answer['status'], answer['headers'], payload


def test_the_page_allows_no_inline_script_and_writes_names_as_text(review_app):
  from review import app  # pylint: disable=g-import-not-at-top
  status, headers, page = call(review_app, 'GET', '/')
  assert status == 200 and headers['Content-Security-Policy'] == app.CONTENT_SECURITY_POLICY
  assert "script-src 'self'" in app.CONTENT_SECURITY_POLICY and 'unsafe' not in \
      app.CONTENT_SECURITY_POLICY
  assert b'<script src="/static/review.js" defer></script>' in page
  assert page.count(b'<script') == 1 and not re.search(rb'\son[a-z]+\s*=', page)  # no handlers
  script = call(review_app, 'GET', '/static/review.js')[2].decode()
  assert 'innerHTML' not in script and 'insertAdjacentHTML' not in script
  assert 'eval(' not in script and 'document.write' not in script
  status, headers, answers = call(review_app, 'GET', '/api/runs/run-1/answers')
  assert status == 200 and headers['Content-Type'] == 'application/json'
  assert [row['file'] for row in json.loads(answers)] == ['a.png', XSS_NAME]


@pytest.mark.parametrize('path, query', [
    ('/api/runs/run-1/image', 'file=../secret.png'),
    ('/api/runs/run-1/image', 'file=' + urllib.parse.quote(str(pathlib.Path('/tmp')))),
    ('/api/runs/run-1/image', 'file=../../../etc/passwd'),
    ('/api/runs/run-1/image', 'file=/etc/passwd'),
    ('/api/runs/run-1/image', 'file=images/a.png'),
    ('/api/runs/..%2F..%2Fetc/answers', ''),
    ('/static/../app.py', ''),
    ('/static/reviews.py', ''),
    ('/model-cards/..', ''),
    ('/model-cards/8', ''),
])
def test_no_path_from_a_request_reaches_the_file_system(review_app, path, query):
  status, _, body = call(review_app, 'GET', path, query)
  assert status == 404, body
  assert 'root:' not in body.decode('latin-1')


def test_the_model_card_of_a_published_version_is_served_with_no_script_allowed(review_app):
  status, headers, page = call(review_app, 'GET', '/model-cards/7')
  assert (status, page) == (200, b'<html><style>p {}</style><p>card 7</p></html>')
  assert headers['Content-Security-Policy'] == "default-src 'none'; style-src 'unsafe-inline'; " \
      'img-src data:'


def test_an_upload_is_limited_and_a_station_without_a_model_says_so(review_app):
  from review import app  # pylint: disable=g-import-not-at-top
  status, _, body = call(review_app, 'POST', '/api/classify', body=b'x',
                         length=app.MAX_UPLOAD_BYTES + 1)
  assert (status, json.loads(body)['error']) == (
      413, f'an image of {app.MAX_UPLOAD_BYTES + 1} bytes (at most {app.MAX_UPLOAD_BYTES})')
  # A small file whose header claims 6,000 × 6,000 pixels: refused before it is decoded.
  buffer = io.BytesIO()
  Image.new('L', (1, 1)).save(buffer, 'PNG')
  png = bytearray(buffer.getvalue())
  png[16:24] = struct.pack('>II', 6000, 6000)
  png[29:33] = struct.pack('>I', zlib.crc32(bytes(png[12:29])))
  status, _, body = call(review_app, 'POST', '/api/classify', body=bytes(png))
  assert (status, json.loads(body)['error']) == (
      400, f'too many pixels: the header says 6000 × 6000 (at most '
           f'{features.MAX_IMAGE_PIXELS} pixels are decoded)')
  status, _, body = call(review_app, 'GET', '/api/runs/run-1/explanation', 'file=a.png')
  assert (status, json.loads(body)['error']) == (
      404, 'this review station serves no model: no overlays, no uploads')


def test_an_answered_image_is_served_as_png(review_app):
  status, headers, body = call(review_app, 'GET', '/api/runs/run-1/image',
                               'file=' + urllib.parse.quote(XSS_NAME))
  assert (status, headers['Content-Type']) == (200, 'image/png')
  assert body.startswith(b'\x89PNG')


def test_a_review_request_is_limited_checked_and_recorded(review_app, tmp_path):
  from review import app  # pylint: disable=g-import-not-at-top
  post = lambda body, length=None: call(review_app, 'POST', '/api/runs/run-1/reviews',
                                        body=body, length=length)
  status, _, body = post(b'x', length=app.MAX_REQUEST_BYTES + 1)
  assert (status, json.loads(body)) == (413, {
      'error': f'a request body of {app.MAX_REQUEST_BYTES + 1} bytes (at most '
               f'{app.MAX_REQUEST_BYTES})'})
  assert post(b'{not json')[0] == 400
  assert post(b'["a.png"]')[0] == 400
  status, _, body = post(json.dumps({'file': 'a.png', 'label': 'tumour',
                                     'reviewer': 'R. Li'}).encode())
  assert (status, json.loads(body)['error']) == (400, "unknown label 'tumour' (one of: benign, "
                                                      'malignant, normal, not usable, second '
                                                      'look)')
  status, _, body = post(json.dumps({'file': XSS_NAME, 'label': 'normal',
                                     'reviewer': '<b>R. Li</b>'}).encode())
  assert status == 200 and json.loads(body)['reviewed_label'] == 'normal'
  [review] = reviews.read_reviews(str(tmp_path / 'output'), 'run-1')
  assert (review.file, review.label, review.reviewer) == (XSS_NAME, 'normal', '<b>R. Li</b>')


def test_the_page_in_headless_chromium_lists_the_answers_and_shows_names_as_text(review_app):
  """A real browser runs the page's script against the application: the answers are listed,
  the first shown with its decision, and a file named as an HTML element is text, not an
  element."""
  import threading  # pylint: disable=g-import-not-at-top
  import conftest  # pylint: disable=g-import-not-at-top
  from serving import server  # pylint: disable=g-import-not-at-top
  if shutil.which('chromium') is None:
    conftest.require_service("Debian's chromium", '.ci/run installs it, or apt-get install chromium')
  listening = server.create_rest_server(review_app, '127.0.0.1', 0, threads=2,
                                        read_timeout_seconds=10, max_connections=8,
                                        max_request_bytes=65536)
  thread = threading.Thread(target=listening.run, daemon=True)
  thread.start()
  try:
    completed = subprocess.run(
        ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=8000',
         '--dump-dom', f'http://127.0.0.1:{listening.effective_port}/'],
        capture_output=True, text=True, timeout=120, check=False)
  finally:
    listening.close()
  dom = completed.stdout
  assert '<li data-index="0"' in dom and '<li data-index="1"' in dom, dom[-3000:]
  assert '<span class="name">&lt;img src=x onerror=alert(1)&gt;.png</span>' in dom
  assert '<img src=x' not in dom and 'onerror=alert(1)>' not in dom
  assert '<figcaption id="file">' in dom and 'benign (malignant when its probability' in dom
  assert '2 images, version 7' in dom  # the run, in the run selector
  assert 'version 7 (<a href="/model-cards/7" target="_blank" rel="noopener">model card</a>)' in dom
