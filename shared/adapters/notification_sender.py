"""POSTs a run notification to an endpoint: bounded timeouts, no redirects followed (a 3xx is an
answer, not a delivery). An error names the endpoint's host only: a URL's path or query may hold a
token, and the HTTP library's exceptions quote them."""

from __future__ import annotations

import requests

from shared.domain.notifications import endpoint_label
from shared.service_layer.ports import DeliveryError

# (connect, read) seconds: a receiver that hangs costs a sender thread this long per try, no more.
TIMEOUT = (5.0, 10.0)


class HttpNotificationSender:
    def __init__(self, timeout: tuple[float, float] = TIMEOUT):
        self.timeout = timeout

    def post(self, url: str, headers: dict[str, str], body: bytes) -> None:
        where = endpoint_label(url)
        try:
            answer = requests.post(url, data=body, headers=headers, timeout=self.timeout,
                                       allow_redirects=False)
        except requests.Timeout:
            raise DeliveryError(f"{where} did not answer in time") from None
        except requests.ConnectionError:
            raise DeliveryError(f"cannot connect to {where}") from None
        except requests.RequestException as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}") from None
        answer.close()
        if not 200 <= answer.status_code < 300:
            raise DeliveryError(f"{where} answered HTTP {answer.status_code}")
