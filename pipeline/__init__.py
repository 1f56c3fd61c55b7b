"""The pipeline definition: its configuration and flags, the components and their wiring, the
Evaluator's metrics and gate."""
