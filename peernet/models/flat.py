"""Flat parameter layout: a model's parameters as slices of one flat vector (simulator and wire format)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from peernet.errors import ModelError


@dataclass(frozen=True)
class ParamLayout:
    """Where each named parameter lives in the flat vector: ``flat[offset : offset + prod(shape)]``.

    Order is ``module.named_parameters()`` order. Buffers are not part of the layout, so
    :meth:`of` refuses modules whose buffers carry state (e.g. BatchNorm running statistics).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    numel: int
    dtype: torch.dtype

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.shapes) == len(self.offsets):
            raise ModelError("ParamLayout: names, shapes and offsets must have the same length")
        offset = 0
        for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True):
            if off != offset:
                raise ModelError(f"ParamLayout: parameter {name!r} at offset {off}, expected {offset}")
            offset += math.prod(shape)
        if offset != self.numel:
            raise ModelError(f"ParamLayout: numel {self.numel} but the shapes add up to {offset}")

    @classmethod
    def of(cls, module: nn.Module) -> ParamLayout:
        """Layout of ``module``'s parameters; ModelError if it has stateful buffers or mixed dtypes."""
        for sub_name, sub in module.named_modules():
            if isinstance(sub, _NormBase) and sub.track_running_stats:
                raise ModelError(
                    f"module {sub_name or type(module).__name__!r} ({type(sub).__name__}) keeps running "
                    "statistics, which a flat parameter vector cannot carry; use GroupNorm"
                )
        # Persistent buffers would be silently dropped from the wire, so nodes would diverge.
        param_names = {n for n, _ in module.named_parameters(remove_duplicate=False)}
        stateful = [k for k in module.state_dict() if k not in param_names]
        if stateful:
            raise ModelError(f"module has persistent buffers not covered by the flat layout: {stateful}")
        params = list(module.named_parameters())
        if not params:
            raise ModelError(f"module {type(module).__name__} has no parameters")
        dtypes = {p.dtype for _, p in params}
        if len(dtypes) != 1:
            raise ModelError(f"all parameters must share one dtype, found {sorted(map(str, dtypes))}")
        names: list[str] = []
        shapes: list[tuple[int, ...]] = []
        offsets: list[int] = []
        offset = 0
        for name, p in params:
            names.append(name)
            shapes.append(tuple(p.shape))
            offsets.append(offset)
            offset += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), offset, dtypes.pop())

    def _params(self, module: nn.Module) -> list[nn.Parameter]:
        """The module's parameters in layout order, after checking they match the layout."""
        params = list(module.named_parameters())
        got = tuple((n, tuple(p.shape)) for n, p in params)
        if got != tuple(zip(self.names, self.shapes, strict=True)):
            raise ModelError("module parameters do not match this layout (different model?)")
        return [p for _, p in params]

    def _check_flat(self, flat: torch.Tensor) -> None:
        if flat.ndim == 0 or flat.shape[-1] != self.numel:
            raise ModelError(f"flat vector has shape {tuple(flat.shape)}, expected (..., {self.numel})")

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """A new ``(numel,)`` tensor holding a copy of the module's parameters."""
        params = self._params(module)
        return torch.cat([p.detach().reshape(-1) for p in params]).to(self.dtype)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views into ``flat`` (shape ``(..., numel)``), each of shape ``(..., *shape)``; no copy."""
        self._check_flat(flat)
        batch = tuple(flat.shape[:-1])
        out: dict[str, torch.Tensor] = {}
        for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True):
            # Splitting the stride-1 last dimension is always expressible as a view, even when batched.
            out[name] = flat[..., off : off + math.prod(shape)].view(batch + shape)
        return out

    def grads_to_flat(
        self, grads: dict[str, torch.Tensor], batch_shape: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """Concatenate ``grads`` (each ``(*batch_shape, *shape)``) into a ``(*batch_shape, numel)`` tensor."""
        missing = [n for n in self.names if n not in grads]
        extra = [n for n in grads if n not in set(self.names)]
        if missing or extra:
            raise ModelError(f"gradients do not match the layout: missing {missing}, unexpected {extra}")
        batch = tuple(batch_shape)
        parts: list[torch.Tensor] = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            g = grads[name]
            if tuple(g.shape) != batch + shape:
                raise ModelError(f"gradient {name!r} has shape {tuple(g.shape)}, expected {batch + shape}")
            # Explicit size rather than -1: -1 is ambiguous for empty tensors.
            parts.append(g.reshape(*batch, math.prod(shape)))
        return torch.cat(parts, dim=-1)

    def load_into(self, module: nn.Module, flat: torch.Tensor) -> None:
        """Copy the ``(numel,)`` vector ``flat`` into the module's parameters in place."""
        if flat.ndim != 1:
            raise ModelError(f"load_into takes a ({self.numel},) vector, got shape {tuple(flat.shape)}")
        params = self._params(module)
        views = self.unflatten(flat)
        with torch.no_grad():
            for name, p in zip(self.names, params, strict=True):
                p.copy_(views[name])

    def fingerprint(self) -> str:
        """sha256 of names, shapes and dtype: equal fingerprints mean two nodes run the same architecture."""
        spec = {"names": list(self.names), "shapes": [list(s) for s in self.shapes], "dtype": str(self.dtype)}
        return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()
