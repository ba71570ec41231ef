"""Why the predictor refused a request: the codes of ``ProcessResponse.refusal_reason``.

Shared vocabulary of the private session: the predictor's policy and tasks
choose a code, the client reads it, and the event registry counts refusals
by code (one counter per member). A code is the wire string itself (a
:class:`~enum.StrEnum`); it never carries the text that was refused.
"""

from __future__ import annotations

import enum


class RefusalCode(enum.StrEnum):
    """Codes the client receives in ``ProcessResponse.refusal_reason``."""

    VIOLENCE = "violence"
    WEAPONS = "weapons"
    SELF_HARM = "self_harm"
    SEXUAL_MINORS = "sexual_minors"
    ILLEGAL_DRUGS = "illegal_drugs"
    MALWARE = "malware"
    HATE = "hate"
    #: The model's output failed the output screen.
    OUTPUT_BLOCKED = "output_blocked"
    UNSUPPORTED_TASK = "unsupported_task"
    UNSUPPORTED_STYLE = "unsupported_style"
    EMPTY_INPUT = "empty_input"
    INPUT_TOO_LARGE = "input_too_large"
    #: The model produced nothing usable.
    NO_OUTPUT = "no_output"
