"""What every command of the project shares: a bad flag is one line on stderr and exit code 2."""

import argparse

EXIT_USAGE = 2


class OneLineArgumentParser(argparse.ArgumentParser):
  """argparse, but a bad flag is one line on stderr and exit code 2."""

  def error(self, message):
    self.exit(EXIT_USAGE, f'{self.prog}: error: {message}\n')
