"""Webhooks are requests the server makes for a client: by default they may not reach the server's own network
(loopback, private ranges, the cloud metadata address), neither by address, by name, nor through a redirect."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, HTTPServer
from threading import Thread

import pytest
from service_kit import WebhookReceiver

from headshot.service.limits import ServiceError
from headshot.service.webhooks import check_webhook_url, deliver, private_address


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_a_webhook_to_a_non_public_address_is_refused_at_submission(url):
    with pytest.raises(ServiceError, match="not a public address.*--allow-private-webhooks"):
        check_webhook_url(url)


def test_a_public_address_and_the_operators_opt_in_pass():
    assert check_webhook_url("https://93.184.215.14/hook") == "https://93.184.215.14/hook"
    assert check_webhook_url("http://127.0.0.1:9/hook", allow_private=True) == "http://127.0.0.1:9/hook"


def test_a_name_that_resolves_to_loopback_is_caught_when_resolved():
    assert private_address("localhost", 80) is not None
    assert private_address("localhost.", 80) is not None


def test_delivery_to_loopback_is_not_made_unless_allowed():
    with WebhookReceiver() as receiver:
        assert deliver(receiver.url, "secret", {"id": "job_1"}, tries=1) is False
        assert receiver.calls == []
        assert deliver(receiver.url, "secret", {"id": "job_1"}, tries=1, allow_private=True) is True
        assert len(receiver.calls) == 1


def test_a_redirect_is_not_followed():
    with WebhookReceiver() as target:

        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self):
                self.send_response(307)
                self.send_header("Location", target.url)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = HTTPServer(("127.0.0.1", 0), Redirect)
        Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            assert deliver(url, "secret", {"id": "job_1"}, tries=1, allow_private=True) is False
        finally:
            server.shutdown()
        assert target.calls == []
