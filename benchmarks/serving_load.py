"""How the local server holds up under many clients at once: answers, refusals, resets, memory.

    python -m benchmarks.serving_load --model-base-path OUTPUT/serving/breast_ultrasound \
        [--images DIR] [--seconds 20] [--good 140] [--malformed 30] [--bad-base64 30] \
        [--stalled 40] [-- SERVER FLAGS...]

It starts `python -m serving.server` on free ports and, for `--seconds`, keeps `--good` clients
asking for one image's prediction (asking again at once after a 503, as an impatient client
does), `--malformed` clients sending malformed JSON, `--bad-base64` clients sending a bad base64
string, and `--stalled` sockets sending half a request and then nothing (reconnecting once
closed). Every request sent is accounted for: it prints the requests sent and what came back
(good answers, 503s and whether each said Retry-After, 400s), the failures (a reset, a refused
connection, a timeout, a cut-off or non-JSON answer, a client that never finished: none is
acceptable), the latency of the good answers, and the server's resident memory before and at
most.
"""

import argparse
import base64
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks import serving_latency

GOOD, MALFORMED, BAD_BASE64 = 'good', 'malformed', 'bad base64'


def resident_megabytes(pid: int) -> float:
  with open(f'/proc/{pid}/status', encoding='ascii') as handle:
    for line in handle:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f'no VmRSS for process {pid}')


