"""Resolver strategy for the Evaluator's baseline: the latest blessed model, but not the candidate.

TFX's LatestBlessedModelStrategy returns the newest blessed model even when it is the very model
being evaluated (an unchanged rerun whose Trainer was cached). Comparing a model with itself
proves nothing, and it changes the Evaluator's inputs, so an unchanged rerun could never be fully
cached. This strategy also receives the candidate model and skips it.

It also skips models exported before the operating point existed (no `operating_point`
property): their SavedModel lacks the outputs the Evaluator reads, so they cannot be evaluated
beside the candidate.
"""

from typing import Callable, Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

MODEL_KEY = 'model'
MODEL_BLESSING_KEY = 'model_blessing'
CANDIDATE_KEY = 'candidate'
# ModelBlessing custom properties written by the Evaluator.
_BLESSED = 'blessed'
_CURRENT_MODEL_ID = 'current_model_id'
# Model custom property written by the Trainer's executor (components/trainer/executor.py).
_OPERATING_POINT = 'operating_point'


def newest_blessed_model(input_dict: Dict[str, List[types.Artifact]],
                         accept: Callable[[types.Artifact], bool]
                         ) -> Dict[str, List[types.Artifact]]:
  """{'model': [the newest blessed model `accept` takes], 'model_blessing': [its blessing]}, or
  both empty; from a resolver's `model` and `model_blessing` inputs."""
  blessing_of_model = {
      blessing.get_int_custom_property(_CURRENT_MODEL_ID): blessing
      for blessing in input_dict.get(MODEL_BLESSING_KEY, [])
      if blessing.get_int_custom_property(_BLESSED) == 1
  }
  for model in sorted(input_dict.get(MODEL_KEY, []), key=lambda artifact: -artifact.id):
    if model.id in blessing_of_model and accept(model):
      return {MODEL_KEY: [model], MODEL_BLESSING_KEY: [blessing_of_model[model.id]]}
  return {MODEL_KEY: [], MODEL_BLESSING_KEY: []}


class LatestBlessedOtherModelStrategy(resolver.ResolverStrategy):
  """Inputs: `model` and `model_blessing` (all of them) and `candidate` (the Trainer's model)."""

  def resolve_artifacts(
      self, store, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    candidate_ids = {artifact.id for artifact in input_dict.get(CANDIDATE_KEY, [])}
    return {**{key: [] for key in input_dict},
            CANDIDATE_KEY: list(input_dict.get(CANDIDATE_KEY, [])),
            **newest_blessed_model(input_dict, lambda model: (
                model.id not in candidate_ids and model.has_custom_property(_OPERATING_POINT)))}


