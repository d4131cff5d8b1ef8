"""Make the README's pictures from real outputs of a finished `make repro` project.

    .venv/bin/python docs/screenshots.py --project /path/to/project [--out docs/images]

The project must have run `make repro` (both exported models, their test data, run records).
The commands run are this checkout's (the venv of the Python running the script, so the
pictures show this code's pages) against the project's data and models. What they make goes to
a temporary folder, not into the project: the sweep runs in the project folder with its runs,
checkpoints, W&B files and data redirected there; `liveml monitor` and `liveml serve` run in a
mirror of the project (its conf/ and lock file copied, data/ linked, params.yaml composed by
this checkout's `liveml params`, so settings this code added have their values):

- compare.png: `liveml compare --task defects --html` over the pipeline's defects run and a
  small sweep trained for it (3 learning rates on a small data recipe, 2 epochs each, into the
  temporary run store);
- drift.png: `liveml monitor defects --inputs` over three windows of the test photos: as they
  are, 30 % darker, 50 % darker (the monitor flags the last two);
- page.png: the web page of `liveml serve` after uploading a test photo.

Chromium is Debian's (`make chromium`), driven by playwright without `playwright install`.
Each PNG is reduced to 256 colours and checked to stay under MAX_BYTES.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MAX_BYTES = 300_000
BIN = Path(sys.executable).parent
LIVEML = BIN / "liveml"
WIDTH = 1200
SWEEP_LRS = "0.002,0.004,0.008"
# Loopback must never go through an http_proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="a finished make repro")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--only", action="append", choices=["compare", "drift", "page"], help="(repeatable)"
    )
    args = parser.parse_args()
    project = args.project.resolve()
    for need in (LIVEML, project / "data" / "defects" / "export", project / "runs"):
        if not need.exists():
            sys.exit(f"error: {need} is missing; run `make repro` in {project} first")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="liveml-shots-"))
    print(f"working in {work}", file=sys.stderr)
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=["--no-proxy-server"])
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            for name in args.only or ["compare", "drift", "page"]:
                t0 = time.monotonic()
                png = args.out / f"{name}.png"
                {"compare": shoot_compare, "drift": shoot_drift, "page": shoot_page}[name](
                    page, project, work, png
                )
                size = shrink(png)
                print(f"{png}: {size:,} bytes ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
                if size > MAX_BYTES:
                    sys.exit(f"error: {png} is {size:,} bytes, over {MAX_BYTES:,}")
            browser.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    sys.exit("error: no chromium on PATH; install Debian's (`make chromium`)")


def run(cmd: list, cwd: Path, ok=(0,), **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), file=sys.stderr)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, **kw)
    if done.returncode not in ok:
        sys.exit(f"error: {cmd[0]} exited {done.returncode}")
    return done


def shrink(png: Path) -> int:
    """Re-save `png` with an adaptive 256-colour palette (text stays sharp, size drops ~3x)."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)
    return png.stat().st_size


def clip_top(page, height: int) -> dict:
    """The page's top `height` pixels (or all of it when shorter)."""
    full = page.evaluate("document.documentElement.scrollHeight")
    return {"x": 0, "y": 0, "width": WIDTH, "height": min(height, full)}


# -- the compare report ------------------------------------------------------------------------


