"""The argparse help formatter of the user-facing commands (``mal label``, ``mal export``, ``mal review``).

Its own module (argparse only) so that every command imports it from here and no command module has to
import another one for it.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends each option's default; a None or "" default is left to the
    help text, which says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default in (None, "") else super()._get_help_string(action)


__all__ = ["HelpFormatter"]
