"""Where ML Metadata lives: SQLite in the output directory, or a MySQL (or MariaDB) server.

By default the store is `<output-dir>/metadata.sqlite`. `--metadata-connection URL` puts it on a
database server instead (`mysql://user@host:3306/db`), as teams do once pipelines run on more
than one machine (Kubeflow's own ML Metadata is MySQL); ML Metadata creates the database when it
is missing. The password never goes on a command line, where every user of the machine can read
it: it comes from `--metadata-password-file` (its first line) or the environment variable
BREAST_ULTRASOUND_METADATA_PASSWORD (neither: no password).

Not PostgreSQL: ml-metadata 1.16's PostgreSQL backend writes a string that holds a backslash as
`'E'...'`, which PostgreSQL rejects as a syntax error, and TFX records such strings in every run
(StatisticsGen's options, the Evaluator's metric configs). A postgresql:// URL is refused in one
line saying so. Airflow's own database is another matter: there PostgreSQL is what Airflow
recommends (docs/scaling-out.md).

A shared store holds several pipelines, each known by its name (`--pipeline-name`). Two rules
keep them apart:
- One pipeline name, one output directory: a run refuses to record its artifacts under a name
  whose artifacts the store already keeps under another pipeline root (`claimed_elsewhere`).
- One run of a pipeline at a time: besides the output directory's file lock (which needs
  storage whose locks every machine honours), a run holds a lock named after its pipeline in
  the database server itself for its whole length (MySQL's GET_LOCK). The server drops it when
  the run's connection ends, however the run ends.
"""

import contextlib
import dataclasses
import os
import time
import urllib.parse
from typing import Iterator, Optional, Union

from ml_metadata.proto import metadata_store_pb2

from orchestration import output_lock

PASSWORD_VARIABLE = 'BREAST_ULTRASOUND_METADATA_PASSWORD'
MYSQL_PORT = 3306
CONNECT_TIMEOUT_SECONDS = 10
_YEAR_SECONDS = 365 * 24 * 3600
_LOCK_PREFIX = 'tfx-pipeline:'


class PipelineBusy(output_lock.OutputDirectoryBusy):
  """Another run of the same pipeline holds its lock in the shared store; the message names it.
  One pipeline writes one output directory, so it is that directory being busy."""


@dataclasses.dataclass(frozen=True)
class ServerAddress:
  """A database server's address as the user wrote it, without the password."""
  host: str
  port: int
  database: str
  user: str

  @property
  def url(self) -> str:
    return f'mysql://{urllib.parse.quote(self.user)}@{self.host}:{self.port}/{self.database}'


def parse_url(url: str) -> ServerAddress:
  """The server a `--metadata-connection` URL names; ValueError (one line) when it is not one."""
  parsed = urllib.parse.urlsplit(url)
  if parsed.scheme in ('postgresql', 'postgres'):
    raise ValueError('ML Metadata 1.16 cannot record TFX runs on PostgreSQL (it writes strings '
                     "that hold a backslash as 'E'...', a syntax error): use a MySQL or MariaDB "
                     'server, mysql://USER@HOST[:PORT]/DATABASE')
  if parsed.scheme != 'mysql':
    raise ValueError(f'{url!r} is not a mysql:// URL (e.g. mysql://mlmd@db.example.org/metadata)')
  if parsed.password is not None:
    raise ValueError(f'put the password in {PASSWORD_VARIABLE} or --metadata-password-file, not '
                     'in the URL: a command line is visible to every user of the machine')
  database = parsed.path.lstrip('/')
  if not parsed.hostname or not parsed.username or not database or '/' in database:
    raise ValueError(f'{url!r} needs a user, a host and a database: '
                     'mysql://USER@HOST[:PORT]/DATABASE')
  try:
    port = parsed.port or MYSQL_PORT
  except ValueError:
    raise ValueError(f'{url!r} has a port that is not a number from 1 to 65535') from None
  return ServerAddress(parsed.hostname, port, database, urllib.parse.unquote(parsed.username))


def read_password(password_file: Optional[str]) -> str:
  """The password from the file's first line, else from PASSWORD_VARIABLE, else none."""
  if password_file:
    with open(password_file, encoding='utf-8') as handle:
      return handle.readline().rstrip('\r\n')
  return os.environ.get(PASSWORD_VARIABLE, '')


def server_of(config) -> Optional[ServerAddress]:
  """The server of a PipelineConfig's store, or None for its SQLite file."""
  return parse_url(config.metadata_connection) if config.metadata_connection else None


def describe(config) -> str:
  """Where the store is, for people: a path or a URL without the password."""
  server = server_of(config)
  return server.url if server else config.metadata_path


def connection_config(config) -> metadata_store_pb2.ConnectionConfig:
  """The ConnectionConfig the orchestrators write with (TFX's own for SQLite)."""
  server = server_of(config)
  if server is None:
    from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
    return metadata.sqlite_metadata_connection_config(config.metadata_path)
  connection = metadata_store_pb2.ConnectionConfig()
  connection.mysql.host = server.host
  connection.mysql.port = server.port
  connection.mysql.database = server.database
  connection.mysql.user = server.user
  connection.mysql.password = read_password(config.metadata_password_file)
  return connection


def reader_location(config) -> Union[str, metadata_store_pb2.ConnectionConfig]:
  """What runs/metadata_store.open_store opens for a reader: the SQLite path (opened read-only)
  or the server's ConnectionConfig."""
  return config.metadata_path if server_of(config) is None else connection_config(config)


