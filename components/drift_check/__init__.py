"""DriftCheck: the newest span against the previous one."""
