"""Lineage: code state from real git repos, data hashes equal to DVC's own, fingerprints."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from liveml.core.config import fingerprint_view
from liveml.tracking.lineage import (
    canonical_json,
    code_state,
    code_state_and_patch,
    data_hashes,
    environment,
    fingerprint,
    fingerprint_parts,
    new_record,
    patch_bytes,
    pipeline_outputs,
    weights_sha256,
)

from gitrepo import git, sh

DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    (r / ".gitignore").write_text("ignored/\n")
    (r / "train.py").write_text("print('v1')\n")
    (r / "params.yaml").write_text("lr: 0.1\n")
    git(r, "add", ".")
    git(r, "commit", "-qm", "init")
    return r


def test_code_state_clean_then_dirty(repo):
    head = git(repo, "rev-parse", "HEAD").strip()
    assert code_state(repo) == {"commit": head, "dirty": False, "diff_sha256": None}

    (repo / "train.py").write_text("print('v2')\n")
    edit1 = code_state(repo)
    assert edit1["commit"] == head and edit1["dirty"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", edit1["diff_sha256"])

    (repo / "train.py").write_text("print('v3')\n")
    edit2 = code_state(repo)
    assert edit2["dirty"] and edit2["diff_sha256"] != edit1["diff_sha256"]

    # Staged or not, the same change is the same diff.
    git(repo, "add", "train.py")
    assert code_state(repo)["diff_sha256"] == edit2["diff_sha256"]

    git(repo, "checkout", "-q", "HEAD", "--", "train.py")
    assert code_state(repo)["dirty"] is False


def test_another_tasks_outputs_are_not_code(repo):
    """`dvc repro` writes the first task's metrics before it trains the second task: those
    outputs must not make the second run look like it ran on edited code."""
    from liveml.core.project import Project

    def paths(task: str) -> dict:
        return {"paths": {"metrics": f"metrics/{task}.json", "model": f"data/{task}/model"}}

    params = {"tasks": {"defects": paths("defects"), "speech": paths("speech")}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / "metrics").mkdir()
    (repo / "metrics" / "defects.json").write_text("{}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "two tasks")
    (repo / "metrics" / "defects.json").write_text('{"map_50": 0.9}\n')

    speech = paths("speech")
    assert code_state(repo, exclude=pipeline_outputs(speech))["dirty"] is True
    exclude = pipeline_outputs(speech, Project(repo))
    assert "metrics/defects.json" in exclude
    assert code_state(repo, exclude=exclude)["dirty"] is False


def test_code_state_untracked_ignored_and_excluded(repo):
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"x" * 10)
    assert code_state(repo)["dirty"] is False  # git-ignored: not code

    (repo / "new_module.py").write_text("A = 1\n")
    a = code_state(repo)
    assert a["dirty"] is True
    (repo / "new_module.py").write_text("A = 2\n")
    assert code_state(repo)["diff_sha256"] != a["diff_sha256"]  # untracked content counts
    (repo / "new_module.py").unlink()

    # params.yaml is written by the pipeline (from conf/): excluded from the code state.
    (repo / "params.yaml").write_text("lr: 0.2\n")
    assert code_state(repo)["dirty"] is False
    assert code_state(repo, exclude=())["dirty"] is True
    # Absolute excludes inside the repo work; ones outside it are ignored, not an error.
    assert code_state(repo, exclude=[str(repo / "params.yaml"), "/elsewhere/x"])["dirty"] is False


def test_code_state_outside_git(tmp_path):
    assert code_state(tmp_path) == {"commit": None, "dirty": None, "diff_sha256": None}


def _write_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "crlf.txt").write_bytes(b"line one\r\nline two\r\n")  # DVC 3 hashes raw bytes
    (root / "sub" / "img.bin").write_bytes(bytes(range(256)) * 7)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / "sub" / "skip.tmp").write_text("ignored by .dvcignore\n")


def test_data_hashes_equal_what_dvc_records(tmp_path):
    r = tmp_path / "dvcrepo"
    r.mkdir()
    git(r, "init", "-q")
    sh(r, DVC, "init", "-q")
    (r / ".dvcignore").write_text("*.tmp\n")
    _write_tree(r / "raw")
    (r / "single.bin").write_bytes(b"\x00\x01binary\r\n")
    # A stage output too: dvc.lock must agree as well as .dvc files.
    (r / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "make": {
                        "cmd": f"{sys.executable} -c \"import pathlib; p=pathlib.Path('made'); "
                        "p.mkdir(); (p/'x.txt').write_text('x'); (p/'y.txt').write_text('yy')\"",
                        "outs": ["made"],
                    }
                }
            }
        )
    )
    sh(r, DVC, "add", "-q", "raw", "single.bin")
    sh(r, DVC, "repro", "-q")

    recorded = {
        "raw": yaml.safe_load((r / "raw.dvc").read_text())["outs"][0]["md5"],
        "single.bin": yaml.safe_load((r / "single.bin.dvc").read_text())["outs"][0]["md5"],
        "made": yaml.safe_load((r / "dvc.lock").read_text())["stages"]["make"]["outs"][0]["md5"],
    }
    assert recorded["raw"].endswith(".dir")
    assert data_hashes(r, ["raw", "single.bin", "made"]) == recorded

    # And a changed file changes the hash, as it does for DVC.
    (r / "raw" / "a.txt").write_text("beta\n")
    assert data_hashes(r, ["raw"])["raw"] != recorded["raw"]


def test_data_hashes_reuse_dvcs_own_hash_cache(tmp_path):
    """In a DVC repo, a file DVC has hashed is not read again: its md5 comes from DVC's state
    database (inode, mtime, size), the one `dvc` itself keeps for the repo."""
    import os

    from dvc.repo import Repo

    from liveml.tracking.lineage import dvc_site_cache_dir

    r = tmp_path / "dvcrepo"
    r.mkdir()
    git(r, "init", "-q")
    sh(r, DVC, "init", "-q")
    _write_tree(r / "raw")
    sh(r, DVC, "add", "-q", "raw")
    recorded = yaml.safe_load((r / "raw.dvc").read_text())["outs"][0]["md5"]
    with Repo(str(r)) as repo:
        assert dvc_site_cache_dir(r) == repo.site_cache_dir

    # Same bytes count, same mtime and inode, other content: what the cache answers for is
    # unchanged, so the recorded hash proves the file was not read.
    f = r / "raw" / "a.txt"
    st = f.stat()
    with open(f, "r+b") as out:
        out.write(b"ALPHA\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data_hashes(r, ["raw"]) == {"raw": recorded}
    # A new mtime: hashed again (as `dvc status` would), and the cache learns the new md5.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = data_hashes(r, ["raw"])["raw"]
    assert changed != recorded
    assert "raw" in sh(r, DVC, "status", "raw.dvc")  # DVC agrees it changed
    assert data_hashes(r, ["raw"])["raw"] == changed


def test_data_hashes_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        data_hashes(tmp_path, ["nope"])


def test_data_hashes_is_fast_on_1700_files(tmp_path):
    d = tmp_path / "many"
    for split in ("train", "val", "test"):
        (d / split).mkdir(parents=True)
    for i in range(1700):
        split = ("train", "val", "test")[i % 3]
        (d / split / f"{i:05d}.png").write_bytes(i.to_bytes(4, "little") * 400)
    data_hashes(tmp_path, ["many"])  # warm the imports
    t = time.perf_counter()
    data_hashes(tmp_path, ["many"])
    assert time.perf_counter() - t < 2.0


def test_fingerprint_reacts_to_config_data_code_not_logger_paths(tiny_cfg):
    code = {"commit": "abc", "dirty": False, "diff_sha256": None}
    data = {"data/defects/raw": "0" * 32 + ".dir"}
    base = fingerprint(code, fingerprint_view(tiny_cfg()), data)
    assert re.fullmatch(r"[0-9a-f]{64}", base)

    for same in ("logger.mode=disabled", "logger.project=other", "paths.runs=elsewhere"):
        assert fingerprint(code, fingerprint_view(tiny_cfg(same)), data) == base, same
    for other in ("model.lr=0.01", "seed=1", "trainer.max_epochs=3", "data.n_train=17"):
        assert fingerprint(code, fingerprint_view(tiny_cfg(other)), data) != base, other

    view = fingerprint_view(tiny_cfg())
    assert fingerprint(code, view, {"data/defects/raw": "1" * 32 + ".dir"}) != base
    assert fingerprint({**code, "commit": "abd"}, view, data) != base
    assert fingerprint({**code, "dirty": True, "diff_sha256": "f" * 64}, view, data) != base


def test_weights_sha256_is_exact_and_canonical():
    import torch

    g = torch.Generator().manual_seed(0)
    sd = {"b.weight": torch.randn(3, 4, generator=g), "a.bias": torch.zeros(4)}
    h = weights_sha256(sd)
    assert weights_sha256({k: v.clone() for k, v in reversed(list(sd.items()))}) == h

    changed = {k: v.clone() for k, v in sd.items()}
    changed["b.weight"][1, 2] += 1e-7
    assert weights_sha256(changed) != h
    assert weights_sha256({**sd, "a.bias": sd["a.bias"].double()}) != h  # dtype counts
    assert weights_sha256({**sd, "b.weight": sd["b.weight"].reshape(4, 3)}) != h  # shape too
    assert weights_sha256({"c.bias": sd["a.bias"], "b.weight": sd["b.weight"]}) != h  # names
    # Every dtype hashes, bfloat16 (no numpy equivalent) and scalars included.
    weights_sha256({"x": torch.ones(2, dtype=torch.bfloat16), "n": torch.tensor(3)})


def test_environment_records_versions_and_lock(tiny_project):
    env = environment(tiny_project.root)
    assert env["torch"] and env["lightning"] and env["numpy"] and env["python"]
    assert re.fullmatch(r"[0-9a-f]{64}", env["lock_sha256"])
    tiny_project.lock_file.unlink()
    assert environment(tiny_project.root)["lock_sha256"] is None


def test_new_record(tiny_trainable, tiny_cfg):
    cfg = tiny_cfg()
    rec = new_record(cfg, tiny_trainable, [cfg.paths.data])
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", rec["run_id"])
    assert rec["run_id"].endswith(rec["fingerprint"][:8])
    assert rec["data"][cfg.paths.data].endswith(".dir")
    assert rec["code"]["commit"] is None  # the test project is not a git repo
    assert rec["config"]["model"]["channels"] == [8, 16, 16, 32]
    assert rec["fingerprint"] == fingerprint(rec["code"], fingerprint_view(cfg), rec["data"])
    assert rec["seed"] == 0 and rec["task"] == "defects" and rec["weights_sha256"] is None
    assert rec["code_patch"] is None  # nothing uncommitted to store (not even git)


def test_code_state_and_patch_agree_with_code_state(repo):
    assert code_state_and_patch(repo) == (code_state(repo), None)  # clean: no patch
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "new.py").write_text("N = 1\n")
    state, patch = code_state_and_patch(repo)
    assert state == code_state(repo) and state["dirty"] is True
    text = patch["patch"]
    assert "+print('v2')" in text and "new file mode" in text and "+N = 1" in text
    assert patch["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert patch_bytes(patch) == text.encode()


def test_the_fingerprint_hashes_only_commit_dirty_and_diff(repo):
    """A stored patch (or any other key next to the code state) never changes a fingerprint:
    the fingerprints of runs recorded before liveml stored diffs stay what they were."""
    code = code_state(repo)
    view, data = {"seed": 0}, {"data": "abc.dir"}
    assert fingerprint({**code, "patch": "diff --git ..."}, view, data) == fingerprint(
        code, view, data
    )
    assert fingerprint_parts({**code, "x": 1}, view, data) == fingerprint_parts(code, view, data)
    # The value itself is the one of the three-key code dict (as before this key existed).
    payload = {"code": code, "config": view, "data": data}
    assert fingerprint(code, view, data) == hashlib.sha256(canonical_json(payload)).hexdigest()
