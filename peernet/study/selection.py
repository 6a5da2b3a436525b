"""Step-size selection: scoring a group's candidates, successive halving's shorter rungs, and the final choice."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from peernet.study.grid import LOWER_IS_BETTER, Cell, Selection, Study, run_length


def score(summary: dict[str, Any] | None, metric: str) -> float | None:
    """The cell's ``metric``, or None when it failed, is missing or is not a finite number (it never wins)."""
    if not summary or summary.get("status") == "failed":
        return None
    try:
        value = float(summary[metric])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def ranked(candidates: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The scored candidates, best first; ties keep the order they are listed in (the first wins)."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    return sorted((c for c in candidates if c["metric"] is not None), key=lambda c: sign * c["metric"])


def keep_count(n: int, keep: float) -> int:
    """How many of ``n`` candidates go on to the next rung: the ``keep`` fraction rounded down, at least one."""
    return max(1, math.floor(n * keep + 1e-9))  # 3 × 1/3 is 1, even where the float product is 0.999...


def rung_cell(cell: Cell, selection: Selection, budget: float) -> Cell:
    """``cell`` shortened to ``budget`` (in the selection's unit), with an id of its own."""
    change: dict[str, Any] = {"rounds": int(budget)} if selection.unit == "rounds" else {"epochs": float(budget)}
    settings = dataclasses.replace(cell.settings, **change)
    slug = cell.id.rsplit("-", 1)[0]
    return Cell(f"{slug}_{selection.unit}{budget:g}-{settings.fingerprint()[:8]}", settings, cell.labels)


@dataclasses.dataclass
class _Group:
    """One combination of the other axes: its tuned cells still in the race and the rungs run so far."""

    labels: dict[str, str]
    survivors: list[Cell]  # the full-budget cells, in grid order
    budgets: tuple[float, ...]  # the shorter rungs
    rungs: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class Selector:
    """The selection rule over the sweep's phases: shorter rungs (successive halving), then the full budget.

    Everything it decides follows from the cells' summaries, so a resumed sweep decides the same again.
    """

    def __init__(self, study: Study) -> None:
        sel = study.selection
        assert sel is not None
        self.sel = sel
        self.seeds = len({c.settings.seed for c in study.cells})
        groups: dict[str, list[Cell]] = {}
        for cell in study.cells:
            if cell.settings.seed == sel.on_seed:
                groups.setdefault(cell.group(("seed", sel.tune)), []).append(cell)
        self.groups = {key: _Group({k: v for k, v in members[0].labels.items() if k not in ("seed", sel.tune)},
                                   members, self._budgets(members[0])) for key, members in groups.items()}

    def _budgets(self, cell: Cell) -> tuple[float, ...]:
        if self.sel.method != "halving":
            return ()
        length, _ = run_length(cell.settings)
        return tuple(b for b in self.sel.budgets if b < length)  # a budget equal to the full one is the final rung

    def rung(self, k: int) -> dict[str, list[Cell]]:
        """The cells of shorter rung ``k`` per group; a group with one candidate left goes straight to the end."""
        return {key: [rung_cell(c, self.sel, g.budgets[k]) for c in g.survivors]
                for key, g in self.groups.items() if k < len(g.budgets) and len(g.survivors) > 1}

    def cut(self, k: int, cells: dict[str, list[Cell]], summaries: dict[str, dict[str, Any]]) -> None:
        """After rung ``k``: keep the best fraction of each group by the metric, and record why."""
        for key, short in cells.items():
            group = self.groups[key]
            candidates = self._candidates(short, summaries)
            best = ranked(candidates, self.sel.metric)[:keep_count(len(short), self.sel.keep)]
            kept = {c["cell"] for c in best}
            group.rungs.append({"budget": group.budgets[k], "unit": self.sel.unit, "candidates": candidates,
                                "kept": [c["value"] for c in best]})
            group.survivors = [full for full, cell in zip(group.survivors, short, strict=True) if cell.id in kept]

    def finalists(self) -> list[Cell]:
        """The tuned cells that run at the full budget, in grid order."""
        return [c for g in self.groups.values() for c in g.survivors]

    def remaining(self, k: int) -> int:
        """Cells still to run from shorter rung ``k`` on, at most: the rungs, the full budget, the other seeds."""
        total = 0
        for g in self.groups.values():
            n = len(g.survivors)
            for _ in g.budgets[k:]:
                if n <= 1:
                    break
                total += n
                n = keep_count(n, self.sel.keep)
            total += n + (self.seeds - 1 if n else 0)
        return total

    def choices(self, summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Per group the value whose full-budget cell scores best, with every rung that led there."""
        out = []
        for g in self.groups.values():
            candidates = self._candidates(g.survivors, summaries)
            best = ranked(candidates, self.sel.metric)[:1]
            final: dict[str, Any] = {}
            if g.survivors:
                length, unit = run_length(g.survivors[0].settings)
                final = {"budget": length, "unit": unit, "candidates": candidates, "kept": [c["value"] for c in best]}
            out.append({"group": g.labels, "chosen": best[0]["value"] if best else None,
                        "chosen_cell": best[0]["cell"] if best else None, "candidates": candidates,
                        "rungs": g.rungs + ([final] if final else [])})
        return out

    def _candidates(self, cells: list[Cell], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"value": c.labels[self.sel.tune], "cell": c.id, "metric": score(summaries.get(c.id), self.sel.metric)}
                for c in cells]
