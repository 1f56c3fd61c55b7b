"""One readable line from a TensorFlow error, for error lines and `{"error": ...}` answers."""

_NOISE_PREFIXES = ('Graph execution error', 'Detected at node', '<stack traces', '[[', 'File "')
_ASSERTION = 'assertion failed: '


def tensorflow_error_line(message: str) -> str:
  """'Graph execution error: … Unknown image file format. …' → 'Unknown image file format. …'
  (the first line that is not TensorFlow's preamble, node name or stack); a failed assertion of
  the model's own checks, 'assertion failed: [Image too large] [30000]', → 'Image too large
  30000'."""
  lines = [line.strip() for line in str(message).splitlines()]
  meaningful = [line for line in lines if line and not line.startswith(_NOISE_PREFIXES)]
  line = (meaningful or [line for line in lines if line] or ['unknown error'])[0]
  if _ASSERTION in line:
    line = line.split(_ASSERTION, 1)[1].strip().strip('[]').replace('] [', ' ')
  return line
