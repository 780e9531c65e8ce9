"""Kibana saved objects (data view, saved searches, dashboard) and their import.

The objects live in agent/kibana/objects.ndjson (Kibana 8 saved-object export format). Import uses
POST /api/saved_objects/_import?overwrite=true as multipart/form-data with the `kbn-xsrf` header Kibana
requires, over stdlib urllib only, so `setup` needs nothing beyond the agent's own dependencies.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path

OBJECTS = Path(__file__).with_name("kibana") / "objects.ndjson"
# The fleet dashboard, over the status index (agent/fleet.py).
FLEET_OBJECTS = OBJECTS.with_name("fleet.ndjson")


class KibanaImportError(RuntimeError):
    """Kibana refused the request or some objects; the message names what and why."""


def multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    """(body, content type) for a single file field named `file`, which is what _import reads."""
    boundary = f"log-shipper-{uuid.uuid4().hex}"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def import_objects(
    kibana_url: str,
    *,
    ndjson: Path = OBJECTS,
    space: str | None = None,
    username: str | None = None,
    password: str | None = None,
    api_key: str | None = None,
    ca_file: str | None = None,
    timeout_s: float = 30.0,
) -> dict:
    """Import (overwriting by id) the saved objects; returns Kibana's answer, raises KibanaImportError."""
    base = kibana_url.rstrip("/") + (f"/s/{space}" if space else "")
    body, content_type = multipart(ndjson.name, ndjson.read_bytes())
    headers = {"kbn-xsrf": "true", "Content-Type": content_type}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(
        f"{base}/api/saved_objects/_import?overwrite=true", data=body, headers=headers, method="POST"
    )
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        detail = e.read()[:500].decode("utf-8", "replace")
        raise KibanaImportError(f"Kibana answered {e.code} to the import: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise KibanaImportError(f"Kibana at {kibana_url} is not reachable: {e}") from None
    if not answer.get("success"):
        errors = [f"{x.get('type')}/{x.get('id')}: {x.get('error', {}).get('type')}" for x in answer.get("errors", [])]
        raise KibanaImportError("Kibana refused some saved objects: " + ("; ".join(errors) or json.dumps(answer)[:500]))
    return answer
