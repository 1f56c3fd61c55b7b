"""Reading ML Metadata: runs, executions, artifacts and the events between them.

The one place that knows how TFX records a pipeline in ML Metadata: a `pipeline_run` context per
run, a `node` context per component, an execution per component run (CACHED when its outputs were
reused) and INPUT/OUTPUT events tying executions to artifacts. TFX's launcher-based orchestrators
(AirflowDagRunner: airflow_runner.py) record a `run` context per run instead, and the component in
each execution's `component_id`; both are read alike. The end-of-run summary, the
inspector and the run report all read the store through these functions, read-only. A store on
a database server may hold several pipelines: readers see one through `PipelineView`.
"""

import dataclasses
import json
from typing import Any, List, Optional, Tuple, Union

import ml_metadata as mlmd
from google.protobuf import json_format
from ml_metadata.proto import metadata_store_pb2

from orchestration import metadata_connection

PIPELINE_RUN_CONTEXT = 'pipeline_run'
LAUNCHER_RUN_CONTEXT = 'run'  # AirflowDagRunner's
RUN_CONTEXTS = (PIPELINE_RUN_CONTEXT, LAUNCHER_RUN_CONTEXT)
NODE_CONTEXT = 'node'
PIPELINE_CONTEXT = 'pipeline'
# pipeline/configs.py's INFERENCE_PIPELINE_SUFFIX: runs/ reads stores without the pipeline code.
INFERENCE_PIPELINE_SUFFIX = '-inference'
STATE_NAMES = {
    metadata_store_pb2.Execution.NEW: 'new',
    metadata_store_pb2.Execution.RUNNING: 'running',
    metadata_store_pb2.Execution.COMPLETE: 'complete',
    metadata_store_pb2.Execution.FAILED: 'failed',
    metadata_store_pb2.Execution.CACHED: 'cached',
    metadata_store_pb2.Execution.CANCELED: 'canceled',
}


@dataclasses.dataclass
class ComponentRun:
  node_id: str
  state: str
  seconds: float
  execution_id: int
  started: float  # seconds since the epoch


def open_store(where: Union[str, metadata_store_pb2.ConnectionConfig],
               pipeline_name: Optional[str] = None):
  """The store at `where`: a SQLite file's path (opened read-only) or a server's
  ConnectionConfig. With `pipeline_name`, what a reader sees is that pipeline's share of a store
  that several pipelines write (`PipelineView`)."""
  if isinstance(where, str):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = where
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  else:
    config = where
  store = mlmd.MetadataStore(config)
  return store if pipeline_name is None else PipelineView(store, pipeline_name)


def open_pipeline_store(config):
  """The store of a PipelineConfig, as its pipeline sees it."""
  return open_store(metadata_connection.reader_location(config), config.pipeline_name)


def location_text(where: Union[str, metadata_store_pb2.ConnectionConfig]) -> str:
  """Where a store is, for people: a SQLite path, or a server's URL without the password."""
  if isinstance(where, str):
    return where
  if where.WhichOneof('config') == 'mysql':
    server = where.mysql
    return metadata_connection.ServerAddress(server.host, server.port, server.database,
                                             server.user).url
  return where.sqlite.filename_uri


class PipelineView:
  """A store as one pipeline sees it: its runs, executions and artifacts (and its batch
  inference pipeline's, `<name>-inference`), none of another pipeline's that shares the store.
  Every other call goes to the store itself, so every reader takes a view where it takes a
  store."""

  def __init__(self, store: mlmd.MetadataStore, pipeline_name: str):
    self._store = store
    self.pipeline_name = pipeline_name
    self._contexts = [context for name in (pipeline_name,
                                           pipeline_name + INFERENCE_PIPELINE_SUFFIX)
                      for context in [store.get_context_by_type_and_name(PIPELINE_CONTEXT, name)]
                      if context is not None]

  def __getattr__(self, name):
    return getattr(self._store, name)

  def _artifact_ids(self) -> set:
    return {artifact.id for context in self._contexts
            for artifact in self._store.get_artifacts_by_context(context.id)}

  def get_artifacts(self, *args, **kwargs):
    ids = self._artifact_ids()
    return [artifact for artifact in self._store.get_artifacts(*args, **kwargs)
            if artifact.id in ids]

  def get_artifacts_by_type(self, *args, **kwargs):
    ids = self._artifact_ids()
    return [artifact for artifact in self._store.get_artifacts_by_type(*args, **kwargs)
            if artifact.id in ids]

  def get_executions(self):
    return sorted((execution for context in self._contexts
                   for execution in self._store.get_executions_by_context(context.id)),
                  key=lambda execution: execution.id)

  def get_contexts_by_type(self, type_name, *args, **kwargs):
    contexts = self._store.get_contexts_by_type(type_name, *args, **kwargs)
    if type_name not in RUN_CONTEXTS:
      return contexts
    names = {context.name for context in self._contexts}
    return [context for context in contexts if pipeline_of_run(self._store, context) in names]


