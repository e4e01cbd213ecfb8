"""The bench figure's point labels: moved apart where they would overlap, left alone where not."""

from __future__ import annotations

import itertools
import random

import pytest
from matplotlib.text import Text
from matplotlib.transforms import Affine2D

from tinysr.bench.plots import MARKER_SIZE, _annotate_apart, _pyplot, place_labels


def overlapping(a, b, gap=0.0) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] + gap and b[1] < a[3] + gap


def shifted(box, dy):
    return (box[0], box[1] + dy, box[2], box[3] + dy)


def test_identical_labels_spread_up_and_down_from_their_spot():
    box = (10.0, 20.0, 60.0, 30.0)
    assert place_labels([box, box, box, box], gap=1.0) == [0.0, 11.0, -11.0, 22.0]  # nearest first, up on a tie


def test_labels_with_room_stay_where_their_points_put_them():
    boxes = [(0, 0, 50, 10), (60, 0, 110, 10), (0, 40, 50, 50)]  # side by side, and well above
    assert place_labels(boxes) == [0.0, 0.0, 0.0]


def test_a_label_drops_into_a_gap_that_fits_it():
    # The middle label collides with the bottom one; the gap above it (up to the top label) fits it.
    boxes = [(0, 0, 50, 10), (0, 5, 50, 15), (0, 40, 50, 50)]
    shifts = place_labels(boxes, gap=1.0)
    assert shifts == [0.0, 6.0, 0.0]


def test_a_label_over_a_marker_moves_just_above_it():
    label, marker_under, marker_beside = (0, 0, 50, 10), (20, -3, 26, 3), (60, 0, 66, 6)
    assert place_labels([label], gap=1.0, obstacles=[marker_under, marker_beside]) == [4.0]
    assert place_labels([label], gap=1.0, obstacles=[marker_beside]) == [0.0]  # not in its way


@pytest.mark.parametrize("with_markers", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_random_clusters_end_without_overlap(seed, with_markers):
    rng = random.Random(seed)
    boxes, markers = [], []
    for _ in range(40):
        x, y, w = rng.uniform(0, 200), rng.uniform(0, 100), rng.uniform(20, 80)
        boxes.append((x, y, x + w, y + 10))
        markers.append((x - 9, y - 3, x - 3, y + 3))  # each label's own marker, left of it
    markers = markers if with_markers else []
    shifts = place_labels(boxes, gap=1.0, obstacles=markers)
    moved = [shifted(b, s) for b, s in zip(boxes, shifts)]
    for a, b in itertools.combinations(moved, 2):
        assert not overlapping(a, b, gap=1.0 - 1e-9), (a, b)
    for a, m in itertools.product(moved, markers):
        assert not overlapping(a, m, gap=1.0 - 1e-9), (a, m)
    # with nothing else in the way, the lowest label of all never has to move
    assert with_markers or shifts[min(range(len(boxes)), key=lambda i: boxes[i][1])] == 0.0


def test_figure_labels_of_clustered_points_do_not_overlap():
    """The same on a real figure: text extents in pixels, offsets in points, leader lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    # four points within 0.06 dB at one OPs: a few pixels apart here, less than a label's height
    points = [
        ("edsr_bnn", 18.55, 33.62),
        ("edsr_bireal", 18.55, 33.60),
        ("edsr_reactnet_inbranch", 18.55, 33.58),
        ("edsr_btm", 18.55, 33.56),
        ("edsr_ibtm", 18.31, 32.33),
        ("fabnet", 1.0, 34.5),
    ]
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    ax.set_xscale("log")
    _annotate_apart(ax, points)
    renderer = fig.canvas.get_renderer()
    texts = list(ax.texts)
    assert sorted(t.get_text() for t in texts) == sorted(p[0] for p in points)
    for t in texts:
        t.update_positions(renderer)
    extents = [Text.get_window_extent(t, renderer).extents for t in texts]  # the text alone, not its leader line
    for a, b in itertools.combinations(extents, 2):
        assert not overlapping(a, b), (a, b)
    with_line = {t.get_text() for t in texts if t.arrow_patch is not None}
    assert "fabnet" not in with_line and "edsr_ibtm" not in with_line  # alone: not moved
    assert len(with_line) == 3  # four labels in one spot (the lowest stays): three moved, each with a line
    plt.close(fig)


def test_figure_label_moves_off_a_marker_in_its_way():
    """A label running over the next point's marker moves off it, and no label ends over a marker;
    the label of a point with nothing in its way stays put (its own marker, left of the label, is
    not in the way)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [("a_long_label_of_a_point", 1.0, 30.0), ("b", 1.06, 30.0), ("alone", 10.0, 25.0)]
    ax.scatter([p[1] for p in points], [p[2] for p in points], s=MARKER_SIZE)
    ax.set_xscale("log")
    _annotate_apart(ax, points)
    renderer = fig.canvas.get_renderer()
    for t in ax.texts:
        t.update_positions(renderer)
    text = {t.get_text(): t for t in ax.texts}
    # the markers as matplotlib drew them: the marker path under the collection's own scaling, at each point
    dots = ax.collections[0]
    marker = dots.get_paths()[0].get_extents(Affine2D(dots.get_transforms()[0])).extents
    centres = ax.transData.transform([(x, y) for _, x, y in points])
    markers = [(cx + marker[0], cy + marker[1], cx + marker[2], cy + marker[3]) for cx, cy in centres]
    extents = [Text.get_window_extent(text[name], renderer).extents for name, _, _ in points]
    width, height = extents[0][2] - extents[0][0], extents[0][3] - extents[0][1]
    unmoved_a = (centres[0][0], centres[0][1], centres[0][0] + width, centres[0][1] + height)
    assert overlapping(unmoved_a, markers[1])  # the case is real: where its point put it, a's label covers b
    for extent, marker in itertools.product(extents, markers):
        assert not overlapping(extent, marker), (extent, marker)
    for a, b in itertools.combinations(extents, 2):
        assert not overlapping(a, b), (a, b)
    assert text["a_long_label_of_a_point"].arrow_patch is not None  # it moved
    assert text["alone"].arrow_patch is None
    plt.close(fig)
