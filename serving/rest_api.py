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
from typing import Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf


class BadRequest(Exception):
  """A request TF Serving would answer with 400 and `{"error": message}`."""


# rapidjson's type names and TensorFlow's DataTypeString, which TF Serving's messages use.
_JSON_TYPES = ((bool, 'Bool'), (dict, 'Object'), (list, 'Array'), (str, 'String'),
               ((int, float), 'Number'), (type(None), 'Null'))
_MESSAGE_VALUE_CHARACTERS = 256  # TF Serving cuts the JSON it quotes in a message here
_MAX_TENSOR_RANK = 254  # TensorShape's limit: deeper JSON arrays cannot be a tensor


def _json_type(value: Any) -> str:
  return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def _quoted(value: Any) -> str:
  """A JSON value as TF Serving quotes it in a message (at most 256 characters)."""
  return json.dumps(value, separators=(', ', ': '))[:_MESSAGE_VALUE_CHARACTERS]


def _dtype_name(dtype: tf.DType) -> str:
  """TensorFlow's DataTypeString ('float', 'string', 'int64') of a dtype."""
  return {tf.float32: 'float', tf.float64: 'double'}.get(dtype, dtype.name)


def parse_request(body: bytes) -> Tuple[str, str, Any]:
  """(signature name, 'instances' or 'inputs', the payload) of a predict request body."""
  if not body.strip():
    raise BadRequest('JSON Parse error: The document is empty')
  try:
    request = json.loads(body)
  except (ValueError, UnicodeDecodeError) as error:
    raise BadRequest(f'JSON Parse error: {error}') from None
  except RecursionError:
    raise BadRequest('JSON Parse error: arrays or objects nested too deeply') from None
  if not isinstance(request, dict):
    raise BadRequest(f'JSON Value: {_quoted(request)} Is not object')
  signature_name = request.get('signature_name', 'serving_default')
  if not isinstance(signature_name, str):
    raise BadRequest(f"JSON Value: {_quoted(request)} not formatted correctly. "
                     "'signature_name' key must be a string value.")
  forms = [form for form in ('instances', 'inputs') if form in request]
  if not forms:
    raise BadRequest("Missing 'inputs' or 'instances' key")
  if len(forms) == 2:
    raise BadRequest(f"JSON Value: {_quoted(request)} Not formatted correctly expecting only "
                     "one of 'inputs' or 'instances' keys to exist ")
  payload = request[forms[0]]
  if forms[0] == 'instances' and not isinstance(payload, list):
    raise BadRequest(f"JSON Value: {_quoted(request)} Expecting 'instances' to be an list/array")
  if forms[0] == 'instances' and not payload:
    raise BadRequest(f"JSON Value: {_quoted(request)} No values in 'instances' array")
  return signature_name, forms[0], payload


def _leaf(value: Any, dtype: tf.DType) -> Any:
  """One element of a tensor from JSON: a string (or {"b64": ...}) for DT_STRING, a number or a
  bool for the numeric types; BadRequest in TF Serving's words otherwise."""
  if dtype == tf.string:
    if isinstance(value, str):
      return value.encode()  # A plain string is taken as it is, as TF Serving does.
    if isinstance(value, dict):
      if set(value) != {'b64'} or not isinstance(value['b64'], str):
        raise BadRequest(f'JSON Value: {_quoted(value)} not formatted correctly for base64 data')
      try:
        return base64.b64decode(value['b64'], validate=True)
      except (binascii.Error, ValueError):
        raise BadRequest('Unable to base64 decode') from None
  elif dtype == tf.bool:
    if isinstance(value, bool):
      return value
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    return value
  raise BadRequest(f'JSON Value: {_quoted(value)} Type: {_json_type(value)} is not of expected '
                   f'type: {_dtype_name(dtype)}')


def _elements(value: Any, dtype: tf.DType, depth: int = 0) -> Any:
  if isinstance(value, list):
    if depth == _MAX_TENSOR_RANK:
      raise BadRequest(f'JSON Value: arrays nested more than {_MAX_TENSOR_RANK} deep; a tensor '
                       f'has at most {_MAX_TENSOR_RANK} dimensions')
    return [_elements(item, dtype, depth + 1) for item in value]
  return _leaf(value, dtype)


def _to_array(elements: Any, spec: tf.TensorSpec, name: str) -> np.ndarray:
  """The array of already converted elements (`_elements`), checked against the signature."""
  if spec.dtype == tf.string:
    array = np.array(elements, dtype=object)
  else:
    try:
      array = np.asarray(elements, dtype=spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as error:
      raise BadRequest(f'input {name!r}: not a {spec.dtype.name} array: {error}') from None
  if not spec.shape.is_compatible_with(array.shape):
    raise BadRequest(f'Expecting shape {spec.shape.as_list()} but got: {list(array.shape)} '
                     f'(input {name})')
  return array


def _is_named(instance: Any) -> bool:
  """An instance given as {input name: value}, not a value ({"b64": ...} is a value)."""
  return isinstance(instance, dict) and set(instance) != {'b64'}


def _row_columns(payload: List[Any], input_specs: Dict[str, tf.TensorSpec]
                 ) -> Dict[str, List[Any]]:
  names = sorted(input_specs)
  if len(names) > 1 and not all(_is_named(instance) for instance in payload):
    raise BadRequest('instances is a plain list, but expecting list of objects as multiple input '
                     'tensors required as per tensorinfo_map')
  columns = {name: [] for name in names}
  for index, instance in enumerate(payload):
    if not _is_named(instance):
      columns[names[0]].append(instance)
      continue
    for key in instance:
      if key not in input_specs:
        raise BadRequest(f"Failed to process element: {index} key: {key} of 'instances' list. "
                         f'Error: INVALID_ARGUMENT: JSON object: does not have named input: {key}')
    if set(instance) != set(names):
      raise BadRequest(f"Failed to process element: {index} of 'instances' list. JSON object: "
                       f'{_quoted(instance)} keys must be equal to: {",".join(names)}')
    for name in names:
      columns[name].append(instance[name])
  return columns


def request_inputs(form: str, payload: Any,
                   input_specs: Dict[str, tf.TensorSpec]) -> Dict[str, np.ndarray]:
  """The signature's input arrays from an 'instances' or 'inputs' payload."""
  names = sorted(input_specs)
  if form == 'instances':
    columns = _row_columns(payload, input_specs)
    elements = {name: [] for name in names}
    for index in range(len(payload)):
      for name in names:
        try:
          elements[name].append(_elements(columns[name][index], input_specs[name].dtype))
        except BadRequest as error:
          raise BadRequest(f"Failed to process element: {index} of 'instances' list. Error: "
                           f'INVALID_ARGUMENT: {error}') from None
    return {name: _to_array(elements[name], input_specs[name], name) for name in names}
  if isinstance(payload, dict) and set(payload) != {'b64'}:
    for name in names:
      if name not in payload:
        raise BadRequest(f"Missing named input: {name} in 'inputs' object.")
    columns = {name: payload[name] for name in names}  # other names are ignored, as there
  elif len(names) == 1:
    columns = {names[0]: payload}
  else:
    raise BadRequest('inputs is a plain value/list, but expecting an object as multiple input '
                     'tensors required as per tensorinfo_map')
  return {name: _to_array(_elements(columns[name], input_specs[name].dtype), input_specs[name],
                          name) for name in names}


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

