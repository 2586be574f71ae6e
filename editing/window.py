"""Layer windows (first layer + width), shared by every method that edits a range of layers."""

from __future__ import annotations

from chronosweep.models import ModelInfo


def check_window(where: str, start: int | None, width: int, info: ModelInfo, problems: list[str]) -> None:
    if start is None:
        return
    last = info.num_layers - 1
    if start < 0:
        problems.append(f"{where}.layer_start: must be >= 0, got {start}")
    elif start + width - 1 > last:
        problems.append(
            f"{where}.layer_start/layer_width: window {start}..{start + width - 1} runs past the last layer "
            f"({last}) of {info.name} ({info.num_layers} layers)"
        )


def window_layers(start: int | None, width: int, info: ModelInfo) -> list[int] | None:
    """Layer indices of the window; None (every layer) when start is None."""
    if start is None:
        return None
    return list(range(start, start + width))


def fitting_windows(num_layers: int, widths: list[int], starts: list[int] | None = None) -> list[tuple[int, int]]:
    """Every (start, width) that fits a model of num_layers, for grid sweeps over windows."""
    out = []
    for width in widths:
        for start in starts if starts is not None else range(num_layers):
            if start >= 0 and start + width <= num_layers:
                out.append((start, width))
    return out
