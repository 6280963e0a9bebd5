"""Every plot function returns a Figure with the panels it promises."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from cifar_helpers import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_image_grid_has_a_panel_per_image_and_titles(cifar):
    fig = plots.image_grid(
        cifar.x_train[:10], [cifar.fine_names[y] for y in cifar.y_train[:10]], ncols=4
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 12
    assert fig.axes[0].get_title() == cifar.fine_names[cifar.y_train[0]]


def test_superclass_grid_has_one_row_per_superclass(cifar):
    fig = plots.superclass_grid(
        cifar.x_train,
        cifar.y_train,
        cifar.fine_names,
        cifar.coarse_names,
        cifar.fine_to_coarse,
    )
    assert len(fig.axes) == 100
    assert fig.axes[0].get_ylabel() == cifar.coarse_names[0]
    titles = {ax.get_title() for ax in fig.axes}
    assert titles == set(cifar.fine_names)


def test_channel_histograms_label_each_channel_with_its_statistics(cifar):
    fig = plots.channel_histograms(cifar.x_train[:50])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [label.split(":")[0] for label in labels] == ["red", "green", "blue"]


def test_augmentation_rows_puts_originals_first(cifar):
    x = cifar.x_train[:4]
    fig = plots.augmentation_rows(x, [x.astype(np.float32), x])
    assert len(fig.axes) == 12 and fig.axes[0].get_ylabel() == "original"


def test_map_grid_has_a_panel_per_map_and_titles():
    maps = np.random.default_rng(0).random((5, 8, 8))
    fig = plots.map_grid(maps, [f"map {i}" for i in range(5)], ncols=3)
    assert len(fig.axes) == 6
    assert fig.axes[4].get_title() == "map 4" and not fig.axes[5].images
    assert fig.axes[0].images[0].get_clim() != fig.axes[1].images[0].get_clim()


def test_map_grid_can_put_every_map_on_one_colour_scale():
    maps = np.random.default_rng(0).random((3, 8, 8))
    fig = plots.map_grid(maps, ncols=3, vmin=0, vmax=1)
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(0, 1)}


def test_dropblock_steps_counts_seeds_and_the_dropped_share():
    seeds = np.zeros((12, 12))
    seeds[2, 3] = 1
    mask = np.zeros((16, 16))
    mask[2:7, 3:8] = 1
    fig = plots.dropblock_steps(np.ones((16, 16)), seeds, mask, 1 - mask, block_size=5)
    assert len(fig.axes) == 4
    assert "1 in the valid region" in fig.axes[1].get_title()
    assert f"{25 / 256:.0%} dropped" in fig.axes[2].get_title()
    (outline,) = fig.axes[1].patches
    assert (outline.get_width(), outline.get_height()) == (12, 12)


def test_drop_rates_has_a_panel_per_keep_prob_with_the_target_line():
    rows = [
        {
            "map": m,
            "block": 3,
            "keep_prob": kp,
            "exact": 1 - kp,
            "paper": 0.9 * (1 - kp),
            "error": 0.001,
        }
        for m in (32, 16)
        for kp in (0.9, 0.8)
    ]
    fig = plots.drop_rates(rows)
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == [
        "keep_prob = 0.9",
        "keep_prob = 0.8",
    ]
    target = fig.axes[1].lines[-1]
    assert np.allclose(target.get_ydata(), 0.2)


def test_drop_heatmap_shares_one_colour_scale():
    expected = np.full((4, 4), 0.1)
    observed = np.full((4, 4), 0.3)
    fig = plots.drop_heatmap(expected, observed)
    first, second = (ax.images[0] for ax in fig.axes[:2])
    assert first.get_clim() == second.get_clim() == (0, 0.3)


def test_keep_prob_schedule_draws_the_line_and_the_logged_points():
    fig = plots.keep_prob_schedule([0, 1, 2], [1.0, 0.9, 0.8], observed=[1.0, 0.9])
    line, points = fig.axes[0].lines
    assert list(line.get_ydata()) == [1.0, 0.9, 0.8] and len(points.get_xdata()) == 2


def test_history_comparison_draws_train_and_validation_for_each_run():
    history = {"accuracy": [0.1, 0.2], "val_accuracy": [0.1, 0.15]}
    history |= {"loss": [2.0, 1.5], "val_loss": [2.1, 1.9]}
    fig = plots.history_comparison({"none": history, "DropBlock": history})
    accuracy, loss = fig.axes
    assert len(accuracy.lines) == len(loss.lines) == 4
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [
        "none",
        "DropBlock",
    ]


def test_training_curves_show_both_splits_and_the_schedules():
    history = {"accuracy": [0.1, 0.2], "val_accuracy": [0.1, 0.15]}
    history |= {"loss": [2.0, 1.5], "val_loss": [2.1, 1.9]}
    history |= {"learning_rate": [5e-4, 4.9e-4], "keep_prob": [1.0, 0.995]}
    fig = plots.training_curves(history, title="run")
    accuracy, loss, rate, keep = fig.axes
    assert len(accuracy.lines) == len(loss.lines) == 2
    assert list(keep.lines[0].get_ydata()) == [1.0, 0.995] and rate.lines


def test_training_curves_draw_a_panel_only_for_the_metrics_the_run_has():
    history = {"accuracy": [0.1], "loss": [2.0]}
    fig = plots.training_curves(history)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 1
    with_rate = plots.training_curves({**history, "learning_rate": [0.1]})
    assert [ax.get_title() for ax in with_rate.axes] == [
        "accuracy",
        "loss",
        "learning_rate",
    ]


def test_learning_rate_schedules_compare_shapes_scaled_to_their_peaks():
    fig = plots.learning_rate_schedules(
        {"one cycle": ([0, 1, 2], [0.2, 0.4, 0.1]), "decay": ([0, 1, 2], [5e-4] * 3)}
    )
    cycle, decay = fig.axes[0].lines
    assert list(cycle.get_ydata()) == [0.5, 1.0, 0.25]
    assert list(decay.get_ydata()) == [1.0, 1.0, 1.0]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["one cycle (peak 0.4)", "decay (peak 0.0005)"]


def test_per_layer_norms_draws_one_log_scaled_line_per_stack():
    fig = plots.per_layer_norms(
        {"plain": [100.0, 10.0, 1.0], "residual": [2.0, 1.5, 1]}
    )
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["plain", "residual"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])


def test_confusion_heatmap_shows_row_shares():
    fig = plots.confusion_heatmap(np.array([[3, 1], [0, 2]]), ["a", "b"])
    shares = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shares, [[0.75, 0.25], [0.0, 1.0]])


def test_confusion_heatmap_can_leave_out_the_right_answers():
    fig = plots.confusion_heatmap(
        np.array([[6, 3, 1], [0, 10, 0], [2, 2, 6]]), list("abc"), hide_diagonal=True
    )
    shares = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    assert np.isnan(np.diag(shares)).all()
    assert np.isclose(np.nanmax(shares), 0.3)
    assert fig.axes[0].images[0].get_clim() == (0, 0.3)  # scaled to the mistakes


def test_files_and_inputs_shows_each_file_above_its_model_input():
    originals = [np.zeros((200, 100, 3), np.uint8), np.zeros((40, 40, 4), np.uint8)]
    inputs = np.zeros((2, 32, 32, 3), np.uint8)
    fig = plots.files_and_inputs(originals, inputs, ["a", "b"], ["x", "y"])
    top, bottom = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in top] == ["a", "b"]
    assert [ax.get_title() for ax in bottom] == ["x", "y"]
    assert top[0].images[0].get_array().shape[:2] == (200, 100)
    assert bottom[1].images[0].get_array().shape[:2] == (32, 32)


def test_per_class_bars_pick_the_worst_and_the_best():
    accuracy = np.array([0.9, 0.1, np.nan, 0.5])
    fig = plots.per_class_bars(accuracy, ["a", "b", "c", "d"], count=2)
    worst, best = fig.axes[:2]
    assert [t.get_text() for t in worst.get_yticklabels()] == ["d", "b"]
    assert [t.get_text() for t in best.get_yticklabels()] == ["d", "a"]
    assert [t.get_text() for t in worst.texts] == ["50%", "10%"]  # bar labels
    assert fig._suptitle.get_text() == "0 of 3 classes at 0 %"


def test_reliability_diagram_draws_the_filled_bins_and_names_the_ece():
    from cifar_helpers import evaluation

    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    result = evaluation.reliability(probabilities, np.array([0, 1, 1]), bins=5)
    fig = plots.reliability_diagram(result)
    assert len(fig.axes[0].patches) == int((result["counts"] > 0).sum())
    assert f"{result['ece']:.3f}" in fig.axes[0].get_title()
    heights = [bar.get_height() for bar in fig.axes[1].patches]  # images per bin
    assert heights == list(result["counts"])


def test_mistakes_gallery_shows_the_most_confident_mistakes_first():
    images = np.zeros((3, 32, 32, 3), np.uint8)
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])
    fig = plots.mistakes_gallery(images, np.array([0, 0, 0]), probabilities, ["x", "y"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["x\nas y 80%", "x\nas y 60%"]


def test_saliency_maps_overlay_each_map_on_its_image():
    images = np.zeros((3, 32, 32, 3), np.uint8)
    maps = np.linspace(0, 1, 3 * 32 * 32).reshape(3, 32, 32)
    fig = plots.saliency_maps(images, maps, ["a", "b", "c"])
    overlays = fig.axes[3:]  # the second row
    assert [len(ax.images) for ax in overlays] == [2, 2, 2]
    np.testing.assert_allclose(overlays[1].images[1].get_array(), maps[1])
    assert fig.axes[2].get_title() == "c"


def test_residual_units_draw_each_unit_with_its_skip():
    fig = plots.residual_units()
    assert [ax.get_title() for ax in fig.axes] == list(plots.RESIDUAL_UNITS)
    for ax, (steps, start, add) in zip(
        fig.axes, plots.RESIDUAL_UNITS.values(), strict=True
    ):
        assert [t.get_text() for t in ax.texts if t.get_text()] == steps
        (skip,) = ax.lines  # the red skip line, from its start to the addition
        ys = skip.get_ydata()
        assert ys[0] > ys[-1] and steps[add] == "+"
        assert start < add
