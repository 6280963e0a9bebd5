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


def test_class_counts_draws_a_bar_per_class(cifar):
    fig = plots.class_counts(cifar.y_train, cifar.fine_names)
    assert len(fig.axes[0].patches) == 100
    assert "min 12, max 12" in fig.axes[0].get_title()


def test_channel_histograms_label_each_channel_with_its_statistics(cifar):
    fig = plots.channel_histograms(cifar.x_train[:50])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [label.split(":")[0] for label in labels] == ["red", "green", "blue"]


def test_augmentation_rows_puts_originals_first(cifar):
    x = cifar.x_train[:4]
    fig = plots.augmentation_rows(x, [x.astype(np.float32), x])
    assert len(fig.axes) == 12 and fig.axes[0].get_ylabel() == "original"
