"""The clean-versus-adversarial explanation grid figure.

Columns are distinct base digits; the first row shows the clean images, each further
row the same images attacked with one epsilon. Every cell shows the grayscale image
under the explainer's heat map and is captioned "prediction (confidence%)"; given the
true labels, the top caption starts with the label and a caption is red where the
prediction is wrong, otherwise red where it differs from the clean one.

The figure is drawn on its own Agg canvas (no pyplot, so no global figure registry
and nothing left open) at a fixed size, so the PNG's pixel size follows from the
grid's shape alone (:func:`grid_size_inches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["CELL_INCHES", "DPI", "draw_grid", "grid_size_inches", "pick_distinct_digits"]

CELL_INCHES = 1.3  # one image plus its caption
DPI = 100
# margins in inches: row labels on the left; on top the title above the first row's
# captions, which take two lines when the true labels are shown
_LEFT, _RIGHT, _TOP, _BOTTOM = 0.9, 0.1, 0.95, 0.1
_TITLE_INCHES = 0.1  # from the top edge to the top of the title
CAM_ALPHA = 0.5
CAM_COLORMAP = "jet"


def grid_size_inches(rows: int, cols: int) -> tuple[float, float]:
    """Width and height of the figure for a ``rows`` x ``cols`` grid."""
    return (_LEFT + cols * CELL_INCHES + _RIGHT, _TOP + rows * CELL_INCHES + _BOTTOM)


def pick_distinct_digits(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` images to show: the first image of class 0, of class 1, ...

    Classes are taken in increasing order, each by its first occurrence in ``labels``.
    When ``count`` exceeds the number of classes, the remaining columns are the
    earliest images not picked yet, in dataset order.
    """
    if not 0 <= count <= labels.numel():
        raise ValueError(f"cannot pick {count} images out of {labels.numel()}")
    labels = labels.flatten()
    classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
    order = torch.arange(labels.numel(), device=labels.device)
    first = torch.full((classes.numel(),), labels.numel(), dtype=torch.long, device=labels.device)
    first = first.scatter_reduce(0, inverse, order, reduce="amin")
    if count <= first.numel():
        return first[:count]
    rest = torch.ones(labels.numel(), dtype=torch.bool, device=labels.device)
    rest[first] = False
    extra = order[rest][: count - first.numel()]
    return torch.cat([first, extra])


def _as_array(cell: torch.Tensor) -> np.ndarray:
    """(H, W), (1, H, W) or (3, H, W) -> an (H, W) or (H, W, 3) array for imshow."""
    if cell.dim() == 3:
        cell = cell[0] if cell.shape[0] == 1 else cell.permute(1, 2, 0)
    return cell.detach().float().cpu().clamp(0.0, 1.0).numpy()


def draw_grid(images: torch.Tensor, cams: torch.Tensor | None, preds: torch.Tensor,
              confidences: torch.Tensor, row_labels: Sequence[str], title: str,
              path: Path, labels: torch.Tensor | None = None) -> Path:
    """Draw the grid and save it as a PNG at ``path``; returns ``path``.

    ``images`` is (R, C, 1, H, W) or (R, C, H, W) in [0, 1]; ``cams`` (R, C, H, W) in
    [0, 1] or None for no overlay; ``preds`` and ``confidences`` (R, C), confidences
    as probabilities in [0, 1]; one entry of ``row_labels`` per row (e.g. "clean",
    "eps=0.1"); ``labels`` (C,), the true label of each column, or None.

    With ``labels``, the top caption of a column starts with the true label and a
    caption is red where the prediction is wrong (so a clean image that is already
    misclassified shows as such); without, red marks a prediction that differs from
    the clean one in the same column.
    """
    if images.dim() not in (4, 5):
        raise ValueError(f"images must be (R, C, H, W) or (R, C, 1, H, W), "
                         f"got {tuple(images.shape)}")
    rows, cols = images.shape[:2]
    for name, tensor in (("preds", preds), ("confidences", confidences)):
        if tuple(tensor.shape) != (rows, cols):
            raise ValueError(f"{name} must have shape {(rows, cols)}, got {tuple(tensor.shape)}")
    if cams is not None and tuple(cams.shape[:2]) != (rows, cols):
        raise ValueError(f"cams must have shape {(rows, cols)} + (H, W), got {tuple(cams.shape)}")
    if len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")

    width, height = grid_size_inches(rows, cols)
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=_LEFT / width, right=1 - _RIGHT / width,
                           bottom=_BOTTOM / height, top=1 - _TOP / height,
                           wspace=0.05, hspace=0.3)
    axes = figure.subplots(rows, cols, squeeze=False)
    figure.suptitle(title, y=1 - _TITLE_INCHES / height, va="top")
    preds = preds.detach().cpu()
    if labels is not None:
        labels = labels.detach().cpu().flatten()
        if labels.numel() != cols:
            raise ValueError(f"labels must have {cols} entries, got {labels.numel()}")
    confidences = confidences.detach().cpu()
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(_as_array(images[r, c]), cmap="gray", vmin=0.0, vmax=1.0)
            if cams is not None:
                ax.imshow(_as_array(cams[r, c]), cmap=CAM_COLORMAP,
                          alpha=CAM_ALPHA, vmin=0.0, vmax=1.0)
            caption = f"{int(preds[r, c])} ({100 * float(confidences[r, c]):.0f}%)"
            if labels is None:
                red = bool(preds[r, c] != preds[0, c])
            else:
                red = bool(preds[r, c] != labels[c])
                if r == 0:
                    caption = f"label {int(labels[c])}\n{caption}"
            ax.set_title(caption, fontsize=9, color="red" if red else "black")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r][0].set_ylabel(row_labels[r], fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
