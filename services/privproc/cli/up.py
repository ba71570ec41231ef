"""``privproc up``: start the whole stack locally (see :mod:`privproc.stack`).

Its flags come from :class:`privproc.stack.StackConfig` and are added when
``up`` (or ``demo``) runs: other commands never import every service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from privproc import events
from privproc.cli import options
from privproc.runtime import settings


def register(sub: Any) -> None:
    options.lazy_command(sub, "up", "start the whole stack locally", stack_parser, up_cmd)


def stack_parser(prog: str, *, exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser of :class:`~privproc.stack.StackConfig`'s flags (``up``, ``demo``)."""
    from privproc.stack import StackConfig

    parser = argparse.ArgumentParser(prog=prog, description=StackConfig.__doc__)
    settings.add_arguments(parser, StackConfig, exclude=exclude)
    return parser


def up_cmd(args: argparse.Namespace) -> int:
    from privproc.stack import StackConfig, up

    config = settings.load(StackConfig, args, os.environ)
    events.configure_logging("stack")
    return asyncio.run(up(config))
