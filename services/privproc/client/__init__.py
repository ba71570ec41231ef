"""The client SDK: what runs on the device."""

from privproc.client.ohttp_client import OhttpClient, Receipt
from privproc.client.tokens import TokenWallet

__all__ = ["OhttpClient", "Receipt", "TokenWallet"]
