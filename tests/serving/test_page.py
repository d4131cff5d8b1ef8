"""The web page at `/`, driven in headless Chromium against a live server (both tasks, torch).

The page knows no task: it builds one section per model that /v1/models lists (ids
`<task>-file`, `<task>-canvas`, ...), draws boxes for answers holding "detections" with a
"box", and shows every plain field of an answer. Fixtures `live_server`, `defect_image_file`
and `speech_wav_file` come from tests/serving/conftest.py. Every expectation is checked against
what the HTTP API itself answers for the same bytes, so the page is tested, not the models.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest
from PIL import Image

from browser import Browser

SERVED = ("defects", "speech")  # the tasks conftest's live_server serves

# Model calls on a busy CPU can be slow; the page only has to get there.
RESULT_TIMEOUT = 60
# The page's box colours, by the label's position in the model card's `classes`.
PALETTE = [(255, 0, 0), (0, 192, 0), (0, 96, 255), (255, 140, 0)]
# Loopback must never go through an http_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call_api(base: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple:
    """(status, parsed JSON) of one API call; error statuses are returned, not raised."""
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(base + path, data=body, headers=headers)
    try:
        with OPENER.open(request, timeout=RESULT_TIMEOUT) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.fixture
def base(live_server) -> str:
    """The server's base URL without a trailing slash (paths below start with one)."""
    return live_server.rstrip("/")


@pytest.fixture
def page(base):
    """A headless browser showing the page, once it has listed the models."""
    with Browser() as b:
        b.open(base + "/")
        b.wait_for("document.body.dataset.state === 'ready'")
        yield b


def canvas_pixel(b, x: int, y: int) -> tuple[int, int, int]:
    rgba = b.evaluate(
        "document.getElementById('defects-canvas').getContext('2d')"
        f".getImageData({x}, {y}, 1, 1).data.join(',')"
    )
    return tuple(int(v) for v in rgba.split(",")[:3])


def close_to(rgb: tuple[int, ...], expected: tuple[int, ...], tol: int = 8) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(rgb, expected, strict=True))


