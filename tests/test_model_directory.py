"""The one answer to which version is the newest (serving/model_directory.py): the Pusher numbers
a new version above every numbered folder; the server, the CLI and `--infer-dir` choose among the
folders that hold a SavedModel (test_serving.py and test_batch_inference.py load them)."""

import pytest

from serving import model_directory


@pytest.mark.quick
def test_a_new_version_is_numbered_above_every_numbered_folder(tmp_path, monkeypatch):
  base = tmp_path / 'breast_ultrasound'
  monkeypatch.setattr(model_directory.time, 'time', lambda: 1000.7)
  assert model_directory.next_version(str(base)) == '1000'  # nothing pushed yet: Unix seconds
  (base / '5').mkdir(parents=True)
  assert model_directory.next_version(str(base)) == '1000'
  # A numbered folder without a SavedModel (a copy by hand, half done) still takes its number.
  (base / '2000').mkdir()
  for odd in ('3000.partial', '²', '٣', '.4000.incomplete', 'tmp'):  # never versions
    (base / odd).mkdir()
  assert model_directory.next_version(str(base)) == '2001'
  # Only folders with a SavedModel are versions to serve.
  assert model_directory.list_versions(str(base)) == []
  (base / '5' / 'saved_model.pb').write_bytes(b'')
  assert model_directory.list_versions(str(base)) == [5]
  assert model_directory.find_version(str(base)) == (5, str(base / '5'))