def shoot_compare(page, project: Path, work: Path, png: Path) -> None:
    store = work / "compare" / "runs"
    store.mkdir(parents=True)
    for run_dir in sorted((project / "runs").iterdir()):
        if (run_dir / "run.json").is_file():
            shutil.copytree(run_dir, store / run_dir.name)
    # A small real sweep into the temporary store (the project's runs/ stays as it is): 3
    # learning rates on a small data recipe (generated into the temporary folder), 2 epochs.
    run(
        [BIN / "python", "-m", "liveml.training", "-m", "task=defects", f"model.lr={SWEEP_LRS}",
         "data.n_train=64", "data.n_val=48", "data.n_test=24", "trainer.max_epochs=2",
         f"paths.recipes={work}/recipes", f"paths.runs={store}",
         f"paths.checkpoints={work}/ckpt", f"logger.dir={work}/wandb",
         f"hydra.sweep.dir={work}/sweep"],
        cwd=project,
        env={**os.environ, "LIVEML_ROOT": str(project)},
    )  # fmt: skip
    report = work / "compare" / "report.html"
    # Outside the project, `liveml compare` reads ./runs: the temporary store.
    env = {k: v for k, v in os.environ.items() if k != "LIVEML_ROOT"}
    run([LIVEML, "compare", "--task", "defects", "--html", report], cwd=store.parent, env=env)
    page.goto(report.as_uri())
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
    page.screenshot(path=png, clip=clip_top(page, 900), full_page=True)


# -- the drift report --------------------------------------------------------------------------


def mirror(project: Path, work: Path) -> Path:
    """A project folder in `work` sharing `project`'s data (made once)."""
    root = work / "project"
    if not root.is_dir():
        root.mkdir()
        shutil.copytree(project / "conf", root / "conf")
        for lock in ("requirements.lock", "uv.lock"):
            if (project / lock).is_file():
                shutil.copy2(project / lock, root / lock)
        (root / "data").symlink_to(project / "data")
        run([LIVEML, "params"], cwd=root)
    return root


def shoot_drift(page, project: Path, work: Path, png: Path) -> None:
    from PIL import Image, ImageEnhance

    photos = sorted((project / "data/defects/raw/images/test").glob("*.png"))[:200]
    inputs = work / "drift" / "inputs"
    inputs.mkdir(parents=True)
    t = time.time() - 3600
    # Three windows of 200 in time order (file mtime): as they are, 30 % and 50 % darker.
    for w, factor in enumerate((1.0, 0.7, 0.5)):
        for src in photos:
            dst = inputs / f"w{w}_{src.name}"
            with Image.open(src) as im:
                ImageEnhance.Brightness(im.convert("RGB")).enhance(factor).save(dst)
            t += 1
            os.utime(dst, (t, t))
    out = work / "drift" / "report"
    cmd = ["monitor", "defects", "--inputs", inputs, "--window", "200", "--out", out]
    done = run([LIVEML, *cmd], cwd=mirror(project, work), ok=(0, 1, 2))
    if done.returncode == 2:
        # A model trained by an older liveml may lack settings this one checks: monitor with
        # the project's own liveml, then draw its summary with this checkout's page.
        print("falling back to the project's own liveml for the monitor", file=sys.stderr)
        run([project / ".venv/bin/liveml", *cmd], cwd=project, ok=(0, 1))
        from liveml.monitoring.report import write_html

        summary = json.loads((out / "summary.json").read_text())
        write_html(summary, out / "report.html")
    page.goto((out / "report.html").as_uri())
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
    page.screenshot(path=png, clip=clip_top(page, 900), full_page=True)


# -- the served page ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot_page(page, project: Path, work: Path, png: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [LIVEML, "serve", "--port", str(port), "--capture-sample", "0"]
    print("+", " ".join(map(str, cmd)), file=sys.stderr)
    log = open(work / "serve.log", "wb")  # noqa: SIM115 -- closed with the server below
    root = mirror(project, work)
    server = subprocess.Popen([str(c) for c in cmd], cwd=root, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with NO_PROXY.open(f"{base}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"error: liveml serve did not get ready; see {work / 'serve.log'}")
            time.sleep(0.5)
        page.goto(base + "/")
        page.wait_for_function("document.body.dataset.state === 'ready'")
        photo = project / "data/defects/raw/images/test/test_00000.png"
        page.set_input_files("#defects-file", photo)
        page.wait_for_function("document.body.dataset.state === 'done-defects'", timeout=60_000)
        page.screenshot(path=png, clip=clip_top(page, 760), full_page=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
