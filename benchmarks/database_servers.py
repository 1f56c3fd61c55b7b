"""Throwaway database servers and an Airflow scheduler, for the scaling-out test and benchmark.

A MariaDB server for ML Metadata and a PostgreSQL server for Airflow's own database, each in a
temporary folder on a free loopback port and stopped at the end, from Debian's `mariadb-server`
and `postgresql` packages (run as their `mysql` and `postgres` users when this runs as root,
which both servers refuse to be). `airflow_environment` points Airflow at them with the
LocalExecutor; `AirflowScheduler` runs `airflow scheduler` and triggers and times DAG runs.
"""

import contextlib
import dataclasses
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional

POSTGRES_BIN = sorted(glob.glob('/usr/lib/postgresql/*/bin'))[-1:] or ['']
MARIADB_SERVER = shutil.which('mariadbd') or '/usr/sbin/mariadbd'
MARIADB_INSTALL_DB = shutil.which('mariadb-install-db') or '/usr/bin/mariadb-install-db'
DAG_FILE_NAME = 'breast_ultrasound_dag.py'


def missing_servers() -> List[str]:
  """The Debian packages whose servers are not installed here."""
  missing = []
  if not os.access(MARIADB_SERVER, os.X_OK) or not os.access(MARIADB_INSTALL_DB, os.X_OK):
    missing.append('mariadb-server')
  if not os.access(os.path.join(POSTGRES_BIN[0], 'postgres'), os.X_OK):
    missing.append('postgresql')
  return missing


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _as_service_user(user: str, command: List[str]) -> List[str]:
  """Root runs the server as its own system user; anyone else runs it as themselves."""
  if os.geteuid() != 0:
    return command
  return ['runuser', '-u', user, '--', *command]


@contextlib.contextmanager
def _service_folder(name: str, user: str) -> Iterator[str]:
  """A new folder for a server's data, log and socket, owned by the user it runs as, removed
  at the end. Under the system's temporary folder: the service user cannot enter the caller's
  private ones (pytest's are mode 700), and a socket's path must stay short."""
  path = tempfile.mkdtemp(prefix=f'{name}-')
  try:
    if os.geteuid() == 0:
      entry = pwd.getpwnam(user)
      os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen, log_path: str, timeout: float) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f'the server exited ({process.returncode}): ' + open(
          log_path, encoding='utf-8', errors='replace').read()[-2000:])
    with socket.socket() as probe:
      if probe.connect_ex(('127.0.0.1', port)) == 0:
        return
    time.sleep(0.2)
  raise TimeoutError(f'no server on port {port} after {timeout} s')


@dataclasses.dataclass
class MetadataServer:
  """A MariaDB server with a user for ML Metadata whose password is in `password_file`."""
  port: int
  user: str
  password: str
  password_file: str

  def url(self, database: str) -> str:
    return f'mysql://{self.user}@127.0.0.1:{self.port}/{database}'


@contextlib.contextmanager
def mariadb_server(workdir: str, password: str = 'ml-metadata-secret') -> Iterator[MetadataServer]:
  """A MariaDB server for as long as the block runs; the password file goes in `workdir`."""
  with _service_folder('mariadb', 'mysql') as folder:
    yield from _mariadb_server_in(folder, workdir, password)


