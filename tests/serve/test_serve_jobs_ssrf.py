"""Webhooks never reach a non-public address: not by a name that rebinds between the check and
the connect (each attempt connects to the addresses it checked), and not by an IPv6 address that
carries a private IPv4 one (NAT64, 6to4, IPv4-compatible, IPv4-mapped, Teredo)."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest
from jobs_helpers import AUTH_A, SECRET, config, finished, requests, wait_until
from serve_helpers import HANG_GUARD, ThreadServer, write_config
from test_serve_jobs_webhooks import Receiver

from llmguard._serve.config import load
from llmguard._serve.jobs.addresses import is_public
from llmguard._serve.server import make_app

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


@pytest.mark.parametrize(("address", "public"), [
    ("64:ff9b::a9fe:a9fe", False),        # NAT64 of 169.254.169.254 (cloud metadata)
    ("64:ff9b:1::a00:1", False),          # local-use NAT64 of 10.0.0.1
    ("2002:7f00:1::1", False),            # 6to4 of 127.0.0.1
    ("::127.0.0.1", False),               # IPv4-compatible loopback
    ("::ffff:10.1.2.3", False),           # IPv4-mapped private
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo, client 192.0.2.45
    ("fd00::1", False), ("::1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("64:ff9b::808:808", True),           # NAT64 of a public address
    ("2001:4860:4860::8888", True), ("8.8.8.8", True),
])
def test_address_policy_sees_ipv4_inside_ipv6(address, public) -> None:
    """Each form routes to the IPv4 address it carries, so that address decides."""
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("host", ["[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::1]",
                                  "[::127.0.0.1]", "[::ffff:127.0.0.1]"])
def test_callback_to_embedded_private_address_is_refused(tmp_path, host) -> None:
    """Submitting a job whose callback_url is such an address is a 400."""
    from serve_helpers import served

    with served(write_config(tmp_path, config())) as server, \
            httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", json={"requests": requests(1),
                                        "callback_url": f"http://{host}/hook"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_callback_url"


def test_rebinding_name_cannot_redirect_a_webhook_to_loopback(tmp_path, monkeypatch) -> None:
    """``rebind.test`` answers a "public" address (127.0.0.2 stands for one here: no test sends
    traffic off this machine) and 127.0.0.1 by turns. The webhook is delivered to the address
    that was checked, never to the loopback receiver on the same port."""
    public = Receiver(host="127.0.0.2")
    loopback = Receiver(port=public.port)
    real_is_global = ipaddress.IPv4Address.is_global
    monkeypatch.setattr(ipaddress.IPv4Address, "is_global", property(
        lambda self: str(self) == "127.0.0.2" or real_is_global.fget(self)))
    real_getaddrinfo = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = "127.0.0.2" if len(answers) % 2 == 0 else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    app = make_app(load(str(write_config(tmp_path, config()))))
    server = ThreadServer(app, loop="asyncio")  # asyncio's getaddrinfo is socket's
    with public, loopback, server, \
            httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", json={"requests": requests(1),
                                        "callback_url": f"http://rebind.test:{public.port}/h"})
        assert r.status_code == 202, r.text
        job = wait_until(http, r.json()["id"],
                         lambda j: finished(j) and (j["webhook"]["delivered"] or loopback.received))
    assert loopback.received == []
    assert [ok for ok, _body in public.received] == [True]
    assert job["webhook"]["delivered"]
    assert len(answers) >= 3  # the check at submit, then one resolution per attempt
