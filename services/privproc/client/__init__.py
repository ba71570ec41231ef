"""The client SDK: what runs on the device."""

from privproc.client.ohttp_client import OhttpClient, Receipt

__all__ = ["OhttpClient", "Receipt"]
