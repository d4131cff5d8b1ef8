"""The prediction server: a FastAPI app over the exported models of the pipeline's tasks.

`POST /v1/<task>` takes a raw body or a multipart batch of files, decodes each, and sends
them through the model's dynamic batcher. `/healthz` says the process is up, `/readyz` that
every model is loaded and warm, `/metrics` is Prometheus (summed over the workers of
`--workers N`), `/v1/models` lists the model cards, `/docs` is Swagger UI (served from this
server: it works offline) over `/openapi.json`, which documents each upload's request body.
Models load in the background after start-up, so probes answer at once.

The event loop only moves bytes: decoding runs on a bounded pool of threads and models on one
inference thread, so probes and refusals answer at once however heavy the uploads. Request
bodies are bounded in size, in time and in the memory they hold together (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from liveml.serving import swagger
from liveml.serving.batching import Batcher, QueueFull
from liveml.serving.capture import Capture
from liveml.serving.config import PUBLIC_ENDPOINTS, ServeConfig
from liveml.serving.inputs import InputError, check_media_type
from liveml.serving.metrics import ServerMetrics
from liveml.serving.openapi import OPENAPI_VERSION, finish, upload_operation
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
        # Decoding (image and audio parsing, resizing, resampling) runs here, never on the event
        # loop: a 16-image upload once stalled /healthz for 6.7 s. The pool's size bounds the
        # decode CPU and memory; `decoding` bounds the inputs waiting for it.
        self.decoder = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="decode")
        self.decoding = 0
        # Request-body bytes held in memory by all requests together.
        self.body_budget = max(cfg.max_inflight_bytes, cfg.max_body_bytes)
        self.body_bytes = 0
        self.metrics.track(self.metrics.decoding, lambda: self.decoding)
        self.metrics.track(self.metrics.body_bytes, lambda: self.body_bytes)
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
        # With --workers N the gauges are files that the worker answering a scrape reads.
        refreshing = asyncio.create_task(self._refresh_gauges()) if self.metrics.shared else None
        try:
            yield
        finally:
            for job in (loading, refreshing):
                if job is not None:
                    job.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await job
            for batcher in self.batchers.values():
                await batcher.stop()
            self.infer.shutdown(wait=True)
            self.decoder.shutdown(wait=True)
            if self.capture:
                self.capture.close()
            self.metrics.close()

    async def _refresh_gauges(self) -> None:
        """Multiprocess metrics: write this worker's gauges every second, so a scrape
        answered by another worker sees them at most a second old."""
        while True:
            self.metrics.refresh()
            await asyncio.sleep(1.0)

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
        self.metrics.track(self.metrics.queue_depth.labels(task), lambda b=batcher: b.depth)
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
        """Raise 401 unless the server has no token or the request carries it."""
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
        self, request: Request, predictor: Predictor, hold: _BodyHold
    ) -> list[tuple[str | None, bytes]]:
        """(filename, bytes) of each input: the raw body, or each file of a multipart form.

        The body must arrive within `body_timeout_s` (408) and fit the size limit (413) and the
        memory budget all requests share (503)."""
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit():
            if int(declared) > limit:
                raise _too_large(int(declared), limit)  # before reading a byte of the body
            hold.take(int(declared))
        try:
            async with asyncio.timeout(self.cfg.body_timeout_s):
                content_type = request.headers.get("content-type", "")
                if content_type.lower().startswith("multipart/form-data"):
                    return await self._multipart(request, predictor, limit, hold)
                check_media_type(content_type, predictor.media_types, predictor.task)
                body = b"".join([chunk async for chunk in _limited(request, limit, hold)])
                return [(None, body)]
        except TimeoutError:
            raise InputError(
                408,
                "body_timeout",
                f"the request body did not arrive within {self.cfg.body_timeout_s:g} s; fix: "
                "send smaller files, from a faster link, or raise the server's body_timeout_s "
                "(LIVEML_SERVE_BODY_TIMEOUT_S)",
            ) from None

    async def _multipart(self, request, predictor, limit, hold) -> list[tuple[str | None, bytes]]:
        from starlette.formparsers import MultiPartException, MultiPartParser

        parser = MultiPartParser(
            request.headers,
            _limited(request, limit, hold),
            max_files=self.cfg.max_items,
            max_fields=8,
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
        try:
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
            return out
        finally:
            await form.close()

    async def decode(self, predictor: Predictor, payloads: list[tuple[str | None, bytes]]):
        """Every payload decoded on the decode threads, in order; the first bad one (by
        position) raises. 503 when too many inputs already wait for a decode thread."""
        if self.decoding + len(payloads) > self.cfg.queue_size:
            raise QueueFull(f"{self.decoding} inputs are already waiting to be decoded")
        loop = asyncio.get_running_loop()
        self.decoding += len(payloads)
        try:
            jobs = [
                loop.run_in_executor(self.decoder, _decode, predictor, i, name, data)
                for i, (name, data) in enumerate(payloads)
            ]
            results = await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            self.decoding -= len(payloads)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def predict(self, task: str, request: Request) -> Response:
        start = time.perf_counter()
        status, code = 200, "ok"
        hold = _BodyHold(self)
        try:
            self.authorize(request)
            predictor, batcher = self.predictor(task)
            options = predictor.options(request.query_params)
            if batcher.depth >= batcher.queue_size:  # refuse before reading the body
                raise QueueFull(f"{batcher.queue_size} requests are already queued")
            with batcher.incoming():
                payloads = await self.payloads(request, predictor, hold)
                hold.body_read = True
                prepared = await self.decode(predictor, payloads)
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
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
            if e.status == 503:
                headers["Retry-After"] = "1" if e.code == "overloaded" else "5"
            return error_response(e.status, e.code, e.message, hold.closing(headers))
        except QueueFull as e:
            status, code = 503, "overloaded"
            return error_response(
                503,
                "overloaded",
                f"the {task} queue is full ({e}); fix: retry after the Retry-After seconds",
                hold.closing({"Retry-After": "1"}),
            )
        except ClientDisconnect:
            # The client went away mid-upload: its outcome, not a model failure (no traceback;
            # 499 is the status nginx logs for it). Nobody reads this answer.
            status, code = 499, "client_closed"
            log.info("%s: the client closed the connection before sending the whole body", task)
            return error_response(499, "client_closed", "the client closed the connection")
        except Exception as e:
            log.exception("prediction failed")
            status, code = 500, "model_error"
            return error_response(500, "model_error", f"the model failed on this input: {e}")
        finally:
            hold.release()
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

    def models(self, full: bool) -> dict:
        """The served models; `full` shows each card as written, otherwise with no host detail
        (see `public_card`)."""
        return {
            "models": [
                {
                    "task": task,
                    "name": p.runtime.card.get("name"),
                    "runtime": p.runtime.runtime,
                    "endpoint": f"/v1/{task}",
                    "accepts": sorted(p.media_types),
                    "suffixes": list(p.suffixes),
                    "parameters": dict(p.parameters),
                    "card": p.runtime.card if full else public_card(p.runtime.card),
                }
                for task, p in self.predictors.items()
            ]
        }


class _BodyHold:
    """One request's share of the server's body-memory budget (`max_inflight_bytes`)."""

    def __init__(self, server: Server):
        self.server = server
        self.held = 0
        self.body_read = False

    def take(self, size: int) -> None:
        """Hold `size` bytes more, or raise 503 when the budget cannot take them now."""
        s = self.server
        if s.body_bytes + size > s.body_budget:
            raise InputError(
                503,
                "overloaded",
                f"the server holds {s.body_bytes} bytes of uploads already and this one needs "
                f"{size} more (limit {s.body_budget}); fix: retry after the Retry-After seconds",
            )
        s.body_bytes += size
        self.held += size

    def release(self) -> None:
        self.server.body_bytes -= self.held
        self.held = 0

    def closing(self, headers: dict) -> dict:
        """`headers`, plus `Connection: close` when the body was not read: the client may
        still be sending it, and reading it only to throw it away is waste."""
        return headers if self.body_read else {**headers, "Connection": "close"}


# Card keys that name the machine; "platform" keeps only the OS name ("Linux-6.1.0-...-x86_64"
# says the kernel build).
_HOST_KEYS = frozenset({"hostname", "host_name", "node", "user", "username", "cwd", "home"})
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")


def public_card(value: Any, key: str | None = None) -> Any:
    """A model card fit to show anyone: absolute paths cut to their last part, the platform
    string to the OS name, and keys naming the host, user or working folder left out."""
    if isinstance(value, dict):
        return {k: public_card(v, k) for k, v in value.items() if k not in _HOST_KEYS}
    if isinstance(value, list):
        return [public_card(v) for v in value]
    if not isinstance(value, str):
        return value
    if key == "platform":
        return value.split("-", 1)[0]
    if value.startswith(("/", "~")):
        return PurePosixPath(value).name
    if _WINDOWS_PATH.match(value):
        return PureWindowsPath(value).name
    return value


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


async def _limited(request: Request, limit: int, hold: _BodyHold) -> AsyncIterator[bytes]:
    """The request body, stopped with 413 as soon as it passes `limit` (chunked uploads have
    no Content-Length to check up front), each byte held in the body budget."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(seen, limit)
        if seen > hold.held:
            hold.take(seen - hold.held)
        yield chunk


