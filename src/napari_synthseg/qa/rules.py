"""Headless review: thresholds on the QA numbers turn into recorded decisions.

A rules file (YAML)::

    rules:                       # checked in order; the first rule that matches decides
      - name: out-of-range
        when: {range_ok: false}
        status: rejected
        reason: intensities outside the source's range
      - name: faint
        when: {cnr: {lt: 1.0}}
        status: rejected
        reason: too faint to see (CNR < 1)
      - name: seam
        when: {gradient_ratio: {gt: 3.0}}
        status: flagged
      - name: tiny
        when: {equivalent_diameter_mm: {lt: 3}}
        status: rejected
    default: accepted            # status when no rule matches (null: leave undecided)

Realism rules (a quality gate, as FreeTumor filters its synthetic tumours): give a
``realism:`` block naming the reference ``synthseg evaluate realism`` wrote (the range of every
realism feature over real lesions, :mod:`napari_synthseg.qa.realism`); rules may then use
``realism_outliers`` (how many features fall outside the real range), ``realism_score`` (largest
robust |z| against the real lesions) and ``realism_<feature>`` (e.g. ``realism_noise``)::

    realism:
      reference: report/realism_reference.json   # relative to this file
      features: [noise, shell_contrast, edge_sharpness]   # optional: only these count
    rules:
      - name: unrealistic
        when: {realism_outliers: {ge: 1}}
        status: flagged
        reason: outside the real lesions' range

The decision's reason names each feature outside the range with its value and the real range.

``when`` maps a metric (see :mod:`napari_synthseg.qa.metrics`) to a value (equality) or to
operators ``lt``, ``le``, ``gt``, ``ge``, ``eq``, ``ne``, ``between: [lo, hi]``; all
conditions of a rule must hold. A metric that is undefined (NaN, e.g. no background ring)
never satisfies a comparison. Decisions are recorded with ``by="rule:<file name>#<rule>"``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SynthsegError
from ..scene import LESION_STATUSES, Scene
from .metrics import METRIC_NAMES, LesionMetrics
from .realism import FEATURE_NAMES, RealismReference

REALISM_METRICS = ("realism_outliers", "realism_score", *(f"realism_{n}" for n in FEATURE_NAMES))

OPERATORS = ("lt", "le", "gt", "ge", "eq", "ne", "between")
DECISIONS = ("accepted", "rejected", "flagged")


@dataclass
class Rule:
    name: str
    conditions: dict[str, dict[str, Any]]
    status: str
    reason: str = ""

    def matches(self, metrics: dict[str, Any]) -> bool:
        return all(_check(metrics.get(key), ops) for key, ops in self.conditions.items())

    def describe(self, metrics: dict[str, Any]) -> str:
        parts = []
        for key, ops in self.conditions.items():
            value = metrics.get(key)
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            parts.append(f"{key}={shown} ({', '.join(f'{op} {arg}' for op, arg in ops.items())})")
        return "; ".join(parts)


@dataclass
class RuleSet:
    rules: list[Rule]
    default: str | None = "accepted"
    source: str = "rules"
    default_reason: str = "no rule matched"
    extra: dict[str, Any] = field(default_factory=dict)
    realism_reference: RealismReference | None = None
    realism_features: list[str] | None = None

    def decide(self, metrics: LesionMetrics | dict[str, Any], extra: dict[str, Any] | None = None) -> tuple[str | None, str, str]:
        """(status or None, by, reason) for one lesion's metrics (plus ``extra`` values, e.g. realism)."""
        values = metrics.to_dict() if isinstance(metrics, LesionMetrics) else dict(metrics)
        values.update(extra or {})
        for rule in self.rules:
            if rule.matches(values):
                reason = rule.reason or rule.name
                detail = rule.describe(values)
                if any(k.startswith("realism_") for k in rule.conditions) and values.get("realism_outside"):
                    detail += f"; outside the real range: {values['realism_outside']}"
                return rule.status, f"rule:{self.source}#{rule.name}", f"{reason} [{detail}]"
        return self.default, f"rule:{self.source}#default", self.default_reason


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _check(value: Any, ops: dict[str, Any]) -> bool:
    for op, arg in ops.items():
        if op in ("eq", "ne"):
            if isinstance(arg, bool) or isinstance(value, bool):
                equal = bool(value) == bool(arg) if value is not None else False
            else:
                v = _num(value)
                equal = v is not None and v == float(arg)
            if (op == "eq") != equal:
                return False
            continue
        v = _num(value)
        if v is None:
            return False
        if op == "between":
            lo, hi = arg
            ok = float(lo) <= v <= float(hi)
        else:
            a = float(arg)
            ok = {"lt": v < a, "le": v <= a, "gt": v > a, "ge": v >= a}[op]
        if not ok:
            return False
    return True


