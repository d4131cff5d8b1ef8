"""CPU numerics: native by default, recorded; LIVEML_CPU_ISA=avx2 pins torch's kernels to AVX2."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from liveml.core import numerics

X86 = platform.machine().lower() in ("x86_64", "amd64")
PROBE = (
    "import json, liveml, torch; from liveml.core import numerics; "
    "torch.ones(64).sum(); print(json.dumps(numerics.describe()))"
)


def probe(**env: str) -> dict:
    """numerics.describe() of a fresh process that imports liveml, then torch."""
    clean = {k: v for k, v in os.environ.items() if k not in (*numerics.PINS, numerics.MODE_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not X86, reason="the AVX2 pin applies to x86-64 only")
def test_avx2_mode_pins_every_library_to_avx2():
    state = probe(LIVEML_CPU_ISA="avx2")
    assert state["mode"] == "avx2"
    assert state["aten_capability"] == "AVX2"
    assert (state["onednn_max_cpu_isa"], state["mkl_cbwr"]) == ("AVX2", "AVX2")


def test_native_is_the_default_and_a_users_own_setting_wins():
    native = probe()
    assert native["mode"] == "native" and native["mkl_cbwr"] is None
    own = probe(LIVEML_CPU_ISA="avx2", ATEN_CPU_CAPABILITY="default")
    assert own["aten_capability"] == "DEFAULT" and own["aten_cpu_capability"] == "default"


def test_a_bad_mode_names_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(numerics.MODE_ENV, "fastest")
    with pytest.raises(ValueError, match=r"LIVEML_CPU_ISA='fastest'.*avx2.*native"):
        numerics.mode()
    numerics.pin()  # importing liveml must not fail on it


def test_differences_name_what_changes_results_not_the_cpu_model():
    run = {"machine": "x86_64", "cpu": "A", "aten_capability": "AVX2", "mkl_cbwr": "AVX2"}
    assert numerics.differences(run, {**run, "cpu": "B"}) == []
    diffs = numerics.differences(run, {**run, "aten_capability": "AVX512"})
    assert diffs == ["aten_capability: run 'AVX2', now 'AVX512'"]
    assert numerics.differences(None, run) == []


TRAIN = """
import json, sys
import liveml
from pathlib import Path
from liveml.core.config import compose
from liveml.core.project import Project
from liveml.training.run import train
project = Project(Path(sys.argv[1]))
cfg = compose(sys.argv[2:], project=project)
record = train(cfg, out_dir=Path(sys.argv[1]) / "model", project=project, resume=False)
print(json.dumps({"weights": record["weights_sha256"],
                  "numerics": record["environment"]["numerics"]}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="the AVX2 pin applies to x86-64 only")
def test_the_pin_decides_the_weights_and_the_record_says_so(
    tiny_trainable, tiny_overrides, tmp_path
):
    native_isa = probe()["aten_capability"]
    if native_isa == "AVX2":
        pytest.skip("this CPU's native path is AVX2 already: pinned and native are the same")
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    clean = {k: v for k, v in os.environ.items() if k not in (*numerics.PINS, numerics.MODE_ENV)}

    def run(**env: str) -> dict:
        out = subprocess.run(
            [sys.executable, str(script), str(tiny_trainable.root), *tiny_overrides],
            env={**clean, **env},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    pinned, native = run(LIVEML_CPU_ISA="avx2"), run()
    # The machine's own fastest path sums in another order: other weights, from one step on.
    assert native["weights"] != pinned["weights"]
    assert pinned["numerics"]["aten_capability"] == "AVX2"
    assert native["numerics"]["aten_capability"] == native_isa