def node_id_of(store: mlmd.MetadataStore, execution_id: int) -> str:
  """The pipeline node an execution belongs to ('<pipeline>.<node id>' → node id)."""
  for context in store.get_contexts_by_execution(execution_id):
    if context.type == NODE_CONTEXT:
      return context.name.split('.', 1)[-1]
  [execution] = store.get_executions_by_id([execution_id])
  component_id = execution.properties.get('component_id')
  return component_id.string_value if component_id is not None else '?'


def pipeline_of_run(store: mlmd.MetadataStore, run_context: metadata_store_pb2.Context) -> str:
  """The name of the pipeline a run belongs to ('' when it has no execution yet)."""
  for execution in sorted(store.get_executions_by_context(run_context.id), key=lambda e: e.id):
    for context in store.get_contexts_by_execution(execution.id):
      if context.type == PIPELINE_CONTEXT:
        return context.name
  return ''


def run_contexts(store: mlmd.MetadataStore,
                 inference: bool = False) -> List[metadata_store_pb2.Context]:
  """Every run of the training pipeline, oldest first; with `inference`, every batch inference
  run instead (the `<pipeline>-inference` pipeline in the same store)."""
  runs = sorted((context for context_type in RUN_CONTEXTS
                 for context in store.get_contexts_by_type(context_type)),
                key=lambda context: context.create_time_since_epoch)
  return [context for context in runs
          if pipeline_of_run(store, context).endswith(INFERENCE_PIPELINE_SUFFIX) == inference]


def component_runs(store: mlmd.MetadataStore, run_context_id: int,
                   run_in_progress: bool = False) -> List[ComponentRun]:
  """The run's executions, oldest first. An execution still marked running in a run that is not
  in progress was killed mid-way (a crash, `kill -9`): its state is 'interrupted'."""
  executions = sorted(store.get_executions_by_context(run_context_id), key=lambda e: e.id)

  def state_of(execution) -> str:
    state = STATE_NAMES.get(execution.last_known_state, 'unknown')
    return 'interrupted' if state == 'running' and not run_in_progress else state

  return [
      ComponentRun(
          node_id=node_id_of(store, execution.id),
          state=state_of(execution),
          seconds=(execution.last_update_time_since_epoch
                   - execution.create_time_since_epoch) / 1000.0,
          execution_id=execution.id,
          started=execution.create_time_since_epoch / 1000.0)
      for execution in executions
  ]


_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


def outputs_of(store: mlmd.MetadataStore, execution_id: int) -> List[metadata_store_pb2.Artifact]:
  return [artifact for _, artifact in keyed_artifacts(store, execution_id, _OUTPUT_EVENTS)]


def inputs_of(store: mlmd.MetadataStore,
              execution_id: int) -> List[Tuple[str, metadata_store_pb2.Artifact]]:
  """(input key, e.g. 'model' or 'baseline_model', artifact) of each input of an execution."""
  return keyed_artifacts(store, execution_id, _INPUT_EVENTS)


def keyed_artifacts(store: mlmd.MetadataStore, execution_id: int,
                    event_types) -> List[Tuple[str, metadata_store_pb2.Artifact]]:
  events = [event for event in store.get_events_by_execution_ids([execution_id])
            if event.type in event_types]
  by_id = {artifact.id: artifact
           for artifact in store.get_artifacts_by_id([event.artifact_id for event in events])}
  return [(event.path.steps[0].key if event.path.steps else '', by_id[event.artifact_id])
          for event in events if event.artifact_id in by_id]


