"""Interactive figures that work with a kernel and without one.

``interactive(draw, lr=[0.01, 0.1, 1.0])`` gives, in Jupyter or Colab, ipywidgets controls
that redraw the figure live. When the website is built (``in_book_build()``), the same
figure is drawn once for every combination of control values, and the page gets the
frames with plain HTML controls and a few lines of inline JavaScript: the figure still
responds on the static site, with no kernel, no network and no third-party script.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt

from d2l_utils.runtime import in_book_build

MAX_FRAMES = 240
_counter = itertools.count()


def interactive(draw: Callable[..., None], *, figsize: tuple[float, float] = (6.0, 3.6),
                alt: str = "", defaults: dict[str, Any] | None = None,
                mode: str | None = None, dpi: int = 80, **controls: Sequence[Any]) -> Any:
    """An interactive figure: ``draw(fig, **values)`` draws onto an empty figure.

    Args:
        draw: called as ``draw(fig, name=value, ...)`` with one value per control.
        figsize: the figure size in inches.
        alt: a description of the figure for screen readers (alt text of every frame).
        defaults: the value each control starts at (the first value when absent).
        mode: ``"live"`` (ipywidgets), ``"static"`` (precomputed frames), or ``None`` to
            choose ``"static"`` during the website build and ``"live"`` otherwise.
        dpi: resolution of precomputed frames.
        **controls: name -> the values that control takes (numbers give a slider,
            strings a drop-down).

    Returns:
        An ipywidgets box (live) or an ``IPython.display.HTML`` (static); show it by making
        it the last expression of a cell.

    Raises:
        TypeError: a control is given one value instead of a list of values.
        ValueError: no controls, an empty control, a default not among its values, or
            more than ``MAX_FRAMES`` combinations in static mode.
    """
    if not controls:
        raise ValueError("interactive() needs at least one control, e.g. lr=[0.01, 0.1, 1.0]")
    for name, options in controls.items():
        if isinstance(options, str | bytes) or not isinstance(options, Iterable):
            raise TypeError(f"control {name}={options!r}: each control takes a list of the values "
                            f"it offers, e.g. {name}=[0.01, 0.1, 1.0] (for a fixed value, pass a "
                            f"one-element list, {name}=[{options!r}])")
    values = {name: list(options) for name, options in controls.items()}
    for name, options in values.items():
        if not options:
            raise ValueError(f"control {name!r} has no values")
    start = {name: options[0] for name, options in values.items()}
    for name, value in (defaults or {}).items():
        if name not in values or value not in values[name]:
            raise ValueError(f"default {name}={value!r} is not one of that control's values")
        start[name] = value
    mode = mode or ("static" if in_book_build() else "live")
    if mode == "live":
        return _live(draw, values, start, figsize)
    if mode == "static":
        return _static(draw, values, start, figsize, alt, dpi)
    raise ValueError(f"mode must be 'live', 'static' or None, got {mode!r}")


def render_frame(draw: Callable[..., None], figsize: tuple[float, float], dpi: int,
                 **values: Any) -> bytes:
    """Draw one frame and return it as PNG bytes."""
    fig = plt.figure(figsize=figsize)
    try:
        draw(fig, **values)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _live(draw, values, start, figsize):
    import ipywidgets as widgets
    from IPython.display import display

    controls = {}
    for name, options in values.items():
        if all(isinstance(v, int | float) for v in options):
            controls[name] = widgets.SelectionSlider(options=options, value=start[name],
                                                     description=name, continuous_update=False)
        else:
            controls[name] = widgets.Dropdown(options=options, value=start[name],
                                              description=name)

    def update(**chosen):
        fig = plt.figure(figsize=figsize)
        draw(fig, **chosen)
        display(fig)
        plt.close(fig)

    output = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), output])


def _static(draw, values, start, figsize, alt, dpi):
    from IPython.display import HTML

    names = list(values)
    combos = list(itertools.product(*(range(len(values[n])) for n in names)))
    if len(combos) > MAX_FRAMES:
        raise ValueError(f"{len(combos)} combinations of control values; at most {MAX_FRAMES} "
                         "frames are precomputed for the website: offer fewer values")
    frames = {}
    for combo in combos:
        chosen = {n: values[n][i] for n, i in zip(names, combo, strict=True)}
        png = render_frame(draw, figsize, dpi, **chosen)
        frames["|".join(map(str, combo))] = base64.b64encode(png).decode("ascii")
    uid = f"d2l-interactive-{next(_counter)}"
    first = "|".join(str(values[n].index(start[n])) for n in names)
    alt_text = alt or "Interactive figure with controls: " + ", ".join(names)
    rows = []
    for n in names:
        k = values[n].index(start[n])
        label = html.escape(n)
        if all(isinstance(v, int | float) for v in values[n]):
            rows.append(
                f'<label>{label} <input type="range" min="0" max="{len(values[n]) - 1}" '
                f'step="1" value="{k}" data-name="{label}" aria-label="{label}"> '
                f'<output>{html.escape(str(values[n][k]))}</output></label>')
        else:
            opts = "".join(f'<option value="{i}"{" selected" if i == k else ""}>'
                           f"{html.escape(str(v))}</option>" for i, v in enumerate(values[n]))
            rows.append(f'<label>{label} <select data-name="{label}" aria-label="{label}">'
                        f"{opts}</select></label>")
    labels = {n: [str(v) for v in values[n]] for n in names}
    page = f"""<div class="d2l-interactive" id="{uid}">
<img alt="{html.escape(alt_text)}" style="max-width:100%"
     src="data:image/png;base64,{frames[first]}">
<div class="d2l-controls">{" ".join(rows)}</div>
<script>
(function () {{
  var root = document.getElementById("{uid}");
  var frames = {json.dumps(frames)};
  var labels = {json.dumps(labels)};
  var names = {json.dumps(names)};
  var image = root.querySelector("img");
  function redraw() {{
    var key = names.map(function (n) {{
      var control = root.querySelector('[data-name="' + n + '"]');
      var out = control.parentNode.querySelector("output");
      if (out) {{ out.textContent = labels[n][control.value]; }}
      return control.value;
    }}).join("|");
    image.src = "data:image/png;base64," + frames[key];
  }}
  root.querySelectorAll("[data-name]").forEach(function (control) {{
    control.addEventListener("input", redraw);
    control.addEventListener("change", redraw);
  }});
}})();
</script>
</div>"""
    return HTML(page)
