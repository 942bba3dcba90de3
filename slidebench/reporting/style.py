"""One style map for every figure: colour, marker, line style, legend order and display label.

A curve is identified by its system ("slide", "tf_full_softmax", "tf_sampled_softmax", ...), its
configuration ("default", "tuned", "paper") and its device ("cpu", "gpu"). The system picks the
colour family and marker, the configuration the line style and shade (the 2019 release's ``paper``
configuration is dashed, a lighter shade and hollow-marked everywhere), a GPU device a darker shade;
so SLIDE / SLIDE-paper / TF-full / TF-full-paper / TF-sampled / TF-sampled-paper all look different
whatever the experiment files call them. Experiment files name their runs
with free-form labels; ``style_for`` keys on (system, config, device) so the same system looks the
same in every figure whatever its label, and ``variant_style`` gives distinct, stable colours to the
members of one sweep (ablation, batch sizes, thread counts).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any, Mapping

__all__ = ["Style", "SYSTEMS", "CONFIG_LINESTYLE", "style_for", "variant_style", "display_name", "describe",
           "sort_key", "PALETTE", "apply_rc"]


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str
    order: int          # legend / bar order: lower first
    display: str        # legend text
    filled: bool = True  # hollow markers for the 2019 release's configuration

    def line_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot``."""
        kw = {"color": self.color, "marker": self.marker, "linestyle": self.linestyle,
              "label": self.display, "markevery": 0.1, "markersize": 4.5, "linewidth": 1.6}
        if not self.filled:
            kw["markerfacecolor"] = "white"
        return kw


# system -> (colour on CPU, colour on GPU, marker, order, display name)
SYSTEMS: dict[str, tuple[str, str, str, int, str]] = {
    "slide": ("#d62728", "#8c1515", "o", 0, "SLIDE"),
    "tf_full_softmax": ("#1f77b4", "#0b3d66", "s", 10, "TF full softmax"),
    "tf_sampled_softmax": ("#2ca02c", "#145214", "^", 20, "TF sampled softmax"),
    # dark teal: no sweep palette colour (PALETTE) is near it, so its lr variants stay apart from it
    "torch_full_softmax": ("#00757f", "#004c54", "D", 15, "dense softmax (PyTorch)"),
}
CONFIG_LINESTYLE: dict[str, str] = {"default": "-", "tuned": "-", "paper": "--"}
# the 2019 release's configuration: a lighter shade of the system's colour
PAPER_COLOR: dict[str, str] = {"slide": "#f08a8a", "tf_full_softmax": "#6aaed6", "tf_sampled_softmax": "#7fcf7f"}
CONFIG_ORDER: dict[str, int] = {"default": 0, "tuned": 1, "paper": 2}
# any other named configuration (the engine's "lsh"): dark grey, dotted, so it never wears the system's
# own colour next to the system's default run
OTHER_CONFIG_COLOR = "#333333"

# distinct colours for the members of a sweep (colour-blind safe-ish, Tableau 10 without red/blue/green
# first so sweeps do not look like a system's colour)
PALETTE: tuple[str, ...] = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                            "#7f7f7f", "#1f77b4", "#2ca02c", "#d62728")
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_UNKNOWN_SYSTEM = ("#7f7f7f", "#3f3f3f", "x", 90)


def _norm(v: Any, default: str) -> str:
    if v is None:
        return default
    try:
        import math
        if isinstance(v, float) and math.isnan(v):
            return default
    except TypeError:
        pass
    s = str(v).strip()
    return s if s else default


def display_name(system: str, config: str | None = None, device: str | None = None) -> str:
    """Legend text: e.g. "SLIDE", "TF full softmax (GPU, paper config)"."""
    system = _norm(system, "?")
    config = _norm(config, "default")
    device = _norm(device, "cpu").lower()
    base = SYSTEMS[system][4] if system in SYSTEMS else system
    extras = []
    if system.startswith("tf_") or device != "cpu":
        extras.append(device.upper())
    if config not in ("default",):
        extras.append(f"{config} config")
    return f"{base} ({', '.join(extras)})" if extras else base


def style_for(system: str | Mapping[str, Any], config: str | None = None, device: str | None = None,
              label: str | None = None) -> Style:
    """The style of one (system, config, device). Accepts a mapping (a runs/curves CSV row) too.

    ``label`` (the experiment file's label) is used as the display text when given; colour, marker
    and line style come from system/config/device only, so they agree across figures.
    """
    if isinstance(system, Mapping):
        row = system
        system = row.get("system")
        config = row.get("config", config)
        device = row.get("device", device)
        label = row.get("label", label) if label is None else label
    system = _norm(system, "?")
    config = _norm(config, "default")
    device = _norm(device, "cpu").lower()
    if system in SYSTEMS:
        cpu_c, gpu_c, marker, order, _ = SYSTEMS[system]
    else:
        cpu_c, gpu_c, marker, order = _UNKNOWN_SYSTEM
    if device == "gpu":
        color = gpu_c
    elif config == "paper":
        color = PAPER_COLOR.get(system, cpu_c)
    elif config in CONFIG_LINESTYLE:
        color = cpu_c
    else:
        color = OTHER_CONFIG_COLOR
    ls = CONFIG_LINESTYLE.get(config, ":")
    order = order + CONFIG_ORDER.get(config, 5) + (3 if device == "gpu" else 0)
    display = _norm(label, "") or display_name(system, config, device)
    return Style(color=color, marker=marker, linestyle=ls, order=order, display=display,
                 filled=config != "paper")


def describe(system: str, config: str | None = None, device: str | None = None) -> str:
    """What a run is, for a reader: "TF full softmax, tuned", "SLIDE, 2019 release's config"."""
    system = _norm(system, "?")
    config = _norm(config, "default")
    device = _norm(device, "cpu").lower()
    parts = [SYSTEMS[system][4] if system in SYSTEMS else system]
    if config == "paper":
        parts.append("2019 release's config")
    elif config == "tuned":
        parts.append("tuned")
    elif config != "default":
        parts.append(f"its '{config}' config")
    if device != "cpu":
        parts.append(device.upper())
    return ", ".join(parts)


def variant_style(base: Style, index: int, display: str | None = None) -> Style:
    """Style of the index-th member of a sweep: a distinct palette colour and marker, same line style."""
    if index < 0:
        raise ValueError(f"variant index must be >= 0, got {index}")
    return replace(base, color=PALETTE[index % len(PALETTE)], marker=_MARKERS[(index + 1) % len(_MARKERS)],
                   order=base.order * 1000 + index, display=display if display is not None else base.display)


def stable_color(key: str) -> str:
    """A palette colour chosen by a stable hash of ``key`` (same key, same colour, every run)."""
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]


def sort_key(system: str, config: str | None = None, device: str | None = None) -> tuple[int, str]:
    """Sort key that puts SLIDE first, then full softmax, then sampled softmax; configs in order."""
    st = style_for(system, config, device)
    return (st.order, st.display)


def apply_rc() -> None:
    """Matplotlib defaults shared by every figure (call once before drawing)."""
    import matplotlib as mpl
    mpl.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10,
        "axes.labelsize": 9, "legend.fontsize": 8, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42,
    })
