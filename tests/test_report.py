"""The run report: written by every `local_runner.py` run, each section with its pictures, the
blessing decision against each threshold, and rendered by headless Chromium."""

import html
import os
import re
import shutil
import subprocess

import conftest
from PIL import Image

from runs import metadata_store, report, report_facts, summary

SECTIONS = ('Data', 'Sample images per class', 'Augmented samples', 'Data validation',
            'Training', 'Operating point', 'Evaluation', 'Where the model looks', 'Blessing',
            'Serving check', 'Pushed', 'Components')


def pictures_of(page: str):
  return re.findall(r'<img[^>]* src="([^"]+)"', page)


def read_page(path) -> str:
  with open(path, encoding='utf-8') as handle:
    return handle.read()


def test_each_run_writes_the_report_with_every_section(pipeline_runs, tmp_path):
  index = pipeline_runs['output_dir'] / 'report' / 'index.html'
  assert all(f'report: {index}' in stdout for stdout in pipeline_runs['stdout'])
  page = read_page(index)
  for section in SECTIONS:
    assert f'<h2>{section}</h2>' in page, section
  pictures = pictures_of(page)
  assert set(pictures) == {'samples.png', 'augmented.png', 'contact_sheet.png',
                           'training_curves.png', 'confusion_matrix.png',
                           'operating_point_confusion_matrix.png', 'malignant_roc.png',
                           'reliability.png', 'where_the_model_looks.png'}
  for picture in pictures:
    with Image.open(index.parent / picture) as image:
      assert image.format == 'PNG' and image.width > 300 and image.height > 200
  # What the served model answers: the two answers, kept apart.
  assert ('<code>most_probable_class</code> with its calibrated probability '
          '(<code>most_probable_probability</code>), and <code>decision</code>') in page
  # Counts per class and split, as ExampleGen recorded them.
  first = pipeline_runs['stdout'][0]
  assert '<td>train</td><td>12</td><td>12</td><td>12</td><td>36</td>' in page, first
  assert 'no anomalies' in page and 'Data validation gate: <span class="pass">passed' in page
  # The sixth run's serving check failed it (test_serving_check.py).
  assert 'Nothing pushed: the serving check failed.' in page
  # The fifth run's evaluation against the thresholds it was given: it fails the calibration
  # gate alone.
  fifth_run = metadata_store.run_contexts(
      metadata_store.open_store(pipeline_runs['metadata_path']))[4].name
  page = read_page(report.write_report(pipeline_runs['metadata_path'], str(tmp_path), fifth_run))
  assert 'sparse_categorical_accuracy ≥ 0' in page and 'malignant_sensitivity ≥ 0' in page
  assert re.search(r'<tr><td>expected_calibration_error ≤ 0</td><td>[0-9.]+</td>'
                   r'<td><span class="fail">failed', page)
  assert '<p class="fail">Not blessed</p>' in page
  # The comparison with the baseline (run 4's model), paired on the same eval images.
  assert ("accuracy against the baseline model's on the same eval images: lower end of the 95 % "
          'interval of the difference ≥ −1') in html.unescape(page)


def test_report_of_a_refused_model_says_why(pipeline_runs, tmp_path):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  third_run = metadata_store.run_contexts(store)[2].name
  page = read_page(report.write_report(pipeline_runs['metadata_path'], str(tmp_path), third_run))
  assert '<p class="fail">Not blessed</p>' in page
  row = re.search(r'<tr><td>sparse_categorical_accuracy ≥ 1.01</td><td>([0-9.]+)</td>'
                  r'<td><span class="(\w+)">', page)
  assert row and row.group(2) == 'fail' and float(row.group(1)) < 1.01
  assert 'Nothing pushed: the model was not blessed.' in page
  # The Trainer was cached in that run; its curves are still those of the model evaluated.
  assert 'training_curves.png' in pictures_of(page)
  for picture in pictures_of(page):
    assert os.path.isfile(tmp_path / picture)


def test_first_run_report_names_the_pushed_version(pipeline_runs, tmp_path):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  first_run = metadata_store.run_contexts(store)[0].name
  page = read_page(report.write_report(pipeline_runs['metadata_path'], str(tmp_path), first_run))
  version = pipeline_runs['serving_after_first'][0]
  assert f'version {version}' in page and '<p class="pass">Blessed</p>' in page
  assert 'no baseline yet' in html.unescape(page)


def test_a_cached_rerun_keeps_the_pictures_and_a_new_evaluation_redraws_them(pipeline_runs,
                                                                            tmp_path):
  store = metadata_store.open_store(pipeline_runs['metadata_path'])
  first_run, cached_rerun, third_run = [
      context.name for context in metadata_store.run_contexts(store)[:3]]

  def report_of(run_id):
    page = read_page(report.write_report(pipeline_runs['metadata_path'], str(tmp_path), run_id))
    pictures = pictures_of(page)
    return page, {picture: os.stat(tmp_path / picture).st_mtime_ns for picture in pictures}

  first_page, first_pictures = report_of(first_run)
  cached_page, cached_pictures = report_of(cached_rerun)
  # Every component of the second run was cached: the same artifacts, so the same pictures,
  # not drawn again; the page itself is the second run's.
  assert cached_pictures == first_pictures and len(first_pictures) == 9
  assert cached_rerun in cached_page and cached_rerun not in first_page
  # The third run's Evaluator ran again (a new threshold): its pictures are drawn anew.
  _, third_pictures = report_of(third_run)
  assert set(third_pictures) == set(first_pictures)
  assert third_pictures['malignant_roc.png'] != first_pictures['malignant_roc.png']


def test_report_renders_in_headless_chromium(python, project_root, pipeline_runs, tmp_path):
  if shutil.which('chromium') is None:
    conftest.require_service("Debian's chromium", '.ci/run installs it, or apt-get install chromium')
  screenshot = tmp_path / 'report.png'
  completed = subprocess.run(
      [python, '-m', 'runs.report', '--output-dir', str(pipeline_runs['output_dir']),
       '--screenshot', str(screenshot)],
      cwd=project_root, capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  with Image.open(screenshot) as image:
    assert image.size == (1200, 5000)
    grey = image.convert('L')
    # A page with pictures, not a blank or an error page: many distinct grey levels.
    assert len(set(grey.getdata())) > 100


def test_file_names_cannot_break_the_page():
  hostile = '<img src=x onerror="alert(1)">.png'
  facts = report_facts.ReportFacts(
      run=summary.RunSummary(run_id='<b>run</b>', components=[],
                             skipped_files=[{'file': f'benign/{hostile}', 'reason': 'not "an" image'}]),
      metadata_location='/tmp/<metadata>.sqlite', image_size=180, network='seed', epochs=15,
      batch_size=32)
  page = report.render_report(facts, pictures={})
  assert hostile not in page and '<b>run</b>' not in page
  assert f'benign/{hostile}' in html.unescape(page) and '&lt;b&gt;run&lt;/b&gt;' in page
  assert '<h2>Data</h2>' in page and '1 input files were skipped' in page