def _mariadb_server_in(folder: str, workdir: str, password: str) -> Iterator[MetadataServer]:
  data = os.path.join(folder, 'data')
  log_path = os.path.join(folder, 'server.log')
  subprocess.run(_as_service_user('mysql', [
      MARIADB_INSTALL_DB, '--no-defaults', f'--datadir={data}', '--skip-test-db',
      '--auth-root-authentication-method=normal']), check=True, capture_output=True, timeout=120)
  port = free_port()
  socket_path = os.path.join(folder, 'server.sock')
  with open(log_path, 'w', encoding='utf-8') as log:
    server = subprocess.Popen(_as_service_user('mysql', [
        MARIADB_SERVER, '--no-defaults', f'--datadir={data}', f'--port={port}',
        '--bind-address=127.0.0.1', f'--socket={socket_path}', '--skip-name-resolve',
        f'--pid-file={os.path.join(folder, "server.pid")}', '--max-connections=500']),
                              stdout=log, stderr=subprocess.STDOUT)
  try:
    _wait_for_port(port, server, log_path, timeout=60)
    # The throwaway server's root has no password; ML Metadata's user has one.
    subprocess.run(['mariadb', '--no-defaults', f'--socket={socket_path}', '-u', 'root', '-e',
                    f"CREATE USER 'mlmd'@'%' IDENTIFIED BY '{password}'; "
                    "GRANT ALL ON *.* TO 'mlmd'@'%';"],
                   check=True, capture_output=True, timeout=60)
    password_file = os.path.join(workdir, 'ml-metadata.password')
    with open(password_file, 'w', encoding='utf-8') as handle:
      handle.write(password + '\n')
    os.chmod(password_file, 0o600)
    yield MetadataServer(port, 'mlmd', password, password_file)
  finally:
    server.terminate()
    try:
      server.wait(timeout=60)
    except subprocess.TimeoutExpired:
      server.kill()


@contextlib.contextmanager
def postgresql_server() -> Iterator[str]:
  """A PostgreSQL server with a database `airflow` for as long as the block runs; yields the
  SQLAlchemy URL Airflow connects with (trust authentication, on loopback only)."""
  with _service_folder('postgresql', 'postgres') as folder:
    yield from _postgresql_server_in(folder)


def _postgresql_server_in(folder: str) -> Iterator[str]:
  data = os.path.join(folder, 'data')
  user = 'postgres' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
  subprocess.run(_as_service_user('postgres', [
      os.path.join(POSTGRES_BIN[0], 'initdb'), '-D', data, '-U', user, '--auth=trust',
      '-E', 'UTF8']), check=True, capture_output=True, timeout=120)
  port = free_port()
  log_path = os.path.join(folder, 'server.log')
  with open(log_path, 'w', encoding='utf-8') as log:
    server = subprocess.Popen(_as_service_user('postgres', [
        os.path.join(POSTGRES_BIN[0], 'postgres'), '-D', data, '-p', str(port), '-k', folder,
        '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200']),
                              stdout=log, stderr=subprocess.STDOUT)
  try:
    _wait_for_port(port, server, log_path, timeout=60)
    subprocess.run([os.path.join(POSTGRES_BIN[0], 'createdb'), '-h', '127.0.0.1', '-p', str(port),
                    '-U', user, 'airflow'], check=True, capture_output=True, timeout=60)
    yield f'postgresql+psycopg2://{user}@127.0.0.1:{port}/airflow'
  finally:
    server.terminate()  # PostgreSQL's smart shutdown
    try:
      server.wait(timeout=60)
    except subprocess.TimeoutExpired:
      server.kill()


def airflow_environment(airflow_home: str, database_url: str, dags_folder: str,
                        pipeline_flags: str, workers: int) -> Dict[str, str]:
  """Airflow over PostgreSQL with the LocalExecutor and `workers` task processes at a time, the
  DAG's flags in BREAST_ULTRASOUND_PIPELINE_FLAGS. The timeouts allow for importing TFX and
  TensorFlow in each task process on a busy machine."""
  return {
      **os.environ,
      'AIRFLOW_HOME': airflow_home,
      'AIRFLOW__DATABASE__SQL_ALCHEMY_CONN': database_url,
      'AIRFLOW__CORE__EXECUTOR': 'LocalExecutor',
      'AIRFLOW__CORE__PARALLELISM': str(workers),
      'AIRFLOW__CORE__DAGS_FOLDER': dags_folder,
      'AIRFLOW__CORE__LOAD_EXAMPLES': 'False',
      'AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION': 'False',
      'AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT': '600',
      'AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT': '600',
      'AIRFLOW__CORE__KILLED_TASK_CLEANUP_TIME': '60',
      'AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC': '1',
      'AIRFLOW__SCHEDULER__PARSING_PROCESSES': '1',
      # The DAG file is parsed once: each parse imports TFX, seconds of a busy core.
      'AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL': '3600',
      'AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT': '3600',
      'AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL': '60',
      'AIRFLOW__SCHEDULER__SCHEDULER_ZOMBIE_TASK_THRESHOLD': '600',
      'BREAST_ULTRASOUND_PIPELINE_FLAGS': pipeline_flags,
  }