def test_page_lists_the_served_models(page, base):
    status, body = call_api(base, "/v1/models")
    assert status == 200, body
    models = body["models"]
    assert {m["task"] for m in models} == set(SERVED)

    shown = page.evaluate(
        "[...document.querySelectorAll('#models li')]"
        ".map(li => ({task: li.dataset.task, name: li.querySelector('strong').textContent,"
        " text: li.textContent}))"
    )
    assert sorted((s["task"], s["name"]) for s in shown) == sorted(
        (m["task"], m["name"]) for m in models
    )
    for m in models:
        assert any(m["runtime"] in s["text"] for s in shown if s["name"] == m["name"])
    # One section per served model, in the listing's order, its upload taking what the
    # endpoint accepts.
    sections = page.evaluate(
        "[...document.querySelectorAll('main section')].map(s => ({task: s.dataset.task,"
        " visible: s.checkVisibility(), accept: s.querySelector('input[type=file]').accept,"
        " params: [...s.querySelectorAll('input[data-param]')].map(i => i.dataset.param)}))"
    )
    assert [s["task"] for s in sections] == [m["task"] for m in models]
    for section, m in zip(sections, models, strict=True):
        assert section["visible"]
        assert set(section["accept"].split(",")) == {
            *m["accepts"],
            *(f".{x}" for x in m["suffixes"]),
        }
        assert section["params"] == list(m["parameters"])
    # Every form control has a label (screen readers), and nothing was fetched from elsewhere
    # (the machines have no internet).
    assert page.evaluate("[...document.querySelectorAll('input')].every(i => i.labels.length)")
    origins = page.evaluate(
        "performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {base}, origins
    assert page.console_errors == []


def test_defects_upload_draws_the_api_boxes(page, base, defect_image_file):
    status, ref = call_api(
        base, "/v1/defects?min_score=0", defect_image_file.read_bytes(), "image/png"
    )
    assert status == 200, ref
    expected = ref["results"][0]["detections"]
    assert expected, (
        f"the API found no defects in {defect_image_file} even at min_score=0, so there is no "
        "box to check on the canvas; the fixture image must yield detections"
    )

    page.evaluate(
        "(() => { const el = document.getElementById('defects-param-min_score'); el.value = '0';"
        " for (const t of ['input', 'change']) el.dispatchEvent(new Event(t, {bubbles: true}));"
        " })()"
    )
    page.set_files("#defects-file", [defect_image_file])
    page.wait_for("document.body.dataset.state === 'done-defects'", timeout=RESULT_TIMEOUT)

    assert page.evaluate("document.querySelectorAll('#defects-detections li').length") == len(
        expected
    )
    size = page.evaluate("(c => [c.width, c.height])(document.getElementById('defects-canvas'))")
    with Image.open(defect_image_file) as im:
        assert size == list(im.size)

    # The page drew what it received: check the most confident box's colour on the canvas.
    # Its label may cover part of the box, so either of two edge midpoints may carry the colour.
    drawn = page.evaluate("window.lastResult.results[0].detections")
    assert len(drawn) == len(expected)
    best = max(drawn, key=lambda d: d["score"])
    x1, y1, x2, y2 = best["box"]
    w, h = size

    def clamp(v: float, hi: int) -> int:
        return min(max(math.floor(v), 0), hi - 1)

    points = {
        "left edge middle": (clamp(x1, w), clamp((y1 + y2) / 2, h)),
        "top edge middle": (clamp((x1 + x2) / 2, w), clamp(y1, h)),
    }
    pixels = {name: canvas_pixel(page, *xy) for name, xy in points.items()}
    classes = next(m for m in call_api(base, "/v1/models")[1]["models"] if m["task"] == "defects")[
        "card"
    ]["classes"]
    colour = PALETTE[classes.index(best["label"])]
    assert any(close_to(rgb, colour) for rgb in pixels.values()), (
        f"box {best} should be stroked in {colour}; canvas has {pixels} at {points}"
    )
    # The whole answer is shown as JSON too, and the query parameter went with the request.
    shown = page.evaluate("JSON.parse(document.getElementById('defects-answer').textContent)")
    assert shown == drawn_result(page)
    assert "min_score=0" in page.evaluate("document.getElementById('defects-summary').textContent")
    assert page.console_errors == []


def drawn_result(page) -> dict:
    return page.evaluate("window.lastResult.results[0]")


def test_speech_upload_shows_the_api_transcript(page, base, speech_wav_file):
    status, ref = call_api(base, "/v1/speech", speech_wav_file.read_bytes(), "audio/wav")
    assert status == 200, ref

    page.set_files("#speech-file", [speech_wav_file])
    page.wait_for("document.body.dataset.state === 'done-speech'", timeout=RESULT_TIMEOUT)

    # Every plain field of the answer is shown, the transcript among them; no boxes here.
    fields = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#speech-fields dd')]"
        ".map(dd => [dd.dataset.field, dd.textContent]))"
    )
    answer = {k: v for k, v in ref["results"][0].items() if k != "filename"}
    assert set(fields) == set(answer)
    for key, value in answer.items():  # JS prints 2.0 as "2": numbers compare as numbers
        assert fields[key] == value if isinstance(value, str) else float(fields[key]) == value
    assert fields["transcript"] == ref["results"][0]["transcript"]
    assert page.evaluate("document.getElementById('speech-canvas').hidden")
    assert page.evaluate("document.getElementById('speech-audio').src.startsWith('blob:')")
    assert page.console_errors == []


def test_error_is_shown_and_the_next_upload_works(page, base, defect_image_file, tmp_path):
    fake = tmp_path / "not-an-image.png"  # Chromium types it image/png from the name
    fake.write_text("this is text, not a PNG\n")
    status, ref = call_api(base, "/v1/defects", fake.read_bytes(), "image/png")
    assert status >= 400, ref
    message = ref["error"]["message"]

    page.set_files("#defects-file", [fake])
    page.wait_for("document.body.dataset.state === 'error'", timeout=RESULT_TIMEOUT)
    error = page.evaluate("document.getElementById('error').textContent")
    assert message in error
    assert str(status) in error
    assert page.evaluate("document.getElementById('error').getAttribute('role')") == "alert"

    page.set_files("#defects-file", [defect_image_file])
    page.wait_for("document.body.dataset.state === 'done-defects'", timeout=RESULT_TIMEOUT)
    assert page.evaluate("document.getElementById('error').textContent") == ""
    assert page.console_errors == []
