"""TEST ONLY: a deliberate leak, to show that the canary test can fail (tests/e2e/test_canary.py).

Never on a real service's path: ``test_the_scan_finds_a_deliberately_leaked_canary`` puts this
directory first on the ``PYTHONPATH`` of the ``privproc up`` it starts, so that Python imports
this module at the start of every process of that stack, and of no other.

It declares one more event, ``test.canary_leak``, whose ``account`` field is an identifier, and
makes the ACS emit it with the id of every account it authenticates. An account id made of
canaries is lower-case letters and digits: it matches the identifier pattern, so the event
passes the registry's own checks, exactly as a careless real event would, and only the scan
catches it. The ACS is outside the CVM, so its events go straight to its log (the predictor's
would go through the allow-list sidecar, which drops what it does not know). The event is
declared in every process of the stack, not only the ACS, so that each one's allow-list (and
its digest, which the sidecar and the predictor's measurement check) is the same.
"""

from __future__ import annotations

from collections.abc import Callable

from privproc import events
from privproc.acs import accounts


class CanaryLeak(events.Event, name="test.canary_leak", level=events.Level.INFO):
    """TEST ONLY: the account the ACS authenticated (a deliberate leak)."""

    account: events.Ident


def _leaking(
    authenticate: Callable[[accounts.SignedCredentialAuthenticator, str], str],
) -> Callable[[accounts.SignedCredentialAuthenticator, str], str]:
    def leak(self: accounts.SignedCredentialAuthenticator, credential: str) -> str:
        account = authenticate(self, credential)
        events.emit(CanaryLeak(account=account))
        return account

    return leak


accounts.SignedCredentialAuthenticator.authenticate = _leaking(  # type: ignore[method-assign]
    accounts.SignedCredentialAuthenticator.authenticate
)
