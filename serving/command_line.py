"""What the serving commands share: a bad flag is one line on stderr and exit code 2.

(The same rule as cli/command_line.py; serving/ depends on nothing of the pipeline.)
"""

import argparse

EXIT_USAGE = 2


class OneLineArgumentParser(argparse.ArgumentParser):

  def error(self, message):
    self.exit(EXIT_USAGE, f'{self.prog}: error: {message}\n')
