"""`/openapi.json` documents the uploads, and `/docs` works offline: Swagger UI from the installed
package, an upload tried from the page itself in headless Chromium."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import requests
from PIL import Image

from liveml.serving import swagger
from liveml.tasks import get_task

TASKS = ("defects", "speech")


def schema_of(url: str) -> dict:
    r = requests.get(f"{url}/openapi.json", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def input_bytes(media_type: str, defect_image_file: Path, speech_wav_file: Path) -> bytes:
    """A real input file of `media_type`, from the tiny pipeline's test splits."""
    if media_type == "image/png":
        return defect_image_file.read_bytes()
    if media_type == "image/jpeg":
        out = io.BytesIO()
        Image.open(defect_image_file).convert("RGB").save(out, "JPEG")
        return out.getvalue()
    assert media_type.startswith("audio/"), media_type  # every speech type names a WAV
    return speech_wav_file.read_bytes()


def test_each_upload_endpoint_documents_its_request_body(live_server):
    schema = schema_of(live_server)
    # Swagger UI of the swagger-ui-bundle package renders OpenAPI 3.0 documents only.
    assert schema["openapi"].startswith("3.0.")
    assert "/v1/{task}" not in schema["paths"]  # one operation per served task instead
    for task in TASKS:
        op = schema["paths"][f"/v1/{task}"]["post"]
        body = op["requestBody"]
        assert body["required"] is True
        accepted = set(get_task(task).media_types)
        assert set(body["content"]) == {"multipart/form-data", *accepted}
        form = body["content"]["multipart/form-data"]
        field = form["schema"]["properties"]["file"]
        assert form["schema"]["required"] == ["file"]
        assert field["items"] == {"type": "string", "format": "binary"}
        assert set(form["encoding"]["file"]["contentType"].split(", ")) == accepted
        for media_type in accepted:
            assert body["content"][media_type]["schema"]["format"] == "binary"
        assert "application/json" in op["responses"]["200"]["content"]
        assert op["responses"]["415"]["content"]["application/json"]["schema"]["required"] == [
            "error"
        ]
    # The loaded model's query parameters are documented too.
    params = schema["paths"]["/v1/defects"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in params] == [("min_score", "query")]
    # No token on this server: no security scheme.
    assert "securitySchemes" not in schema.get("components", {})


def test_posting_exactly_what_the_schema_describes_works(
    live_server, defect_image_file, speech_wav_file
):
    schema = schema_of(live_server)
    for task in TASKS:
        content = schema["paths"][f"/v1/{task}"]["post"]["requestBody"]["content"]
        for media_type, spec in content.items():
            if media_type == "multipart/form-data":
                # Every property the form schema names, as many files as it allows up to 2,
                # each part with a content type its encoding lists.
                (name,) = spec["schema"]["required"]
                part_type = spec["encoding"][name]["contentType"].split(", ")[0]
                n = min(2, spec["schema"]["properties"][name]["maxItems"])
                data = input_bytes(part_type, defect_image_file, speech_wav_file)
                files = [(name, (f"in{i}", data, part_type)) for i in range(n)]
                r = requests.post(f"{live_server}/v1/{task}", files=files, timeout=60)
                expected = n
            else:
                assert spec["schema"] == {"type": "string", "format": "binary"}
                data = input_bytes(media_type, defect_image_file, speech_wav_file)
                r = requests.post(
                    f"{live_server}/v1/{task}",
                    data=data,
                    headers={"Content-Type": media_type},
                    timeout=60,
                )
                expected = 1
            assert r.status_code == 200, (task, media_type, r.text)
            assert len(r.json()["results"]) == expected


def test_docs_page_loads_only_local_assets(live_server):
    r = requests.get(f"{live_server}/docs", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "://" not in html, "the page names another host"
    refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert sorted(refs) == sorted(
        [
            f"{swagger.STATIC}/swagger-ui-bundle.js",
            f"{swagger.STATIC}/swagger-ui.css",
            f"{swagger.STATIC}/favicon-32x32.png",
            "/openapi.json",
        ]
    )
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}
    for ref in refs:
        got = requests.get(f"{live_server}{ref}", timeout=10)
        assert got.status_code == 200, ref
        kind = next(k for s, k in kinds.items() if ref.endswith(s))
        assert kind in got.headers["content-type"], (ref, got.headers["content-type"])
    js = requests.get(f"{live_server}{swagger.STATIC}/swagger-ui-bundle.js", timeout=10)
    assert len(js.content) > 100_000 and b"SwaggerUIBundle" in js.content


