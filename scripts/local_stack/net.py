"""Loopback probes the readiness checks are made of: a TCP connect, and a GET without proxies."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.request


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def open_url(url: str | urllib.request.Request, context: ssl.SSLContext | None = None,
             timeout: float = 2) -> http.client.HTTPResponse:
    # No proxies: an http(s)_proxy in the environment must not capture requests to 127.0.0.1.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    response: http.client.HTTPResponse = urllib.request.build_opener(*handlers).open(url, timeout=timeout)
    return response