def create_app(cfg: ServeConfig) -> FastAPI:
    """The ASGI app serving `cfg.models`.

    With a token set, every endpoint but `/`, `/healthz` and `/readyz` needs it, except those
    `cfg.public_endpoints` names ("metrics": /metrics; "docs": /docs, its assets under
    /docs/static, and /openapi.json). `/docs` loads Swagger UI from this server, not a CDN.
    """
    server = Server(cfg)
    guarded = set() if cfg.token is None else set(PUBLIC_ENDPOINTS) - set(cfg.public_endpoints)
    # FastAPI's docs routes load Swagger UI and ReDoc from a CDN and cannot check a token: ours
    # below replace them (ReDoc has no offline copy here, so it is off).
    app = FastAPI(
        title="liveml",
        description="Predictions from the exported models (docs/serving.md).",
        lifespan=server.lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.openapi_version = OPENAPI_VERSION
    app.state.server = server
    page = resources.files("liveml.serving").joinpath("page.html").read_text()

    def refused(request: Request) -> Response | None:
        """The 401 answer for a request without the token, or None when it may pass."""
        try:
            server.authorize(request)
        except InputError as e:
            return error_response(e.status, e.code, e.message, {"WWW-Authenticate": "Bearer"})
        return None

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
    async def metrics(request: Request) -> Response:
        if "metrics" in guarded and (answer := refused(request)):
            return answer
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if answer := refused(request):
            return answer
        # The full cards only to token holders; an open server shows no host detail.
        return JSONResponse(server.models(full=cfg.token is not None))

    # One documented operation per served task, its request body from the task's media types.
    for task, media_types in _served_media_types(cfg).items():
        app.add_api_route(
            f"/v1/{task}",
            _predict_endpoint(server, task),
            methods=["POST"],
            summary=f"Predict with the {task} model",
            description=f"One input as the raw body, or a multipart batch of files, for the "
            f"{task} model. The answer names the model that gave it.",
            operation_id=f"predict_{task}",
            response_class=JSONResponse,
            openapi_extra=upload_operation(task, media_types, cfg.max_items),
        )

    @app.post("/v1/{task}", include_in_schema=False)
    async def predict(task: str, request: Request) -> Response:
        return await server.predict(task, request)

    # Token-guarded paths of the schema (the bearer scheme goes on them).
    secured = {"/v1/models", *(f"/v1/{t}" for t in cfg.models)} if cfg.token else set()
    if "metrics" in guarded:
        secured.add("/metrics")
    docs_guarded = "docs" in guarded

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        if docs_guarded and (answer := refused(request)):
            return answer
        parameters = {t: p.parameters for t, p in server.predictors.items()}
        return JSONResponse(finish(app.openapi(), parameters=parameters, guarded=secured))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        if docs_guarded and (answer := refused(request)):
            return answer
        return swagger.page("/openapi.json", "liveml - API docs")

    @app.get(swagger.STATIC + "/{name}", include_in_schema=False)
    async def docs_asset(name: str, request: Request) -> Response:
        if docs_guarded and (answer := refused(request)):
            return answer
        found = swagger.asset(name)
        if found is None:
            return error_response(404, "not_found", f"no file {name!r} under {swagger.STATIC}")
        return found

    return app


def _predict_endpoint(server: Server, task: str):
    """The endpoint of `POST /v1/<task>` (FastAPI documents it; the server reads the body)."""

    async def endpoint(request: Request) -> Response:
        return await server.predict(task, request)

    endpoint.__name__ = "predict_" + re.sub(r"\W", "_", task)
    return endpoint


def _served_media_types(cfg: ServeConfig) -> dict[str, frozenset[str]]:
    """task -> the upload media types of its contract, for each served task that is installed
    (a task that is not gets no documented operation; loading it reports the fix)."""
    from liveml.core.errors import ConfigError
    from liveml.tasks import get_task

    found = {}
    for task in cfg.models:
        try:
            found[task] = frozenset(get_task(task).media_types)
        except ConfigError:
            continue
    return found


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (`liveml serve --workers N`)."""
    return create_app(ServeConfig.from_env())


def _code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
