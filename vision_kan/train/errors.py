"""Exceptions for problems in what the user gave (paths, config, data, checkpoints), not in the code.

Library code raises these; only main.py turns them into one line on stderr and exit code 2.
"""

import sys
from typing import Callable

__all__ = ['UserInputError', 'ConfigError', 'DataError', 'CorruptImageError', 'CheckpointError', 'NonFiniteLossError',
           'error_line', 'run_cli']


class UserInputError(ValueError):
    """Base class: the message alone tells the user what to fix."""


class ConfigError(UserInputError):
    """An unknown config key, a wrongly typed value, or flags that do not fit together."""


class DataError(UserInputError):
    """A missing data path, a class folder without images, a batch larger than the data set."""


class CorruptImageError(DataError):
    """An image file that cannot be decoded; the message names the file."""


class CheckpointError(UserInputError):
    """A checkpoint that cannot be read or does not match the model."""


class NonFiniteLossError(UserInputError, FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is left as it was."""


def error_line(e: BaseException) -> str:
    """The one line a command-line tool prints for a user error: the message's first line (or the type's name)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def run_cli(body: Callable[[], object]) -> int:
    """A command-line tool's exit code: 0 when body returns, 2 after one `error: ...` line on stderr when it raises a
    UserInputError."""
    try:
        body()
    except UserInputError as e:
        print(f'error: {error_line(e)}', file=sys.stderr)
        return 2
    return 0
