"""Attacks played against the stack, one package per trust domain (issue 11).

Each test plays one attack an adversary in that domain (or a user attacking
it) can mount and asserts that it now fails: ``relay`` (third party A: the
client's address, sizes, timing, slow connections), ``gateway`` (the
operator's front: sessions, tokens, rate limits), ``cdn_ledger`` (third
party B: the key CDN, the log and its publishers), ``host`` (the CVM's host
and co-tenants: what leaves the CVM, what one session can cost others, what
firmware runs) and ``client`` (the device's own state and interop).
"""