def reader_problem(config) -> Optional[str]:
  """One line when a command that reads the store has none to read, else None (exit with
  cli/exclusive_run.py's `exit_code_of_problem`)."""
  if server_of(config) is None:
    if not os.path.isfile(config.metadata_path):
      return (f'no ML Metadata at {config.metadata_path}; is --output-dir the pipeline\'s '
              'output dir?')
    return None
  return unreachable(config)


def _client(server: ServerAddress, password: str, with_database: bool = True):
  """A plain client connection to the server (not ML Metadata's): for a clear error message and
  for the pipeline lock."""
  import pymysql  # pylint: disable=g-import-not-at-top
  return pymysql.connect(host=server.host, port=server.port, user=server.user,
                         password=password, database=server.database if with_database else None,
                         connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)


def _first_line(error: BaseException) -> str:
  # PyMySQL's errors are (code, message) pairs.
  text = str(error.args[-1] if len(error.args) == 2 else error).strip()
  return text.splitlines()[0] if text else error.__class__.__name__


# ML Metadata's words when another process is creating the schema of the same empty database
# (a DAG's first task and a local run starting on a new shared store): it asks for a retry.
_SCHEMA_BEING_CREATED = 'Please retry connection'


def _open_new_or_existing_store(config, attempts: int = 10, pause_seconds: float = 1.0):
  """ML Metadata's store, retried while another process creates its schema."""
  import ml_metadata as mlmd  # pylint: disable=g-import-not-at-top
  for attempt in range(attempts):
    try:
      return mlmd.MetadataStore(connection_config(config))
    except Exception as error:  # pylint: disable=broad-except  # ML Metadata raises many kinds
      if _SCHEMA_BEING_CREATED not in str(error) or attempt == attempts - 1:
        raise
      time.sleep(pause_seconds)


def unreachable(config) -> Optional[str]:
  """One line saying why the store cannot be opened for writing, or None when it can. A server's
  database is created here when it is missing (ML Metadata does it on first connection)."""
  server = server_of(config)
  if server is None:
    return None
  try:
    password = read_password(config.metadata_password_file)
  except OSError as error:
    return (f'cannot read --metadata-password-file {config.metadata_password_file}: '
            f'{error.strerror}')
  try:
    _open_new_or_existing_store(config)
    return None
  except Exception as store_error:  # pylint: disable=broad-except
    # ML Metadata's own message is often only 'connection pointer is NULL'; the server's reason
    # comes from a plain client.
    try:
      _client(server, password, with_database=False).close()
      reason = _first_line(store_error)
    except Exception as client_error:  # pylint: disable=broad-except
      reason = _first_line(client_error)
  return f'cannot open ML Metadata at {server.url}: {reason}'


def store_problem(config) -> Optional[str]:
  """One line when a run cannot write its store: an unreachable server, or a pipeline name that
  another output directory uses in it."""
  return unreachable(config) or claimed_elsewhere(config)


def claimed_elsewhere(config) -> Optional[str]:
  """One line when the shared store keeps this pipeline's artifacts under another pipeline root
  (another output directory ran under the same --pipeline-name), else None."""
  if server_of(config) is None:
    return None  # the SQLite file lives in, and belongs to, the output directory
  import ml_metadata as mlmd  # pylint: disable=g-import-not-at-top
  store = mlmd.MetadataStore(connection_config(config))
  context = store.get_context_by_type_and_name('pipeline', config.pipeline_name)
  if context is None:
    return None
  [artifact, *_] = store.get_artifacts_by_context(
      context.id, list_options=mlmd.ListOptions(limit=1)) or [None]
  root = config.pipeline_root.rstrip('/') + '/'
  if artifact is None or artifact.uri.startswith(root):
    return None
  return (f'ML Metadata at {describe(config)} already holds pipeline {config.pipeline_name!r} '
          f'with its artifacts elsewhere ({artifact.uri}); give this output dir a '
          '--pipeline-name of its own')


@contextlib.contextmanager
def exclusive_pipeline(config, wait: bool = False) -> Iterator[None]:
  """Holds the pipeline's lock in the shared store for the `with` block (nothing for SQLite:
  the output directory's lock covers its own file). Raises PipelineBusy when another run holds
  it, unless `wait`."""
  server = server_of(config)
  if server is None:
    yield
    return
  lock_name = (_LOCK_PREFIX + config.pipeline_name)[:64]  # MySQL's longest lock name
  connection = _client(server, read_password(config.metadata_password_file))
  try:
    with connection.cursor() as cursor:
      # The connection sits idle for the whole run; the server's default closes an idle one,
      # and drops its lock, after 8 hours.
      cursor.execute('SET SESSION wait_timeout = %s', (_YEAR_SECONDS,))
      cursor.execute('SELECT GET_LOCK(%s, %s)', (lock_name, _YEAR_SECONDS if wait else 0))
      if cursor.fetchone()[0] != 1:
        cursor.execute('SELECT ID, USER, HOST FROM information_schema.PROCESSLIST '
                       'WHERE ID = IS_USED_LOCK(%s)', (lock_name,))
        holder = cursor.fetchone()
        who = (f'connection {holder[0]} of {holder[1]} from {holder[2]}' if holder
               else 'another run')
        raise PipelineBusy(
            f'pipeline {config.pipeline_name!r} in ML Metadata at {server.url} is being run by '
            f'{who}; wait for it to finish, or pass --wait-for-output-dir')
    yield
  finally:
    connection.close()  # the server drops the lock with the connection
