"""The local cluster's DNS: a stand-in for CoreDNS, which has no image without a registry.

Answers A queries for ``SERVICE.NAMESPACE.svc.cluster.local`` (the ClusterIP,
or the ready endpoint addresses of a headless Service, and
``HOSTNAME.SERVICE.NAMESPACE.svc.cluster.local`` for StatefulSet pods) and
``A-B-C-D.NAMESPACE.pod.cluster.local``, from Services and Endpoints it
reads from the API server once a second. Other names get NXDOMAIN: pods
here need no outside names. kubelet's ``clusterDNS`` points at it.

Usage: ``dns_stub.py LISTEN_IP API_SERVER CA_FILE CLIENT_CERT CLIENT_KEY`` (needs ``dnslib``,
the ``k8s`` extra of pyproject.toml).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import sys
import threading
import time
import urllib.request
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

DOMAIN = "cluster.local."
TTL = 5
REFRESH_SECONDS = 1.0


class ClusterNames:
    """Service and pod names -> IPv4 addresses, refreshed from the API server."""

    def __init__(self, api_server: str, context: ssl.SSLContext) -> None:
        self._api_server = api_server.rstrip("/")
        self._context = context
        self._lock = threading.Lock()
        self._records: dict[str, list[str]] = {}

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self._api_server + path, context=self._context, timeout=5) as reply:  # noqa: S310
            return json.load(reply)

    def refresh(self) -> None:
        endpoints = {
            (item["metadata"]["namespace"], item["metadata"]["name"]): item
            for item in self._get("/api/v1/endpoints")["items"]
        }
        records: dict[str, list[str]] = {}
        for service in self._get("/api/v1/services")["items"]:
            namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
            fqdn = f"{name}.{namespace}.svc.{DOMAIN}"
            cluster_ip = service["spec"].get("clusterIP")
            if cluster_ip and cluster_ip != "None":
                records[fqdn] = [cluster_ip]
                continue
            addresses = [
                address
                for subset in endpoints.get((namespace, name), {}).get("subsets") or []
                for address in subset.get("addresses") or []
            ]
            records[fqdn] = [address["ip"] for address in addresses]
            for address in addresses:
                if address.get("hostname"):
                    records[f"{address['hostname']}.{fqdn}"] = [address["ip"]]
        with self._lock:
            self._records = records

    def lookup(self, name: str) -> list[str] | None:
        """The addresses of ``name`` (lower-case, with the final dot), or None if it does not exist."""
        if name.endswith(".pod." + DOMAIN):
            try:
                return [str(ipaddress.IPv4Address(name.split(".", maxsplit=1)[0].replace("-", ".")))]
            except ValueError:
                return None
        with self._lock:
            return self._records.get(name)

    def run(self) -> None:
        while True:
            try:
                self.refresh()
            except (OSError, ValueError, KeyError) as err:
                # The API server restarts or is not up yet: keep the last answers and try again.
                print(f"dns-stub: refresh failed: {type(err).__name__}", flush=True)
            time.sleep(REFRESH_SECONDS)


class Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, names: ClusterNames) -> None:
        self._names = names

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        addresses = self._names.lookup(str(request.q.qname).lower())
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for address in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=TTL))
        return reply


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    listen, api_server, ca_file, cert_file, key_file = argv[1:]
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    names = ClusterNames(api_server, context)
    threading.Thread(target=names.run, name="refresh", daemon=True).start()
    for tcp in (False, True):
        DNSServer(Resolver(names), address=listen, port=53, tcp=tcp).start_thread()
    print(f"dns-stub: answering for {DOMAIN} on {listen}:53", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
