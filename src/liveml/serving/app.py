"""The prediction server: a FastAPI app over the exported models of the pipeline's tasks.

`POST /v1/<task>` takes a raw body or a multipart batch of files, decodes each, and sends
them through the model's dynamic batcher. `/healthz` says the process is up, `/readyz` that
every model is loaded and warm, `/metrics` is Prometheus, `/v1/models` lists the model cards.
Models load in the background after start-up, so probes answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from liveml.serving.batching import Batcher, QueueFull
from liveml.serving.capture import Capture
from liveml.serving.config import ServeConfig
from liveml.serving.inputs import InputError, check_media_type
from liveml.serving.metrics import ServerMetrics
from liveml.serving.predictors import Predictor, build_predictor
from liveml.serving.runtime import CARD, load_runtime

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    """The one error shape of the API: {"error": {"status", "code", "message"}}."""
    body = {"error": {"status": status, "code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class Server:
    """What the app holds: settings, loaded predictors and their batchers, metrics, capture."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.metrics = ServerMetrics()
        self.predictors: dict[str, Predictor] = {}
        self.batchers: dict[str, Batcher] = {}
        self.stamps: dict[str, str] = {}  # task -> hash of the loaded model's card
        self.ready = False
        self.load_error: str | None = None
        # Every model call (load, warm-up, batches) runs on this one thread: torch's OpenMP
        # pool belongs to the calling thread, and a second thread's pool would fight it for
        # the cores (a batch-1 forward measured 3x slower from a second thread on 2 cores).
        self.infer = ThreadPoolExecutor(1, thread_name_prefix="infer")
        self.capture = (
            Capture(
                cfg.capture_dir,
                sample=cfg.capture_sample,
                max_bytes=cfg.capture_max_bytes,
            )
            if cfg.capture_dir and cfg.capture_sample > 0
            else None
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(self.load())
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            for batcher in self.batchers.values():
                await batcher.stop()
            self.infer.shutdown(wait=True)
            if self.capture:
                self.capture.close()

    async def load(self) -> None:
        """Load, check and warm every model off the event loop, then open the batchers."""
        loop = asyncio.get_running_loop()
        try:
            for task, export_dir in self.cfg.models.items():
                stamp = _card_stamp(export_dir)
                predictor = await loop.run_in_executor(self.infer, self._load_one, task, export_dir)
                await self._install(task, predictor, stamp)
            self.ready = True
        except Exception as e:
            self.load_error = str(e)
            log.error("model loading failed: %s", e)
            return
        if self.cfg.reload_s > 0:
            await self.watch()

    async def watch(self) -> None:
        """Hot reload: every `reload_s`, a model whose card changed (a promoted challenger,
        `dvc checkout` of another version) is loaded and swapped in; a broken export is logged
        and the old model keeps serving."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.cfg.reload_s)
            for task, export_dir in self.cfg.models.items():
                try:
                    stamp = _card_stamp(export_dir)
                except OSError:
                    continue  # mid-swap (atomic folder rename): look again next time
                if stamp == self.stamps.get(task):
                    continue
                self.stamps[task] = stamp  # a broken export is tried once, not every tick
                try:
                    predictor = await loop.run_in_executor(
                        self.infer, self._load_one, task, export_dir
                    )
                except Exception as e:
                    log.error("reloading %s failed; still serving the old model: %s", task, e)
                    self.metrics.reloads.labels(task, "failed").inc()
                    continue
                await self._install(task, predictor, stamp)
                self.metrics.reloads.labels(task, "ok").inc()

    async def _install(self, task: str, predictor: Predictor, stamp: str) -> None:
        """Serve `predictor` for `task`: new requests go to it at once, the model it replaces
        finishes what is already queued, then its batcher stops."""
        batcher = Batcher(
            predictor.run,
            max_batch=self.cfg.max_batch,
            max_wait_ms=self.cfg.max_wait_ms,
            queue_size=self.cfg.queue_size,
            executor=self.infer,
            on_batch=self._observer(task),
        )
        await batcher.start()
        old = self.predictors.get(task), self.batchers.get(task)
        self.predictors[task], self.batchers[task] = predictor, batcher
        self.stamps[task] = stamp
        ident = predictor.runtime.identity
        self.metrics.info.labels(task, ident["name"], ident["fingerprint"], ident["runtime"]).set(1)
        self.metrics.queue_depth.labels(task).set_function(lambda b=batcher: b.depth)
        log.info("serving %s: %s (%s)", task, ident["name"], ident["runtime"])
        old_predictor, old_batcher = old
        if old_batcher is not None:
            for _ in range(1000):  # up to 10 s for the queued requests of the old model
                if not old_batcher.depth:
                    break
                await asyncio.sleep(0.01)
            await old_batcher.stop()
        if old_predictor is not None:
            was = old_predictor.runtime.identity
            if (was["name"], was["fingerprint"], was["runtime"]) != (
                ident["name"],
                ident["fingerprint"],
                ident["runtime"],
            ):
                self.metrics.info.labels(task, was["name"], was["fingerprint"], was["runtime"]).set(
                    0
                )

    def _load_one(self, task: str, export_dir: str) -> Predictor:
        runtime = load_runtime(export_dir, self.cfg.runtime)
        if runtime.task != task:
            raise ValueError(
                f"{export_dir} holds a {runtime.task!r} model, not {task!r}; "
                f"fix: --model {runtime.task}={export_dir}"
            )
        predictor = build_predictor(runtime, self.cfg.limits)
        predictor.run([predictor.warmup_input()])  # first calls are slow: pay before ready
        return predictor

    def _observer(self, task: str):
        def observe(size: int, seconds: float) -> None:
            self.metrics.batch_size.labels(task).observe(size)
            self.metrics.inference.labels(task).observe(seconds)

        return observe

    def authorize(self, request: Request) -> None:
        if self.cfg.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.cfg.token.encode()
        ):
            raise InputError(
                401,
                "unauthorized",
                "missing or wrong API token; fix: send `Authorization: Bearer <token>` "
                "with the server's token",
            )

    def predictor(self, task: str) -> tuple[Predictor, Batcher]:
        if task not in self.cfg.models:
            raise InputError(
                404,
                "unknown_model",
                f"no model is served for {task!r}; served: {', '.join(self.cfg.models)} "
                "(see GET /v1/models)",
            )
        if task not in self.batchers:
            why = f": {self.load_error}" if self.load_error else "; retry in a few seconds"
            raise InputError(503, "not_ready", f"the {task} model is not loaded yet{why}")
        return self.predictors[task], self.batchers[task]

    async def payloads(
        self, request: Request, predictor: Predictor
    ) -> list[tuple[str | None, bytes]]:
        """(filename, bytes) of each input: the raw body, or each file of a multipart form."""
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)  # before reading a byte of the body
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            return await self._multipart(request, predictor, limit)
        check_media_type(content_type, predictor.media_types, predictor.task)
        body = b"".join([chunk async for chunk in _limited(request, limit)])
        return [(None, body)]

    async def _multipart(self, request, predictor, limit) -> list[tuple[str | None, bytes]]:
        from starlette.formparsers import MultiPartException, MultiPartParser

        parser = MultiPartParser(
            request.headers, _limited(request, limit), max_files=self.cfg.max_items, max_fields=8
        )
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise InputError(
                400,
                "bad_multipart",
                f"cannot read the multipart form: {e}; fix: send at most "
                f"{self.cfg.max_items} files as form fields named `file`",
            ) from e
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not files:
            raise InputError(
                400,
                "empty_body",
                "the multipart form has no file; fix: `curl -F file=@input`",
            )
        out = []
        for f in files:
            check_media_type(f.content_type, predictor.media_types, predictor.task)
            out.append((f.filename, await f.read()))
        await form.close()
        return out

    async def predict(self, task: str, request: Request) -> Response:
        start = time.perf_counter()
        status, code = 200, "ok"
        try:
            self.authorize(request)
            predictor, batcher = self.predictor(task)
            options = predictor.options(request.query_params)
            with batcher.incoming():
                payloads = await self.payloads(request, predictor)
                prepared = [_decode(predictor, i, n, data) for i, (n, data) in enumerate(payloads)]
            answers = await asyncio.gather(*(batcher.submit(p, p.key) for p in prepared))
            results = []
            for (name, data), answer in zip(payloads, answers, strict=True):
                answer = predictor.select(answer, options)
                results.append({"filename": name, **answer})
                self._capture(predictor, data, answer)
            body = {
                "model": predictor.runtime.identity,
                "results": results,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            }
            return JSONResponse(body)
        except InputError as e:
            status, code = e.status, e.code
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            if e.status == 503:
                headers = {"Retry-After": "5"}
            return error_response(e.status, e.code, e.message, headers)
        except QueueFull as e:
            status, code = 503, "overloaded"
            return error_response(
                503,
                "overloaded",
                f"the {task} queue is full ({e}); fix: retry after the Retry-After seconds",
                {"Retry-After": "1"},
            )
        except Exception as e:
            log.exception("prediction failed")
            status, code = 500, "model_error"
            return error_response(500, "model_error", f"the model failed on this input: {e}")
        finally:
            label = task if task in self.cfg.models else "unknown"
            self.metrics.requests.labels(label, str(status)).inc()
            if status != 200:
                self.metrics.errors.labels(label, code).inc()
            else:
                self.metrics.latency.labels(label).observe(time.perf_counter() - start)

    def _capture(self, predictor: Predictor, data: bytes, answer: dict) -> None:
        if self.capture is None:
            return
        queued = self.capture.offer(
            task=predictor.task,
            payload=data,
            suffix=predictor.suffix_of(data),
            prediction=answer,
            model=predictor.runtime.identity,
        )
        if queued:
            self.metrics.captured.labels(predictor.task).inc()

    def models(self) -> dict:
        return {
            "models": [
                {
                    "task": task,
                    "name": p.runtime.card.get("name"),
                    "runtime": p.runtime.runtime,
                    "endpoint": f"/v1/{task}",
                    "accepts": sorted(p.media_types),
                    "card": p.runtime.card,
                }
                for task, p in self.predictors.items()
            ]
        }


def _card_stamp(export_dir: str) -> str:
    """What identifies an export folder's model: the hash of its card (which hashes the files)."""
    return hashlib.sha256((Path(export_dir) / CARD).read_bytes()).hexdigest()


def _decode(predictor: Predictor, index: int, name: str | None, data: bytes):
    try:
        return predictor.decode(data, None)
    except InputError as e:
        if index == 0 and name is None:
            raise
        which = f"file {index + 1}" + (f" ({name})" if name else "")
        raise InputError(e.status, e.code, f"{which}: {e.message}") from e


def _too_large(size: int, limit: int) -> InputError:
    return InputError(
        413,
        "payload_too_large",
        f"the upload is {size} bytes, over the server's limit of {limit} bytes; fix: send a "
        "smaller file, or start the server with a larger --max-body-mb",
    )


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body, stopped with 413 as soon as it passes `limit` (chunked uploads have
    no Content-Length to check up front)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(seen, limit)
        yield chunk


def create_app(cfg: ServeConfig) -> FastAPI:
    """The ASGI app serving `cfg.models`."""
    server = Server(cfg)
    app = FastAPI(title="liveml", lifespan=server.lifespan)
    app.state.server = server
    page = resources.files("liveml.serving").joinpath("page.html").read_text()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, _code(exc.status_code), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, "bad_request", str(exc.errors()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if server.ready:
            return JSONResponse({"status": "ready", "models": sorted(server.predictors)})
        if server.load_error:
            return error_response(503, "load_failed", server.load_error)
        return error_response(503, "not_ready", "models are loading", {"Retry-After": "2"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            server.authorize(request)
        except InputError as e:
            return error_response(e.status, e.code, e.message, {"WWW-Authenticate": "Bearer"})
        return JSONResponse(server.models())

    @app.post("/v1/{task}")
    async def predict(task: str, request: Request) -> Response:
        return await server.predict(task, request)

    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (`liveml serve --workers N`)."""
    return create_app(ServeConfig.from_env())


def _code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
