"""Hot reload: a server started with `reload_s` swaps in a model whose export folder changed (a
promoted challenger) without a restart, and keeps serving the old one if the new one is bad."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import requests

from liveml.core.atomic import atomic_write_json


def card_of(url: str) -> dict:
    return requests.get(f"{url}/v1/models", timeout=10).json()["models"][0]["card"]


def reloads(url: str, outcome: str) -> float:
    want = f'liveml_model_reloads_total{{model="defects",outcome="{outcome}"}} '
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return 0.0


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_changed_export_is_swapped_in_and_a_broken_one_is_not(
    server_with, exports, defect_image_file: Path, tmp_path: Path
) -> None:
    export = shutil.copytree(exports["defects"], tmp_path / "export")
    photo = defect_image_file.read_bytes()
    with server_with(models={"defects": str(export)}, reload_s=0.1) as (url, _):
        assert "note" not in card_of(url)
        card = json.loads((export / "model_card.json").read_text())
        # A new card for the same files: what a promotion looks like to the server.
        atomic_write_json(export / "model_card.json", {**card, "note": "challenger"})
        wait_until(lambda: card_of(url).get("note") == "challenger")
        assert reloads(url, "ok") == 1
        r = requests.post(f"{url}/v1/defects", data=photo, headers={"Content-Type": "image/png"})
        assert r.status_code == 200

        # A card whose model hash does not match its file: logged, counted, not served.
        bad = {**card, "note": "broken"}
        bad["exports"] = [{**e, "sha256": "0" * 64} for e in card["exports"]]
        atomic_write_json(export / "model_card.json", bad)
        wait_until(lambda: reloads(url, "failed") == 1)
        assert card_of(url).get("note") == "challenger"
        r = requests.post(f"{url}/v1/defects", data=photo, headers={"Content-Type": "image/png"})
        assert r.status_code == 200
        time.sleep(0.5)  # the broken card is tried once, not on every tick
        assert reloads(url, "failed") == 1


def test_reload_is_off_by_default(server_with, exports, tmp_path: Path) -> None:
    export = shutil.copytree(exports["defects"], tmp_path / "export")
    with server_with(models={"defects": str(export)}) as (url, _):
        card = json.loads((export / "model_card.json").read_text())
        atomic_write_json(export / "model_card.json", {**card, "note": "challenger"})
        time.sleep(0.5)
        assert "note" not in card_of(url)
