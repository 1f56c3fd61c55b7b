"""The JSON conventions of TensorFlow Serving's REST predict API, without the HTTP.

Requests come in two forms (https://www.tensorflow.org/tfx/serving/api_rest):
- row ("instances"): a list with one entry per example; with one signature input an entry is
  the value itself (or `{input_name: value}`), with several it is `{input_name: value, ...}`;
  the answer is `{"predictions": [...]}`, one entry per example.
- columnar ("inputs"): the batched value for a one-input signature, or `{input_name: batch}`;
  the answer is `{"outputs": ...}`.
Binary strings travel as `{"b64": "<base64>"}`. Outputs whose name ends in `_bytes`, and strings
that are not UTF-8, are answered the same way.
"""

import base64
import binascii
import json
from typing import Any, Dict, Tuple

import numpy as np
import tensorflow as tf


class BadRequest(Exception):
  """A request TF Serving would answer with 400 and `{"error": message}`."""


def parse_request(body: bytes) -> Tuple[str, str, Any]:
  """(signature name, 'instances' or 'inputs', the payload) of a predict request body."""
  try:
    request = json.loads(body)
  except (ValueError, UnicodeDecodeError) as error:
    raise BadRequest(f'JSON Parse error: {error}') from None
  if not isinstance(request, dict):
    raise BadRequest('JSON Value is not an object')
  forms = [form for form in ('instances', 'inputs') if form in request]
  if len(forms) != 1:
    raise BadRequest("Missing 'inputs' or 'instances' key" if not forms else
                     "Not formatted correctly, expecting only one of 'inputs' or 'instances' keys")
  signature_name = request.get('signature_name', 'serving_default')
  if not isinstance(signature_name, str):
    raise BadRequest("'signature_name' key must be a string")
  return signature_name, forms[0], request[forms[0]]


def _decode_strings(value: Any) -> Any:
  """JSON value → the same nesting with {"b64": ...} and strings turned into bytes."""
  if isinstance(value, dict):
    if set(value) != {'b64'} or not isinstance(value['b64'], str):
      raise BadRequest(f'expected a string or {{"b64": "<base64>"}}, got an object with keys '
                       f'{sorted(value)}')
    try:
      return base64.b64decode(value['b64'], validate=True)
    except (binascii.Error, ValueError):
      raise BadRequest('Unable to base64 decode') from None
  if isinstance(value, str):
    return value.encode()
  if isinstance(value, list):
    return [_decode_strings(item) for item in value]
  raise BadRequest(f'expected a string or {{"b64": "<base64>"}}, got {json.dumps(value)[:40]}')


def _to_array(values: Any, spec: tf.TensorSpec, name: str) -> np.ndarray:
  if spec.dtype == tf.string:
    array = np.array(_decode_strings(values), dtype=object)
  else:
    try:
      array = np.asarray(values, dtype=spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as error:
      raise BadRequest(f'input {name!r}: not a {spec.dtype.name} array: {error}') from None
  if not spec.shape.is_compatible_with(array.shape):
    raise BadRequest(f'input {name!r} has shape {list(array.shape)}, the signature expects '
                     f'{spec.shape.as_list()}')
  return array


def request_inputs(form: str, payload: Any,
                   input_specs: Dict[str, tf.TensorSpec]) -> Dict[str, np.ndarray]:
  """The signature's input arrays from an 'instances' or 'inputs' payload."""
  names = sorted(input_specs)
  if form == 'instances':
    if not isinstance(payload, list) or not payload:
      raise BadRequest("'instances' must be a non-empty list")
    if len(names) == 1:
      only = names[0]
      columns = {only: [instance[only] if isinstance(instance, dict) and set(instance) == {only}
                        else instance for instance in payload]}
    else:
      columns = {name: [] for name in names}
      for instance in payload:
        if not isinstance(instance, dict) or set(instance) != set(names):
          raise BadRequest(f'each instance must be an object with the keys {names}')
        for name in names:
          columns[name].append(instance[name])
  else:
    if isinstance(payload, dict) and set(payload) == set(names):
      columns = payload
    elif len(names) == 1:
      columns = {names[0]: payload}
    else:
      raise BadRequest(f"'inputs' must be an object with the keys {names}")
  return {name: _to_array(columns[name], input_specs[name], name) for name in names}


def _json_value(name: str, value: Any) -> Any:
  if isinstance(value, np.ndarray):
    return [_json_value(name, item) for item in value]
  if isinstance(value, bytes):
    if not name.endswith('_bytes'):
      try:
        return value.decode('utf-8')
      except UnicodeDecodeError:
        pass
    return {'b64': base64.b64encode(value).decode('ascii')}
  if isinstance(value, np.generic):
    return value.item()
  return value


def response_body(form: str, outputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """{"predictions": rows} for the row form, {"outputs": ...} for the columnar form."""
  names = sorted(outputs)
  if form == 'instances':
    batch = len(next(iter(outputs.values())))
    if len(names) == 1:
      return {'predictions': _json_value(names[0], outputs[names[0]])}
    return {'predictions': [{name: _json_value(name, outputs[name][row]) for name in names}
                            for row in range(batch)]}
  if len(names) == 1:
    return {'outputs': _json_value(names[0], outputs[names[0]])}
  return {'outputs': {name: _json_value(name, outputs[name]) for name in names}}

