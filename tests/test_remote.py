"""DVC remotes: data and pipeline outputs survive push -> wipe -> pull, locally and over S3.

Real DVC (CLI in a subprocess), real git, a real S3-compatible server (moto) on 127.0.0.1;
everything is written under tmp_path, never into the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
DEFAULT_REMOTE = "localdir"

# A stage whose output is a function of its input folder: stands in for `train` writing a model.
TRAIN_PY = """\
import hashlib, json, pathlib
files = sorted(p for p in pathlib.Path("data/raw").rglob("*") if p.is_file())
blob = b"".join(p.read_bytes() for p in files)
out = pathlib.Path("model")
out.mkdir(exist_ok=True)
(out / "weights.bin").write_bytes(hashlib.sha256(blob).digest() * 64)
(out / "run.json").write_text(json.dumps({"n_files": len(files), "n_bytes": len(blob)}))
"""


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep DVC, git and AWS away from the user's global config, caches and credentials."""
    if DVC is None:
        pytest.fail("dvc executable not found next to the interpreter or on PATH")
    home = tmp_path / "_home"
    home.mkdir()
    for var, sub in [
        ("DVC_GLOBAL_CONFIG_DIR", "dvc-global"),
        ("DVC_SYSTEM_CONFIG_DIR", "dvc-system"),
        ("DVC_SITE_CACHE_DIR", "dvc-site-cache"),
    ]:
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))  # absent: no identity
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    for var in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def run(*cmd: str, cwd: Path) -> str:
    """Run a command, fail the test with its output if it fails, return stdout."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def dvc(*args: str, cwd: Path) -> str:
    """Run the venv's dvc CLI in `cwd`."""
    assert DVC is not None
    return run(DVC, *args, cwd=cwd)


def git(*args: str, cwd: Path) -> str:
    """Run git with an explicit identity, so no global git config is needed."""
    ident = ["-c", "user.name=liveml-test", "-c", "user.email=test@liveml.invalid"]
    return run("git", *ident, *args, cwd=cwd)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes): what "identical" means here."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def make_repo(path: Path) -> Path:
    """A fresh git + DVC repository with a small data folder (text, binary, nested, empty)."""
    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    dvc("init", "-q", cwd=path)
    raw = path / "data" / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "a.txt").write_text("alpha\n")
    (raw / "b.csv").write_text("x,y\n1,2\n3,4\n")
    (raw / "sub" / "c.bin").write_bytes(bytes(range(256)) * 8)
    (raw / "sub" / "empty").write_bytes(b"")
    return path


def default_remote_path(repo: Path) -> Path:
    """The resolved location of the repo's default DVC remote (DVC resolves relative urls)."""
    name = dvc("remote", "default", cwd=repo).strip()
    return Path(dvc("config", f"remote.{name}.url", cwd=repo).strip())


def assert_clean(repo: Path) -> None:
    """Pipeline and remote agree with the workspace: nothing to repro, nothing to push or pull."""
    assert "up to date" in dvc("status", cwd=repo)
    assert "in sync" in dvc("status", "-c", cwd=repo)


def test_committed_default_remote_is_a_local_dir_outside_the_work_tree() -> None:
    """The repo's .dvc/config names a directory remote that no clone or `git clean` touches."""
    from configobj import ConfigObj  # DVC's own config parser

    raw = ConfigObj(str(REPO / ".dvc" / "config"))
    assert raw["core"]["remote"] == DEFAULT_REMOTE
    url = raw[f'remote "{DEFAULT_REMOTE}"']["url"]
    assert "://" not in url and not Path(url).is_absolute(), url  # works wherever it is cloned
    resolved = default_remote_path(REPO)
    assert resolved == (REPO / ".dvc" / url).resolve()
    assert resolved.parent == REPO.parent  # sibling of the clone: outside it, shared by clones


def test_local_remote_round_trip_with_committed_config(tmp_path: Path) -> None:
    """dvc add -> push -> delete workspace and cache -> pull restores identical bytes."""
    repo = make_repo(tmp_path / "repo")
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the real default remote
    remote = tmp_path / "liveml-dvc-remote"
    assert default_remote_path(repo) == remote  # resolved next to the clone, inside tmp_path

    before = snapshot(repo / "data" / "raw")
    dvc("add", "data/raw", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "data", cwd=repo)
    assert "data/raw" not in git("ls-files", cwd=repo).split()  # data lives in DVC, not git
    dvc("push", cwd=repo)
    assert any((remote / "files" / "md5").rglob("*.dir"))  # the folder manifest was uploaded

    shutil.rmtree(repo / "data" / "raw")
    shutil.rmtree(repo / ".dvc" / "cache")
    assert "not in cache" in dvc("status", cwd=repo)
    dvc("pull", cwd=repo)
    assert snapshot(repo / "data" / "raw") == before
    assert_clean(repo)

    clone = tmp_path / "clone"  # a fresh clone beside it resolves to the same remote
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "raw").exists()
    dvc("pull", cwd=clone)
    assert snapshot(clone / "data" / "raw") == before


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free 127.0.0.1 port, stopped when the test ends."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.mark.slow
def test_s3_remote_round_trip_data_and_pipeline_output(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data and a stage output pushed to S3 come back byte-identical in a fresh clone."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="liveml")

    repo = make_repo(tmp_path / "repo")
    dvc("remote", "add", "-d", "s3", "s3://liveml/dvc", cwd=repo)
    dvc("remote", "modify", "s3", "endpointurl", s3_endpoint, cwd=repo)
    dvc("add", "data/raw", cwd=repo)
    (repo / "train.py").write_text(TRAIN_PY)
    stage_cmd = f'"{sys.executable}" train.py'
    stage = ["stage", "add", "-n", "train", "-d", "train.py", "-d", "data/raw", "-o", "model"]
    dvc(*stage, stage_cmd, cwd=repo)
    dvc("repro", cwd=repo)
    data, model = snapshot(repo / "data" / "raw"), snapshot(repo / "model")
    assert set(model) == {"weights.bin", "run.json"}
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "data and model", cwd=repo)

    assert "Contents" not in s3.list_objects_v2(Bucket="liveml")  # nothing on S3 before the push
    dvc("push", cwd=repo)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="liveml")["Contents"]]
    assert all(k.startswith("dvc/files/md5/") for k in keys)
    assert sum(k.endswith(".dir") for k in keys) == 2  # data/raw and model manifests

    # A fresh clone has no workspace data and no cache: everything must come from S3.
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "raw").exists() and not (clone / "model").exists()
    assert not (clone / ".dvc" / "cache").exists()
    dvc("pull", cwd=clone)
    assert snapshot(clone / "data" / "raw") == data
    assert snapshot(clone / "model") == model
    assert_clean(clone)  # the pulled model matches dvc.lock: no retraining needed
