"""Pipeline definition, its configuration, and what looks at a run afterwards."""
