"""Headless Chromium driven through its DevTools protocol, for tests that use a page as a person
does: open it, click, type, press keys, choose files, read what it shows, take a screenshot.

Debian's `chromium` and the websocket client the stack already has; no Selenium, no browser
download. `Browser.start(folder)` is None when there is no `chromium` (the test decides whether
that is a failure: `conftest.require_service`).
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from typing import Any, Dict, List, Optional

import websocket


class BrowserError(RuntimeError):
  """The browser said no, or did not answer in time."""


class Browser:
  """One headless Chromium with one page (a tab)."""

  def __init__(self, process: subprocess.Popen, socket: websocket.WebSocket):
    self._process = process
    self._socket = socket
    self._ids = itertools.count(1)

  @classmethod
  def start(cls, folder: str, width: int = 1280, height: int = 860,
            timeout: float = 60) -> Optional['Browser']:
    """Chromium with its profile in `folder`, or None when it is not installed."""
    if shutil.which('chromium') is None:
      return None
    process = subprocess.Popen(
        ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
         '--remote-debugging-port=0', f'--user-data-dir={folder}',
         f'--window-size={width},{height}', 'about:blank'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Chromium writes the port it chose, once it listens, into its profile folder.
    port_file = os.path.join(folder, 'DevToolsActivePort')
    deadline = time.monotonic() + timeout
    while not (os.path.exists(port_file) and open(port_file, encoding='utf-8').read().strip()):
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        raise BrowserError(f'chromium did not start (exit code {process.poll()})')
      time.sleep(0.1)
    port = open(port_file, encoding='utf-8').read().split()[0]
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=timeout) as answer:
      [page] = [target for target in json.load(answer) if target['type'] == 'page']
    socket = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=timeout,
                                         suppress_origin=True)
    return cls(process, socket)

  def close(self) -> None:
    self._socket.close()
    self._process.kill()
    self._process.wait(timeout=30)

  def __enter__(self) -> 'Browser':
    return self

  def __exit__(self, *_) -> None:
    self.close()

  def send(self, method: str, **params) -> Dict[str, Any]:
    """One protocol command's result (events in between are dropped)."""
    command_id = next(self._ids)
    self._socket.send(json.dumps({'id': command_id, 'method': method, 'params': params}))
    while True:
      message = json.loads(self._socket.recv())
      if message.get('id') == command_id:
        if 'error' in message:
          raise BrowserError(f'{method}: {message["error"]}')
        return message['result']

  def evaluate(self, expression: str) -> Any:
    """The value of a JavaScript expression in the page (a promise's value once it settles)."""
    result = self.send('Runtime.evaluate', expression=expression, returnByValue=True,
                       awaitPromise=True)
    if 'exceptionDetails' in result:
      raise BrowserError(f'{expression}: {result["exceptionDetails"]}')
    return result['result'].get('value')

  def wait_for(self, expression: str, timeout: float = 60) -> Any:
    """The first truthy value of `expression`, polled; BrowserError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
      value = self.evaluate(expression)
      if value:
        return value
      if time.monotonic() > deadline:
        raise BrowserError(f'still false after {timeout} s: {expression}')
      time.sleep(0.1)

  def open(self, url: str) -> None:
    self.send('Page.navigate', url=url)
    self.wait_for("document.readyState === 'complete'")

  def text(self, selector: str) -> Optional[str]:
    """The text of the first element `selector` finds, None when there is none."""
    return self.evaluate(f'document.querySelector({json.dumps(selector)})?.textContent ?? null')

  def click(self, selector: str) -> None:
    """A left click in the middle of the first element `selector` finds, as a mouse makes it."""
    box = self.evaluate(f'''(() => {{
        const element = document.querySelector({json.dumps(selector)});
        if (!element) return null;
        element.scrollIntoView({{block: 'center'}});
        const box = element.getBoundingClientRect();
        return [box.x + box.width / 2, box.y + box.height / 2];
      }})()''')
    if box is None:
      raise BrowserError(f'nothing to click at {selector}')
    for event in ('mousePressed', 'mouseReleased'):
      self.send('Input.dispatchMouseEvent', type=event, x=box[0], y=box[1], button='left',
                clickCount=1)

  def type(self, text: str) -> None:
    """Types `text` into whatever has the focus."""
    self.send('Input.insertText', text=text)

  def press(self, key: str) -> None:
    """One key (a printable character) pressed and released."""
    self.send('Input.dispatchKeyEvent', type='keyDown', key=key, text=key)
    self.send('Input.dispatchKeyEvent', type='keyUp', key=key)

  def choose(self, selector: str, value: str) -> None:
    """Chooses the option `value` of a <select>, as picking it from the list does."""
    self.evaluate(f'''(() => {{
        const select = document.querySelector({json.dumps(selector)});
        select.value = {json.dumps(value)};
        select.dispatchEvent(new Event('change', {{bubbles: true}}));
      }})()''')

  def choose_files(self, selector: str, paths: List[str]) -> None:
    """Gives a file <input> these files, as the file chooser does (its change event fires)."""
    document = self.send('DOM.getDocument')['root']['nodeId']
    node = self.send('DOM.querySelector', nodeId=document, selector=selector)['nodeId']
    self.send('DOM.setFileInputFiles', nodeId=node, files=[os.path.abspath(p) for p in paths])

  def screenshot(self, path: str) -> None:
    with open(path, 'wb') as handle:
      handle.write(base64.b64decode(self.send('Page.captureScreenshot', format='png')['data']))
