"""The report's account of a sweep's step-size selection: per setting and rung, the candidates, scores and survivors."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from peernet.study.grid import LOWER_IS_BETTER


def reported(cell: dict[str, Any]) -> bool:
    """A sweep.json cell the report's table uses: not a shorter rung, and of the tuned cells only the chosen one."""
    return cell["phase"] not in ("rung", "tune") or bool(cell["chosen"])


def _fraction(keep: float) -> str:
    """``1/3`` for 0.333..., as the study file may have said it; other values as numbers."""
    near = Fraction(keep).limit_denominator(20)
    return str(near) if abs(float(near) - keep) < 1e-9 else f"{keep:g}"


def _score(value: Any) -> str:
    return "failed" if value is None else f"{float(value):.4g}"


def _rule(selection: dict[str, Any]) -> str:
    goal = "lower" if selection["metric"] in LOWER_IS_BETTER else "higher"
    text = (f"{selection['tune']} chosen per setting on seed {selection['on_seed']} by {selection['metric']} "
            f"({goal} is better; never a test metric)")
    if selection.get("method") == "halving":
        budgets = ", ".join(f"{b:g}" for b in selection["budgets"])
        text += (f", by successive halving: every value for {budgets} {selection['unit']}, keeping the best "
                 f"{_fraction(selection['keep'])} of each rung (at least one), then the survivors for the cells' "
                 "own budget")
    return text + ". A failed cell never goes on; on a tie the value listed first does."


def selection_section(selection: dict[str, Any]) -> str:
    """Markdown: the rule, then one table row per setting and rung (the last rung is the full budget)."""
    lines = ["## Step-size selection", "", _rule(selection) + " From selection.json:", "",
             f"| setting | budget | {selection['metric']} per {selection['tune']} | kept |", "|---|---|---|---|"]
    for choice in selection.get("choices", []):
        setting = ", ".join(f"{k}={v}" for k, v in choice["group"].items()) or "–"
        rungs = choice.get("rungs") or [{"budget": None, "unit": "", "candidates": choice["candidates"],
                                         "kept": [choice["chosen"]] if choice["chosen"] else []}]
        for i, rung in enumerate(rungs):
            scores = ", ".join(f"{c['value']}: {_score(c['metric'])}" for c in rung["candidates"])
            kept = ", ".join(rung["kept"]) or "none"
            if i == len(rungs) - 1:
                kept = f"**{choice['chosen']}** (chosen)" if choice["chosen"] else "none: no choice, no more seeds"
            budget = "full" if rung["budget"] is None else f"{rung['budget']:g} {rung['unit']}"
            lines.append(f"| {setting if i == 0 else ''} | {budget} | {scores} | {kept} |")
    return "\n".join(lines)
