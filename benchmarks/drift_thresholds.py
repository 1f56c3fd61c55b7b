"""What the drift check's distances are by chance, and for a scanner's gain change, on real images.

    python -m benchmarks.drift_thresholds --data-root ../shared/data/busi [--pairs 20]

Two spans drawn at random from one folder differ only by chance; the drift thresholds
(`--max-label-drift`, `--max-feature-drift`) must sit above what chance gives, for spans of the
size a clinic adds. For each size (the images of a span's training split, which DriftCheck
compares) this draws `--pairs` pairs of
disjoint random spans and prints the median and 95th percentile of TFDV's L-infinity distance of
the label distributions and of the largest Jensen–Shannon divergence of the image-content
features, the same comparators DriftCheck runs (components/drift_check/). Then the second span of
each pair with every grey level scaled by a gain (a darker or brighter scanner): how often the
threshold catches it. The features come from ImageExampleGen's own code
(`image_files.content_features`).
"""

import argparse
import os
import sys
from typing import Dict, List

import numpy as np
import pandas as pd
import tensorflow_data_validation as tfdv
from PIL import Image
from tensorflow_metadata.proto.v0 import schema_pb2

from components.drift_check.component import DIVERGENCE_FEATURES, measure_drift
from inputs import image_files
from models import features
from pipeline import configs

SPAN_SIZES = (30, 60, 120, 240)
GAINS = (0.9, 0.8, 0.7)


def image_rows(data_root: str, gain: float = 1.0) -> List[Dict]:
  rows = []
  for label in features.LABEL_NAMES:
    folder = os.path.join(data_root, label)
    for name in sorted(os.listdir(folder)):
      entry = image_files.classify_name(f'{label}/{name}', os.path.join(folder, name))
      if entry['kind'] != 'image':
        continue
      with Image.open(os.path.join(folder, name)) as image:
        pixels = image_files.rgb_pixels(image).astype(np.float32)
      if gain != 1.0:
        pixels = np.clip(pixels * gain, 0, 255)
      rows.append({features.LABEL_NAME_KEY: label, features.WIDTH_KEY: pixels.shape[1],
                   features.HEIGHT_KEY: pixels.shape[0],
                   **image_files.content_features(Image.fromarray(pixels.astype(np.uint8)))})
  return rows


def schema() -> schema_pb2.Schema:
  made = schema_pb2.Schema()
  made.feature.add(name=features.LABEL_NAME_KEY, type=schema_pb2.BYTES)
  for name in DIVERGENCE_FEATURES:
    made.feature.add(name=name, type=schema_pb2.FLOAT)
  return made


def distances(first: pd.DataFrame, second: pd.DataFrame, config) -> Dict[str, float]:
  rows = measure_drift(tfdv.generate_statistics_from_dataframe(second),
                       tfdv.generate_statistics_from_dataframe(first), schema(),
                       config.max_label_drift, config.max_feature_drift)
  label = [row['distance'] for row in rows if row['feature'] == features.LABEL_NAME_KEY]
  content = [row['distance'] for row in rows if row['feature'] in features.CONTENT_KEYS]
  return {'label': label[0] if label else 0.0, 'content': max(content, default=0.0)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-root', required=True)
  parser.add_argument('--pairs', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  config = configs.PipelineConfig()
  plain = pd.DataFrame(image_rows(args.data_root))
  darker = {gain: pd.DataFrame(image_rows(args.data_root, gain)) for gain in GAINS}
  rng = np.random.default_rng(args.seed)
  print(f'{len(plain)} images; thresholds: label {config.max_label_drift}, '
        f'features {config.max_feature_drift}; {args.pairs} pairs of disjoint random spans')
  print(f'{"images":>6} {"label L-inf: median":>20} {"p95":>6} {"content JSD: median":>20} '
        f'{"p95":>6} {"false alarms":>13} '
        + ' '.join(f'{"gain " + str(gain) + " caught":>15}' for gain in GAINS))
  for size in SPAN_SIZES:
    if 2 * size > len(plain):
      continue
    chance, caught = [], {gain: 0 for gain in GAINS}
    for _ in range(args.pairs):
      order = rng.permutation(len(plain))
      first, second = order[:size], order[size:2 * size]
      chance.append(distances(plain.iloc[first], plain.iloc[second], config))
      for gain in GAINS:
        found = distances(plain.iloc[first], darker[gain].iloc[second], config)
        caught[gain] += found['content'] > config.max_feature_drift
    label = np.array([row['label'] for row in chance])
    content = np.array([row['content'] for row in chance])
    alarms = int(np.sum((label > config.max_label_drift) | (content > config.max_feature_drift)))
    print(f'{size:>6} {np.median(label):>20.3f} {np.percentile(label, 95):>6.3f} '
          f'{np.median(content):>20.3f} {np.percentile(content, 95):>6.3f} '
          f'{alarms:>10}/{args.pairs:<2} '
          + ' '.join(f'{caught[gain]:>12}/{args.pairs:<2}' for gain in GAINS))
  return 0


if __name__ == '__main__':
  sys.exit(main())