def _parse_condition(rule_name: str, key: str, spec: Any, where: str) -> dict[str, Any]:
    if key not in METRIC_NAMES and key not in REALISM_METRICS:
        raise SynthsegError(f"{where}: rule {rule_name!r} uses unknown metric {key!r}; known: {', '.join(METRIC_NAMES)}, "
                            f"and with a realism: block {', '.join(REALISM_METRICS[:2])}, realism_<feature>")
    if not isinstance(spec, dict):
        return {"eq": spec}
    for op, arg in spec.items():
        if op not in OPERATORS:
            raise SynthsegError(f"{where}: rule {rule_name!r} has unknown operator {op!r}; use {', '.join(OPERATORS)}")
        if op == "between":
            if not (isinstance(arg, (list, tuple)) and len(arg) == 2 and all(_num(a) is not None for a in arg)):
                raise SynthsegError(f"{where}: rule {rule_name!r}: between takes [low, high]")
        elif op in ("lt", "le", "gt", "ge") and _num(arg) is None:
            raise SynthsegError(f"{where}: rule {rule_name!r}: {op} needs a number, got {arg!r}")
    return dict(spec)


def _parse_realism(spec: Any, source: str, base: Path | None) -> tuple[RealismReference, list[str] | None]:
    if not isinstance(spec, dict) or "reference" not in spec:
        raise SynthsegError(f"{source}: realism: needs 'reference: PATH' (the realism_reference.json of synthseg evaluate realism)")
    path = Path(str(spec["reference"]))
    if not path.is_absolute() and base is not None:
        path = base / path
    reference = RealismReference.load(path)
    features = spec.get("features")
    if features is not None:
        if not isinstance(features, list) or not all(f in FEATURE_NAMES for f in features):
            raise SynthsegError(f"{source}: realism features must be a list of {', '.join(FEATURE_NAMES)}")
    return reference, features


def parse_rules(data: Any, source: str = "rules", base: Path | None = None) -> RuleSet:
    """A :class:`RuleSet` from parsed YAML; ``source`` names the file in decisions, ``base`` is the
    folder relative paths (the realism reference) start from."""
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise SynthsegError(f"{source}: expected a mapping with a 'rules:' list")
    unknown = set(data) - {"rules", "default", "default_reason", "ring_mm", "realism"}
    if unknown:
        raise SynthsegError(f"{source}: unknown keys {sorted(unknown)}; use rules, default, default_reason, ring_mm, realism")
    rules, names = [], set()
    for i, item in enumerate(data.get("rules") or []):
        if not isinstance(item, dict):
            raise SynthsegError(f"{source}: rule {i + 1} must be a mapping with name, when and status")
        name = str(item.get("name") or f"rule{i + 1}")
        if name in names:
            raise SynthsegError(f"{source}: two rules are called {name!r}; names must be unique")
        names.add(name)
        status = item.get("status")
        if status not in DECISIONS:
            raise SynthsegError(f"{source}: rule {name!r} needs status: {' | '.join(DECISIONS)}, got {status!r}")
        when = item.get("when")
        if not isinstance(when, dict) or not when:
            raise SynthsegError(f"{source}: rule {name!r} needs a 'when:' mapping of metric conditions")
        conditions = {key: _parse_condition(name, key, spec, source) for key, spec in when.items()}
        rules.append(Rule(name=name, conditions=conditions, status=status, reason=str(item.get("reason", ""))))
    default = data.get("default", "accepted")
    if default is not None and default not in DECISIONS:
        raise SynthsegError(f"{source}: default must be one of {', '.join(DECISIONS)} or null, got {default!r}")
    extra = {"ring_mm": float(data["ring_mm"])} if "ring_mm" in data else {}
    reference, features = _parse_realism(data["realism"], source, base) if "realism" in data else (None, None)
    uses_realism = [r.name for r in rules if any(k in REALISM_METRICS for k in r.conditions)]
    if uses_realism and reference is None:
        raise SynthsegError(f"{source}: rule {uses_realism[0]!r} uses realism metrics; add a 'realism: {{reference: PATH}}' block")
    return RuleSet(rules, default, source, str(data.get("default_reason", "no rule matched")), extra, reference, features)


def load_rules(path: str | os.PathLike) -> RuleSet:
    """Read a RULES.yaml file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthsegError(f"rules file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SynthsegError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_rules(data, source=path.name, base=path.parent)


def apply_rules(
    scene: Scene,
    metrics: dict[str, LesionMetrics],
    rules: RuleSet,
    overwrite: bool = False,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, tuple[str | None, str, str]]:
    """Decide every lesion of ``scene`` that has metrics; returns id -> (status, by, reason).

    ``extra`` adds values per lesion id (the realism metrics). Lesions a person or rule already
    decided are left alone unless ``overwrite``. All decisions of one call are one undo step.
    """
    results: dict[str, tuple[str | None, str, str]] = {}
    with scene.batch(f"review with {rules.source}"):
        for rec in list(scene.lesions):
            if rec.id not in metrics:
                continue
            if rec.status != "placed" and not overwrite:
                continue
            status, by, reason = rules.decide(metrics[rec.id], (extra or {}).get(rec.id))
            results[rec.id] = (status, by, reason)
            if status is not None:
                assert status in LESION_STATUSES
                scene.set_decision(rec.id, status, by=by, reason=reason)
    return results