def producer_of(store: mlmd.MetadataStore,
                artifact_id: int) -> Optional[metadata_store_pb2.Execution]:
  """The execution that first wrote the artifact (cached executions that reused it come later)."""
  execution_ids = sorted(event.execution_id
                         for event in store.get_events_by_artifact_ids([artifact_id])
                         if event.type in _OUTPUT_EVENTS)
  return store.get_executions_by_id(execution_ids[:1])[0] if execution_ids else None


def run_of(store: mlmd.MetadataStore, execution_id: int) -> str:
  """The pipeline run (its run id) an execution belongs to."""
  for context in store.get_contexts_by_execution(execution_id):
    if context.type in RUN_CONTEXTS:
      return context.name
  return '?'


def type_name_of(store: mlmd.MetadataStore, artifact: metadata_store_pb2.Artifact) -> str:
  return artifact.type or store.get_artifact_types_by_id([artifact.type_id])[0].name


def run_outputs(store: mlmd.MetadataStore, components: List[ComponentRun]
                ) -> List[Tuple[ComponentRun, str, metadata_store_pb2.Artifact]]:
  """(component run, artifact type name, artifact) of everything the run's components wrote
  or, when cached, reused."""
  return [(component, type_name_of(store, artifact), artifact)
          for component in components
          for artifact in outputs_of(store, component.execution_id)]


def spans_read_by(store: mlmd.MetadataStore, execution_id: int) -> List[int]:
  """The spans of the Examples an execution read (its `examples` input), oldest first; [0]
  for a data root without spans."""
  return sorted({artifact_property(artifact, 'span') or 0
                 for key, artifact in inputs_of(store, execution_id) if key == 'examples'})


def trained_on(store: mlmd.MetadataStore,
               model_id: int) -> Tuple[Optional[metadata_store_pb2.Execution],
                                       Optional[metadata_store_pb2.Execution]]:
  """(the Trainer execution that wrote the model, the Transform execution whose transformed
  examples it trained on); None where ML Metadata has no record."""
  trainer = producer_of(store, model_id)
  if trainer is None:
    return None, None
  for key, transformed in inputs_of(store, trainer.id):
    transform = producer_of(store, transformed.id) if key == 'examples' else None
    if transform is not None:
      return trainer, transform
  return trainer, None


def spans_of_model(store: mlmd.MetadataStore, model_id: int) -> List[int]:
  """The spans a model was trained on: the Trainer's transformed examples come from Transform,
  whose raw examples carry their span."""
  _, transform = trained_on(store, model_id)
  return spans_read_by(store, transform.id) if transform is not None else []


def execution_json_property(execution: metadata_store_pb2.Execution, name: str) -> Any:
  """An execution property that TFX stores as JSON text (custom_config, eval_config), decoded:
  a custom property, or a property of the component's execution type under AirflowDagRunner."""
  value = execution.custom_properties.get(name) or execution.properties.get(name)
  return json.loads(value.string_value) if value is not None and value.string_value else None


def artifact_property(artifact: metadata_store_pb2.Artifact, name: str) -> Any:
  """A custom property as a Python value (JSON properties decoded)."""
  if name not in artifact.custom_properties:
    return None
  value = artifact.custom_properties[name]
  kind = value.WhichOneof('value')
  if kind == 'struct_value':
    # TFX wraps JSON values that are not objects as {'__value__': value}.
    decoded = json_format.MessageToDict(value.struct_value)
    return decoded['__value__'] if set(decoded) == {'__value__'} else decoded
  return getattr(value, kind)


@dataclasses.dataclass
class Push:
  """A version the Pusher published, and the Model and ModelBlessing it published."""
  pushed_model: metadata_store_pb2.Artifact
  version: str
  model: Optional[metadata_store_pb2.Artifact]
  model_blessing: Optional[metadata_store_pb2.Artifact]


def pushes(store: mlmd.MetadataStore) -> List[Push]:
  """Every version the Pusher published, oldest first: the one place that says which model was
  pushed as which version (which version a server serves is serving/model_directory.py's
  answer: the newest that loads)."""
  found = []
  for pushed in sorted(store.get_artifacts_by_type('PushedModel'), key=lambda item: item.id):
    if artifact_property(pushed, 'pushed') != 1:
      continue
    pusher = producer_of(store, pushed.id)
    inputs = dict(inputs_of(store, pusher.id)) if pusher else {}
    found.append(Push(pushed, artifact_property(pushed, 'pushed_version'), inputs.get('model'),
                      inputs.get('model_blessing')))
  return found
