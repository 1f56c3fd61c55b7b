"""The serving check before the push: canary requests to the candidate in a fresh process."""
