"""Interactive figures: live widgets with a kernel, working HTML controls without one."""

from __future__ import annotations

import base64
import json
import re

import pytest

from d2l_utils.interact import MAX_FRAMES, interactive


def draw(fig, slope, kind="line"):
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, slope], linestyle="-" if kind == "line" else ":")
    ax.set_title(f"slope {slope} {kind}")


def frames_of(page: str) -> dict[str, str]:
    return json.loads(re.search(r"var frames = (\{.*?\});", page).group(1))


def test_static_mode_precomputes_one_distinct_frame_per_combination():
    page = interactive(draw, slope=[1, 2, 3], kind=["line", "dots"], mode="static",
                       alt="A line whose slope follows the slider").data
    frames = frames_of(page)
    assert set(frames) == {f"{i}|{j}" for i in range(3) for j in range(2)}
    assert len(set(frames.values())) == 6  # every frame differs
    assert all(base64.b64decode(f)[:8] == b"\x89PNG\r\n\x1a\n" for f in frames.values())
    assert 'type="range"' in page and "<select" in page
    assert 'alt="A line whose slope follows the slider"' in page
    assert "http" not in page  # nothing is fetched from a network


def test_static_mode_starts_at_the_default():
    page = interactive(draw, slope=[1, 2, 3], defaults={"slope": 3}, mode="static").data
    frames = frames_of(page)
    assert f'src="data:image/png;base64,{frames["2"]}"' in page
    assert 'value="2"' in page


def test_live_mode_builds_widgets():
    import ipywidgets

    box = interactive(draw, slope=[1, 2, 3], kind=["line", "dots"], mode="live")
    assert isinstance(box, ipywidgets.VBox)
    slider, dropdown = box.children[0].children
    assert isinstance(slider, ipywidgets.SelectionSlider) and slider.value == 1
    assert isinstance(dropdown, ipywidgets.Dropdown) and dropdown.options == ("line", "dots")


def test_mode_follows_the_build_flag(monkeypatch):
    monkeypatch.setenv("D2L_BOOK_BUILD", "1")
    assert "d2l-interactive" in interactive(draw, slope=[1, 2]).data
    monkeypatch.setenv("D2L_BOOK_BUILD", "0")
    assert not hasattr(interactive(draw, slope=[1, 2]), "data")


@pytest.mark.parametrize("kwargs, match", [
    ({}, "at least one control"),
    ({"slope": []}, "no values"),
    ({"slope": [1], "defaults": {"slope": 5}}, "not one of"),
    ({"slope": list(range(MAX_FRAMES + 1)), "mode": "static"}, "combinations"),
    ({"slope": [1], "mode": "movie"}, "mode must be"),
])
def test_bad_controls(kwargs, match):
    with pytest.raises(ValueError, match=match):
        interactive(draw, **kwargs)


@pytest.mark.parametrize("value", [0.1, 3, "line", None])
def test_a_single_value_instead_of_a_list_says_how_to_write_it(value):
    with pytest.raises(TypeError, match=r"takes a list of the values it offers, e\.g\. slope=\["):
        interactive(draw, slope=value)
