"""HTTP to the dwasm service: :class:`Api` sends the requests and turns problem+json answers and
transport failures into :class:`~app.client.errors.ClientError` (exit status 7), so that the
commands deal only with successful answers."""

from __future__ import annotations

from typing import Any

from .errors import EXIT_SERVICE, ClientError


class Api:
    """A thin synchronous client: turns problem answers and transport failures into
    :class:`ClientError` with exit status 7."""

    def __init__(self, url: str, token: str | None, timeout: float = 60) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Sends one request; returns the decoded JSON body of a 2xx answer (None if empty)."""
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot connect to the dwasm service at {self.url} ({exc}); is "
                              "the server running there? (set --url or DWASM_URL)",
                              EXIT_SERVICE) from None
        except httpx.TimeoutException:
            raise ClientError(f"the dwasm service at {self.url} did not answer in time",
                              EXIT_SERVICE) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}", EXIT_SERVICE) from None
        if response.status_code >= 400:
            raise _problem_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{method} {path}: the service answered {response.status_code} "
                              "with a body that is not JSON", EXIT_SERVICE) from None


def _problem_error(response: Any) -> ClientError:
    """The ``error:`` line of an error answer: the problem's detail (or title), and the
    field errors of a validation problem as detail lines (but not the one error that the
    detail already states)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:200]
        return ClientError(f"HTTP {response.status_code} {response.reason_phrase}"
                           + (f": {text}" if text else ""), EXIT_SERVICE)
    message = body.get("detail") or body.get("title") or f"HTTP {response.status_code}"
    details = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            loc = ".".join(str(p) for p in err.get("loc", []))
            line = f"{loc}: {err.get('msg', '')}"
            if line != message:
                details.append(f"  {line}")
    return ClientError(str(message), EXIT_SERVICE, details)


def resource_path(prefix: str, name: str, suffix: str = "") -> str:
    """``prefix/name/suffix`` with ``name`` escaped as one path segment (the server judges it)."""
    from urllib.parse import quote

    return f"{prefix}/{quote(name, safe='')}{suffix}"
