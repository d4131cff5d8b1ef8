"""Scope check: does a model's metrics meet its task's targets (conf/task/<task>.yaml)?

Task-independent and free of torch: it compares numbers against bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _bound(target: Any, key: str) -> float | None:
    # Targets come as plain dicts, OmegaConf nodes (Mappings) or `Target` dataclasses.
    value = target.get(key) if isinstance(target, Mapping) else getattr(target, key, None)
    return None if value is None else float(value)


def check_scope(
    metrics: Mapping[str, Any], targets: Mapping[str, Any], task: str = "<task>"
) -> dict:
    """Compare each targeted metric with its min/max bound.

    Returns `{"meets_scope": bool, "targets": {metric: {"value", "min", "max", "met"}}}`;
    a bound that is None is not checked. A NaN or missing value never meets its target; a
    target naming a metric that evaluation does not produce is a config error (ValueError).
    """
    missing = [name for name in targets if name not in metrics]
    if missing:
        raise ValueError(
            f"scope targets name metric(s) {', '.join(sorted(missing))} that evaluation does "
            f"not produce; available metrics: {', '.join(sorted(metrics))}. "
            f"Fix: correct `targets` in conf/task/{task}.yaml."
        )
    results: dict[str, dict] = {}
    for name, target in targets.items():
        lo, hi = _bound(target, "min"), _bound(target, "max")
        if lo is None and hi is None:
            raise ValueError(
                f"scope target `{name}` has neither `min` nor `max`; "
                f"fix: give it a bound in conf/task/{task}.yaml or remove it."
            )
        raw = metrics[name]
        value = None if raw is None else float(raw)
        met = value is not None and not math.isnan(value)
        if met and lo is not None:
            met = value >= lo
        if met and hi is not None:
            met = value <= hi
        results[name] = {"value": value, "min": lo, "max": hi, "met": bool(met)}
    return {"meets_scope": all(r["met"] for r in results.values()), "targets": results}
