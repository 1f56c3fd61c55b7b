"""The command line every runner shares: the flags that fill the configuration, the exit codes and
the one-line errors."""
