"""A reviewer's labels for the answers of a batch inference run, kept beside the run's outputs.

A clinician reviewing what the model decided says, per image, what it is: benign, malignant,
normal, or not usable (no label can be given: a blurred frame, the wrong organ); or flags it for
a second look (someone else should decide) until a later review labels it. A review is
kept with who gave it (a name typed once, no accounts), when, and the model's answer it was given
on, as one small JSON file per image under `<output-dir>/reviews/<inference run>/`, written
atomically (a temporary file renamed over the old one), so a killed process loses at most the
review it was writing and a reader never sees half of one. The newest review of an image is the
one that counts; the page and `python -m review label` both write through `record_review`.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from typing import Any, Dict, List, Optional

from models import features

NOT_USABLE = 'not usable'
SECOND_LOOK = 'second look'
REVIEW_LABELS = (*features.LABEL_NAMES, NOT_USABLE, SECOND_LOOK)
# Reviews that give no class, and so leave their image out of an export.
NO_CLASS = (NOT_USABLE, SECOND_LOOK)
REVIEWS_FOLDER = 'reviews'
MAX_REVIEWER_CHARACTERS = 80


class ReviewError(ValueError):
  """A review that cannot be recorded; the message says why."""


@dataclasses.dataclass(frozen=True)
class Review:
  run: str  # the batch inference run whose answer was reviewed
  file: str  # the image, relative to the run's input folder
  label: str  # one of REVIEW_LABELS
  reviewer: str
  reviewed_at: str  # ISO 8601, UTC
  answer: Dict[str, Any]  # the model's answer as the run recorded it (predictions.jsonl)


def run_folder(output_dir: str, run: str) -> str:
  return os.path.join(output_dir, REVIEWS_FOLDER, run)


def _review_path(output_dir: str, run: str, file: str) -> str:
  # Named by a digest, never by the image's own name: no path a reviewer or a request gives
  # reaches the file system.
  digest = hashlib.sha256(file.encode('utf-8')).hexdigest()[:32]
  return os.path.join(run_folder(output_dir, run), f'{digest}.json')


def write_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same folder, flushed to disk and
  renamed over it: the file is the old one or the new one, never half of either."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, prefix='.', suffix='.partial')
  try:
    with os.fdopen(handle, 'w', encoding='utf-8') as stream:
      stream.write(text)
      stream.flush()
      os.fsync(stream.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def record_review(output_dir: str, run: str, file: str, label: str, reviewer: str,
                  answers: Dict[str, Dict[str, Any]],
                  now: Optional[datetime.datetime] = None) -> Review:
  """Records `reviewer`'s `label` for `file` of `run`, whose answers (by file) are `answers`;
  ReviewError for a label, reviewer or file that cannot be."""
  if label not in REVIEW_LABELS:
    raise ReviewError(f'unknown label {label!r} (one of: {", ".join(REVIEW_LABELS)})')
  reviewer = ' '.join(reviewer.split())
  if not reviewer:
    raise ReviewError('a review needs the reviewer\'s name')
  if len(reviewer) > MAX_REVIEWER_CHARACTERS:
    raise ReviewError(f'a reviewer\'s name of {len(reviewer)} characters (at most '
                      f'{MAX_REVIEWER_CHARACTERS})')
  if file not in answers:
    raise ReviewError(f'{file!r} is not an image batch inference run {run} answered')
  when = (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec='seconds')
  review = Review(run, file, label, reviewer, when, answers[file])
  write_atomically(_review_path(output_dir, run, file),
                   json.dumps(dataclasses.asdict(review), sort_keys=True))
  return review


def read_reviews(output_dir: str, run: str) -> List[Review]:
  """The run's reviews, the newest of each image, sorted by file."""
  folder = run_folder(output_dir, run)
  if not os.path.isdir(folder):
    return []
  reviews = []
  for name in sorted(os.listdir(folder)):
    if name.endswith('.json') and not name.startswith('.'):
      with open(os.path.join(folder, name), encoding='utf-8') as handle:
        reviews.append(Review(**json.load(handle)))
  return sorted(reviews, key=lambda review: review.file)