def test_only_the_pages_assets_are_served_and_redoc_is_off(live_server):
    for path in (
        f"{swagger.STATIC}/index.html",
        f"{swagger.STATIC}/swagger-ui.js.map",
        f"{swagger.STATIC}/..%2F__init__.py",
        f"{swagger.STATIC}/../../etc/passwd",
        "/redoc",
    ):
        r = requests.get(f"{live_server}{path}", timeout=10)
        assert r.status_code == 404, path


def test_a_token_adds_the_bearer_scheme_to_the_guarded_operations(server_with):
    with server_with(capture_sample=0, token="s3cret", public_endpoints=("docs",)) as (url, _):
        schema = schema_of(url)
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        for path in ("/v1/defects", "/v1/speech", "/v1/models", "/metrics"):
            for op in schema["paths"][path].values():
                assert op["security"] == [{"bearer": []}], path
        for path in ("/healthz", "/readyz"):
            assert "security" not in schema["paths"][path]["get"]


@pytest.fixture(scope="module")
def browser():
    from browser import Browser

    with Browser(timeout=30) as b:
        yield b


OP = "#operations-default-predict_%s"  # Swagger UI's id of an operation (tag, operationId)

OPEN = """(() => {
  const op = document.querySelector('%(op)s');
  if (!op) return false;
  if (!op.classList.contains('is-open')) {
    (op.querySelector('.opblock-summary-control') || op.querySelector('.opblock-summary')).click();
    return false;
  }
  const btn = op.querySelector('.try-out__btn');
  if (!btn) return false;
  if (!op.querySelector('.execute')) { btn.click(); return false; }
  return true;
})()"""

CHOOSE_TYPE = """(() => {
  const select = document.querySelector('%(op)s .body-param-content-type select');
  select.value = '%(media_type)s';
  select.dispatchEvent(new Event('change', {bubbles: true}));
  return [...select.options].map(o => o.value);
})()"""

# A file input for the body: a raw body has one; the multipart field `file` is an array whose
# first item the "Add item" button makes.
FILE_INPUT = """(() => {
  if (document.querySelector('%(op)s input[type=file]')) return true;
  const add = document.querySelector('%(op)s .json-schema-form-item-add');
  if (add) add.click();
  return false;
})()"""

STATUS = """(() => {
  const cell = document.querySelector('%(op)s .live-responses-table tbody .response-col_status');
  return cell ? cell.textContent.trim() : '';
})()"""

BODY = """document.querySelector(
  '%(op)s .live-responses-table tbody .response-col_description pre'
).textContent"""

CURL = "document.querySelector('%(op)s .curl-command').textContent"


def test_try_it_out_uploads_from_the_docs_page_offline(
    browser, live_server, defect_image_file, speech_wav_file
):
    """Swagger UI itself sends the uploads the schema describes: a multipart form (the
    default) and a raw body, and the page asks nothing of any other host."""
    browser.requests.clear()
    browser.open(f"{live_server}/docs")
    for task, media_type, path, sent in (
        ("defects", "multipart/form-data", defect_image_file, "-F 'file=@"),
        ("speech", "audio/wav", speech_wav_file, "Content-Type: audio/wav"),
    ):
        args = {"op": OP % task, "media_type": media_type}
        browser.wait_for(OPEN % args)
        options = browser.evaluate(CHOOSE_TYPE % args)
        assert options[0] == "multipart/form-data" and media_type in options
        browser.wait_for(FILE_INPUT % args)
        browser.set_files(f"{OP % task} input[type=file]", [path])
        browser.evaluate(f"document.querySelector('{OP % task} .execute').click()")
        status = browser.wait_for(STATUS % args, timeout=60)
        assert status == "200", (task, media_type, browser.evaluate(BODY % args))
        assert '"results"' in browser.evaluate(BODY % args)
        assert sent in browser.evaluate(CURL % args)  # what Swagger UI sent, as curl
    others = [u for u in browser.requests if not u.startswith((live_server, "data:", "blob:"))]
    assert others == []
    assert browser.console_errors == []