def post(url: str, body: bytes):
  """(status, headers, decoded JSON answer) of a POST; OSError when no HTTP answer came, and
  http.client.HTTPException or ValueError when one came cut off or not as JSON."""
  request = urllib.request.Request(url, data=body, headers={'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, response.headers, json.load(response)
  except urllib.error.HTTPError as error:
    return error.code, error.headers, json.loads(error.read())
  except urllib.error.URLError as error:
    raise OSError(error.reason) from None


def stall(host: str, port: int, seconds: float) -> None:
  """Half a request, then nothing until the server closes the connection or `seconds` pass."""
  with socket.create_connection((host, port), timeout=seconds) as connection:
    connection.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Length: 1000\r\n\r\n{"instances": [')
    try:
      connection.recv(1)
    except socket.timeout:
      pass


def load(predict_url: str, image: bytes, seconds: float, server_pid: Optional[int] = None,
         good: int = 140, malformed: int = 30, bad_base64: int = 30,
         stalled: int = 40) -> Dict[str, Any]:
  """The outcomes of the load described at the top: for each kind of client the list of
  (status, seconds, answer or Retry-After) it got, `sent` (the requests each kind sent),
  `failures` (repr of each request that got no whole JSON answer, and of each client that had not
  finished 60 s after the end), `stalled` (connections made) and `memory` (the server's resident
  MB over time)."""
  bodies = {GOOD: json.dumps({'instances': [{'b64': base64.b64encode(image).decode()}]}).encode(),
            MALFORMED: b'{"instances": [{"b64": ',
            BAD_BASE64: json.dumps({'instances': [{'b64': 'not base64!'}]}).encode()}
  outcomes = {GOOD: [], MALFORMED: [], BAD_BASE64: [], 'failures': [], 'stalled': 0,
              'sent': {GOOD: 0, MALFORMED: 0, BAD_BASE64: 0},
              'memory': [resident_megabytes(server_pid)] if server_pid else []}
  address = urllib.parse.urlsplit(predict_url)
  lock = threading.Lock()
  stop = threading.Event()

  def client(kind: str) -> None:
    while not stop.is_set():
      started = time.perf_counter()
      with lock:
        outcomes['sent'][kind] += 1
      try:
        status, headers, body = post(predict_url, bodies[kind])
      except Exception as error:  # pylint: disable=broad-except
        with lock:  # a failure to count, not a client thread to lose
          outcomes['failures'].append(f'{kind}: {error!r}')
        continue
      detail = headers.get('Retry-After') if status == 503 else body
      with lock:
        outcomes[kind].append((status, time.perf_counter() - started, detail))

  def stalled_client() -> None:
    while not stop.is_set():
      try:
        stall(address.hostname, address.port, 30)
      except OSError as error:
        with lock:
          outcomes['failures'].append(f'stalled: {error!r}')
        continue
      with lock:
        outcomes['stalled'] += 1

  def watch_memory() -> None:
    while not stop.wait(0.5):
      outcomes['memory'].append(resident_megabytes(server_pid))

  threads = ([threading.Thread(target=client, args=(GOOD,)) for _ in range(good)]
             + [threading.Thread(target=client, args=(MALFORMED,)) for _ in range(malformed)]
             + [threading.Thread(target=client, args=(BAD_BASE64,)) for _ in range(bad_base64)]
             + [threading.Thread(target=stalled_client) for _ in range(stalled)]
             + ([threading.Thread(target=watch_memory)] if server_pid else []))
  for thread in threads:
    thread.start()
  time.sleep(seconds)
  stop.set()
  for thread in threads:
    thread.join(timeout=60)
    if thread.is_alive():
      outcomes['failures'].append(f'{thread.name}: still waiting 60 s after the end')
  return outcomes


def summary_rows(outcomes: Dict[str, Any], seconds: float) -> List[List[str]]:
  rows = []
  for kind in (GOOD, MALFORMED, BAD_BASE64):
    answers = outcomes[kind]
    statuses = sorted({status for status, _, _ in answers})
    count = {status: sum(1 for answer in answers if answer[0] == status) for status in statuses}
    retry_after = sum(1 for status, _, detail in answers if status == 503 and detail)
    ok = [elapsed for status, elapsed, _ in answers if status in (200, 400)]
    rows.append([kind, f'{len(answers):,}', ', '.join(f'{status}: {count[status]:,}'
                                                      for status in statuses) or '-',
                 f'{retry_after:,} of {count.get(503, 0):,}',
                 f'{np.percentile(ok, 50) * 1000:.0f} / {np.percentile(ok, 99) * 1000:.0f}'
                 if ok else '-', f'{len(ok) / seconds:.1f}'])
  return rows


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model-base-path', required=True)
  parser.add_argument('--images', help='an image from here is asked about (default: synthetic)')
  parser.add_argument('--seconds', type=float, default=20)
  parser.add_argument('--good', type=int, default=140)
  parser.add_argument('--malformed', type=int, default=30)
  parser.add_argument('--bad-base64', type=int, default=30)
  parser.add_argument('--stalled', type=int, default=40)
  parser.add_argument('server_flags', nargs='*', help='passed to serving.server, after --')
  args = parser.parse_args(argv)
  image = serving_latency.encoded_images(args.images, count=1)[0]
  server, url, _ = serving_latency.start_server(args.model_base_path, *args.server_flags)
  try:
    outcomes = load(url, image, args.seconds, server.pid, args.good, args.malformed,
                    args.bad_base64, args.stalled)
    alive = server.poll() is None
  finally:
    server.terminate()
    server.wait(timeout=30)
  total = args.good + args.malformed + args.bad_base64
  print(f'{total} clients and {args.stalled} stalled sockets for {args.seconds:g} s; '
        f'{os.cpu_count()} CPUs; server flags: {" ".join(args.server_flags) or "(defaults)"}\n')
  print('| clients | answers | by status | 503s saying Retry-After | p50 / p99 ms of 200 or '
        '400 | 200 or 400 per s |')
  print('|---|---:|---|---:|---:|---:|')
  for row in summary_rows(outcomes, args.seconds):
    print('| ' + ' | '.join(row) + ' |')
  memory = outcomes['memory']
  sent = outcomes['sent']
  print(f'\nrequests sent: {", ".join(f"{kind} {count:,}" for kind, count in sent.items())}')
  print(f'failures: {len(outcomes["failures"]):,}'
        + (f' (first: {outcomes["failures"][0]})' if outcomes['failures'] else ''))
  print(f'stalled connections made: {outcomes["stalled"]:,}')
  print(f'server resident memory: {memory[0]:,.0f} MB at the start, {max(memory):,.0f} MB at most')
  print(f'server still running at the end: {"yes" if alive else "no"}')
  return 0 if alive and not outcomes['failures'] else 1


if __name__ == '__main__':
  sys.exit(main())