def dags_folder_with_the_dag(folder: str, project_root: str) -> str:
  """A DAGs folder holding a link to the project's airflow_runner.py, as a deployment has."""
  os.makedirs(folder, exist_ok=True)
  link = os.path.join(folder, DAG_FILE_NAME)
  if not os.path.islink(link):
    os.symlink(os.path.join(project_root, 'airflow_runner.py'), link)
  return folder


class AirflowScheduler:
  """`airflow scheduler` with the given environment, from start() to stop()."""

  def __init__(self, environment: Dict[str, str], log_path: str):
    self.environment = environment
    self.log_path = log_path
    self.process: Optional[subprocess.Popen] = None

  def airflow(self, *arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, '-m', 'airflow', *arguments],
                               env=self.environment, capture_output=True, text=True,
                               timeout=timeout, check=False)
    if completed.returncode:
      raise RuntimeError(f'airflow {" ".join(arguments)} failed: {completed.stderr[-2000:]}')
    return completed

  def start(self) -> None:
    self.airflow('db', 'migrate')
    with open(self.log_path, 'a', encoding='utf-8') as log:
      self.process = subprocess.Popen([sys.executable, '-m', 'airflow', 'scheduler'],
                                      env=self.environment, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

  def stop(self) -> None:
    if self.process is None or self.process.poll() is not None:
      return
    self.process.terminate()  # the scheduler stops its executor and parsing processes
    try:
      self.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
      os.killpg(self.process.pid, 9)
      self.process.wait()

  def query(self, sql: str, *parameters) -> list:
    """Rows of a query on Airflow's own database (PostgreSQL): cheaper than a CLI call, which
    imports Airflow each time."""
    import psycopg2  # pylint: disable=g-import-not-at-top
    url = self.environment['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'].replace('+psycopg2', '')
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
      cursor.execute(sql, parameters)
      return cursor.fetchall()

  def wait_for_dag(self, dag_id: str, timeout: float) -> None:
    """Until the scheduler has parsed the DAG file and knows `dag_id`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.query('SELECT 1 FROM dag WHERE dag_id = %s AND is_active', dag_id):
        return
      if self.process.poll() is not None:
        raise RuntimeError(f'the scheduler exited ({self.process.returncode}); see '
                           f'{self.log_path}')
      time.sleep(2)
    raise TimeoutError(f'the scheduler did not list DAG {dag_id} within {timeout} s')

  def trigger(self, dag_id: str, run_id: str) -> None:
    self.airflow('dags', 'trigger', dag_id, '--run-id', run_id)

  def run_state(self, dag_id: str, run_id: str) -> str:
    rows = self.query('SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s', dag_id,
                      run_id)
    return rows[0][0] if rows else 'unknown'

  def run_and_wait(self, dag_id: str, run_id: str, timeout: float) -> float:
    """Triggers a run and waits until it ends (`wait_for_run`)."""
    self.trigger(dag_id, run_id)
    return self.wait_for_run(dag_id, run_id, timeout)

  def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> float:
    """Waits until a triggered run ends; returns its seconds from the scheduler's start of the
    run to its end. Raises when it failed."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
      state = self.run_state(dag_id, run_id)
      if state == 'success':
        [(seconds,)] = self.query('SELECT EXTRACT(EPOCH FROM end_date - start_date) FROM dag_run '
                                  'WHERE dag_id = %s AND run_id = %s', dag_id, run_id)
        return float(seconds)
      if state == 'failed':
        raise RuntimeError(f'DAG run {run_id} failed; task logs under '
                           f'{self.environment["AIRFLOW_HOME"]}/logs')
      time.sleep(2)
    raise TimeoutError(f'DAG run {run_id} not done after {timeout} s')
