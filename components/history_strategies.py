"""Resolver strategies over earlier runs: which examples a model trains on, which statistics the
newest span's are compared with, and which schema is pinned.

ImageExampleGen ingests one span per run (the newest span folder of the data root) and records
its number on the Examples artifact; StatisticsGen copies it onto its statistics. TFX's
SpanRangeStrategy returns every artifact of the spans in range, so a span ingested twice (its
files changed) would be trained on twice, and a rerun whose ExampleGen was cached could be
handed a newer artifact than the one it produced. These strategies also receive what this run
produced (`newest`: read, never passed on, as TFX's Airflow launcher records an artifact once
per resolver execution) and return exactly one artifact per span:

- `LatestSpansStrategy`: this run's examples, and the newest examples of each older span of the
  same data root, the newest `num_spans` spans (0: all), newest first;
- `PreviousSpanStatisticsStrategy`: the statistics of the newest span before this run's (none
  on a first span, or for a data root without spans).

`PinnedSchemaStrategy` gives CuratedSchemaGen the newest schema it inferred, or nothing when that
schema was inferred from this run's statistics (inferring again gives it back): an unchanged
rerun then sees the inputs of the run before it, and stays cached.

`WarmStartModelStrategy` gives the Trainer the newest blessed model that was not trained on this
run's newest examples: a warm-started rerun on the same span starts from what the run before it
started from, and stays cached (TFX's LatestBlessedModelStrategy would hand it the model that
run produced).

Kubeflow V2 and Vertex compile only TFX's own strategies; their runner leaves these out
(`PipelineConfig.custom_resolver_strategies`).
"""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

from components import contracts
from components.baseline_model_strategy import newest_blessed_model

EXAMPLES_KEY = 'examples'
STATISTICS_KEY = 'statistics'
NEWEST_KEY = 'newest'
_SPAN = 'span'


def span_of(artifact: types.Artifact) -> int:
  """The span of an Examples artifact (a custom property, as TFX's driver writes it) or of an
  ExampleStatistics artifact (the typed property StatisticsGen writes)."""
  if artifact.has_custom_property(_SPAN):
    return artifact.get_int_custom_property(_SPAN)
  return int(artifact.span or 0)


class LatestSpansStrategy(resolver.ResolverStrategy):
  """Inputs: `examples` (ImageExampleGen's, all of them) and `newest` (this run's)."""

  def __init__(self, num_spans: int = 0):
    self._num_spans = num_spans

  def resolve_artifacts(
      self, store, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    newest = input_dict.get(NEWEST_KEY, [])
    if not newest:
      return None
    data_root = newest[0].get_string_custom_property(contracts.DATA_ROOT_PROPERTY)
    by_span = {span_of(newest[0]): newest[0]}
    for artifact in sorted(input_dict.get(EXAMPLES_KEY, []), key=lambda found: found.id):
      span = span_of(artifact)
      if (span < span_of(newest[0]) and artifact.get_string_custom_property(
          contracts.DATA_ROOT_PROPERTY) == data_root):
        by_span[span] = artifact
    spans = sorted(by_span, reverse=True)
    if self._num_spans:
      spans = spans[:self._num_spans]
    return {EXAMPLES_KEY: [by_span[span] for span in spans], NEWEST_KEY: []}


class PreviousSpanStatisticsStrategy(resolver.ResolverStrategy):
  """Inputs: `statistics` (StatisticsGen's, all of them) and `newest` (this run's)."""

  def resolve_artifacts(
      self, store, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    newest = input_dict.get(NEWEST_KEY, [])
    current = span_of(newest[0]) if newest else 0
    older = [artifact for artifact in input_dict.get(STATISTICS_KEY, [])
             if span_of(artifact) < current]
    previous = max(older, key=lambda found: (span_of(found), found.id), default=None)
    return {STATISTICS_KEY: [previous] if previous else [], NEWEST_KEY: []}


SCHEMA_KEY = 'schema'
# On a Schema artifact CuratedSchemaGen inferred: the id of the statistics it was inferred from.
INFERRED_FROM_PROPERTY = 'inferred_from_statistics'


class PinnedSchemaStrategy(resolver.ResolverStrategy):
  """Inputs: `schema` (CuratedSchemaGen's, all of them) and `newest` (this run's statistics)."""

  def resolve_artifacts(
      self, store, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    current = {artifact.id for artifact in input_dict.get(NEWEST_KEY, [])}
    inferred = [artifact for artifact in input_dict.get(SCHEMA_KEY, [])
                if artifact.has_custom_property(INFERRED_FROM_PROPERTY)]
    pinned = max(inferred, key=lambda found: found.id, default=None)
    if pinned and pinned.get_int_custom_property(INFERRED_FROM_PROPERTY) in current:
      pinned = None  # inferred from these very statistics: inferring again gives it back
    return {SCHEMA_KEY: [pinned] if pinned else [], NEWEST_KEY: []}


# Hops up from a model to the raw examples it was trained on: Model ← Trainer ← transformed
# examples ← Transform ← Examples.
_HOPS_TO_EXAMPLES = 2


def _ancestor_ids(store, artifact_id: int, hops: int) -> set:
  """Ids of the artifacts the executions that wrote `artifact_id` read, `hops` executions up."""
  found, frontier = set(), {artifact_id}
  for _ in range(hops):
    writers = {event.execution_id for event in store.get_events_by_artifact_ids(list(frontier))
               if event.artifact_id in frontier and event.type == event.OUTPUT}
    frontier = {event.artifact_id for event in store.get_events_by_execution_ids(list(writers))
                if event.type == event.INPUT} if writers else set()
    found |= frontier
  return found


class WarmStartModelStrategy(resolver.ResolverStrategy):
  """Inputs: `model` and `model_blessing` (all of them) and `newest` (this run's examples)."""

  def resolve_artifacts(
      self, store, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    newest = {artifact.id for artifact in input_dict.get(NEWEST_KEY, [])}
    return {NEWEST_KEY: [], **newest_blessed_model(input_dict, lambda model: not (
        _ancestor_ids(store, model.id, _HOPS_TO_EXAMPLES) & newest))}
