"""Every figure the notebooks show. Each function returns a matplotlib Figure.

A notebook cell calls one function and ends with ``plt.show()``; tests call the same
functions and close the figures. Introduced in notebook 01.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

_CHANNELS = (("red", "tab:red"), ("green", "tab:green"), ("blue", "tab:blue"))


def image_grid(
    images, titles=None, *, ncols: int = 8, cell=1.3, cmap=None, vmin=None, vmax=None
):
    """A grid of uint8 ``N x H x W x 3`` images, each with an optional title.

    2-D maps work too, drawn with ``cmap``: each on its own colour scale, or all on
    ``vmin .. vmax`` when given.
    """
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * cell, nrows * (cell + 0.25)), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(np.asarray(images[i]), cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def superclass_grid(images, fine_labels, fine_names, coarse_names, fine_to_coarse):
    """One example of every fine class, one row per superclass (20 x 5 for CIFAR-100).

    ``images``/``fine_labels`` are any sample that holds every class at least once.
    """
    fine_labels = np.asarray(fine_labels)
    fig, axes = plt.subplots(
        len(coarse_names), 5, figsize=(7.5, 1.25 * len(coarse_names))
    )
    for row, coarse in enumerate(coarse_names):
        members = np.flatnonzero(np.asarray(fine_to_coarse) == row)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(members):
                first = np.flatnonzero(fine_labels == members[col])[0]
                ax.imshow(images[first])
                ax.set_title(fine_names[members[col]], fontsize=7)
        axes[row, 0].set_ylabel(coarse, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def channel_histograms(images, *, bins: int = 64):
    """Histogram of the pixel values of each colour channel of uint8 RGB images."""
    pixels = np.asarray(images).reshape(-1, 3)
    fig, ax = plt.subplots(figsize=(7, 3))
    for channel, (name, colour) in enumerate(_CHANNELS):
        values = pixels[:, channel]
        ax.hist(
            values,
            bins=bins,
            range=(0, 255),
            histtype="step",
            color=colour,
            label=f"{name}: mean {values.mean():.1f}, std {values.std():.1f}",
        )
    ax.set_xlabel("pixel value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def augmentation_rows(originals, augmented, *, labels=None):
    """Originals in the first row, then one row per augmented version of them.

    ``augmented`` is a list of arrays shaped like ``originals`` (uint8 or floats in
    0..255); ``labels`` names each row.
    """
    rows = [np.asarray(originals)] + [np.asarray(a) for a in augmented]
    labels = labels or ["original"] + [
        f"augmented {i + 1}" for i in range(len(augmented))
    ]
    count = len(rows[0])
    fig, axes = plt.subplots(
        len(rows), count, figsize=(1.3 * count, 1.4 * len(rows)), squeeze=False
    )
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(count):
            axes[r, c].imshow(np.clip(row[c], 0, 255).astype(np.uint8))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


RESIDUAL_UNITS = {
    "He et al. 2015 (post-activation)": (
        ["x", "conv 3x3", "BN", "ReLU", "conv 3x3", "BN", "+", "ReLU"],
        0,
        6,
    ),
    "He et al. 2016 (pre-activation)": (
        ["x", "BN", "ReLU", "conv 3x3", "BN", "ReLU", "conv 3x3", "+"],
        0,
        7,
    ),
    "the original (part 7)": (
        [
            "x",
            "conv block: (BN, ReLU, conv) x 2",
            "ReLU: h1",
            "conv block: (BN, ReLU, conv) x 2",
            "+",
            "ReLU",
            "DropBlock",
            "max-pool 3x3, stride 2",
        ],
        2,
        4,
    ),
}


def residual_units(units=RESIDUAL_UNITS):
    """Residual units side by side, top to bottom: each step a box, the main path in
    black, the skip connection in red from the step it starts after to the addition.
    ``units`` maps a title to ``(steps, skip_from, add_at)`` (indices into steps)."""
    fig, axes = plt.subplots(1, len(units), figsize=(3.8 * len(units), 6))
    for ax, (title, (steps, start, add)) in zip(axes, units.items(), strict=True):
        ys = np.linspace(0.93, 0.07, len(steps))
        for y, label in zip(ys, steps, strict=True):
            colour = "#f6d5d5" if label == "+" else "#dde3f3"
            ax.text(
                0.42,
                y,
                label,
                ha="center",
                va="center",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": colour},
            )
        for upper, lower in zip(ys, ys[1:], strict=False):
            ax.annotate(
                "",
                xy=(0.42, lower + 0.03),
                xytext=(0.42, upper - 0.03),
                arrowprops={"arrowstyle": "->"},
            )
        ax.plot([0.5, 0.92, 0.92], [ys[start], ys[start], ys[add]], color="tab:red")
        ax.annotate(
            "",
            xy=(0.5, ys[add]),
            xytext=(0.92, ys[add]),
            arrowprops={"arrowstyle": "->", "color": "tab:red"},
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
    fig.tight_layout()
    return fig


def map_grid(maps, titles=None, *, ncols=6, cmap="viridis", vmin=None, vmax=None):
    """A grid of 2-D float maps (``N x H x W``), each on its own colour scale unless
    ``vmin`` and ``vmax`` set one for all."""
    return image_grid(
        maps, titles, ncols=ncols, cell=1.8, cmap=cmap, vmin=vmin, vmax=vmax
    )


def dropblock_steps(feature, seeds, mask, output, *, block_size: int):
    """DropBlock on one ``H x W`` map, step by step, in four panels.

    ``seeds`` is the ``(H-b+1) x (W-b+1)`` seed map (1 at a block's top-left corner),
    ``mask`` the ``H x W`` map of dropped units (1 = dropped), ``output`` the
    rescaled result. The seed panel outlines the valid region.
    """
    feature, seeds, mask, output = (
        np.asarray(a) for a in (feature, seeds, mask, output)
    )
    height, width = feature.shape
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.2))
    axes[0].imshow(feature, cmap="viridis")
    axes[0].set_title("1. input map")
    placed = np.zeros((height, width))
    placed[: seeds.shape[0], : seeds.shape[1]] = seeds
    axes[1].imshow(placed, cmap="Greys", vmin=0, vmax=1)
    axes[1].add_patch(
        plt.Rectangle(
            (-0.5, -0.5), seeds.shape[1], seeds.shape[0], fill=False, ec="tab:orange"
        )
    )
    axes[1].set_title(f"2. seeds: {int(seeds.sum())} in the valid region", fontsize=9)
    axes[2].imshow(mask, cmap="Greys", vmin=0, vmax=1)
    axes[2].set_title(f"3. {block_size}x{block_size} blocks: {mask.mean():.0%} dropped")
    axes[3].imshow(output, cmap="viridis")
    axes[3].set_title("4. masked and rescaled")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def drop_rates(rows):
    """Realised drop rate of both gammas against the target, one panel a keep_prob.

    ``rows``: dicts with ``map``, ``block``, ``keep_prob``, ``exact`` and ``paper``
    (realised drop fractions) and ``error`` (their standard error, for the bars).
    """
    keep_probs = sorted({row["keep_prob"] for row in rows}, reverse=True)
    fig, axes = plt.subplots(
        1, len(keep_probs), figsize=(6 * len(keep_probs), 3.6), squeeze=False
    )
    for ax, keep_prob in zip(axes[0], keep_probs, strict=True):
        subset = [row for row in rows if row["keep_prob"] == keep_prob]
        x = np.arange(len(subset))
        for offset, key, colour in (
            (-0.12, "exact", "tab:blue"),
            (0.12, "paper", "tab:red"),
        ):
            ax.errorbar(
                x + offset,
                [row[key] for row in subset],
                yerr=[2 * row["error"] for row in subset],
                fmt="o",
                color=colour,
                label=f'gamma="{key}"',
            )
        ax.axhline(1 - keep_prob, color="black", ls="--", lw=1, label="target")
        ax.set_xticks(x, [f"{row['map']}px\nb={row['block']}" for row in subset])
        ax.set_ylabel("realised drop rate")
        ax.set_title(f"keep_prob = {keep_prob} (bars: 2 standard errors)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def drop_heatmap(expected, observed):
    """Two ``H x W`` maps side by side on one colour scale: predicted and measured
    per-position drop probability."""
    vmax = max(np.max(expected), np.max(observed))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, values, title in (
        (axes[0], expected, "predicted"),
        (axes[1], observed, "measured"),
    ):
        image = ax.imshow(values, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{title} (mean {np.mean(values):.3f})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.8, label="drop probability")
    return fig


def keep_prob_schedule(epochs, values, *, observed=None):
    """keep_prob per epoch: the schedule's line, and the values a run logged.

    ``observed`` (optional) holds the logged values of the first epochs, in order.
    """
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(epochs, values, "o-", label="schedule (fixed within an epoch)")
    if observed is not None:
        ax.plot(list(epochs)[: len(observed)], observed, "o", label="logged by fit")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("keep_prob")
    ax.legend()
    fig.tight_layout()
    return fig


def history_comparison(histories, *, title: str = ""):
    """Accuracy and loss curves of several runs: validation solid, training dashed.

    ``histories`` maps a run's name to its ``History.history`` dict (``accuracy``,
    ``val_accuracy``, ``loss``, ``val_loss``).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for index, (name, history) in enumerate(histories.items()):
        colour = f"C{index}"
        epochs = np.arange(1, len(history["loss"]) + 1)
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            ax.plot(epochs, history[f"val_{metric}"], color=colour, label=name)
            ax.plot(epochs, history[metric], color=colour, ls="--", alpha=0.6)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: validation solid, training dashed")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(history, *, title: str = ""):
    """Accuracy, loss, learning rate and (for a model with DropBlock) keep_prob per
    epoch of one run: a panel for each metric the history holds.

    ``history`` maps a metric to its per-epoch values (``History.history``, or the
    run's ``history.json``).
    """
    schedules = [m for m in ("learning_rate", "keep_prob") if m in history]
    fig, axes = plt.subplots(
        1, 2 + len(schedules), figsize=(4 * (2 + len(schedules)), 3.6)
    )
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes[:2], ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history[metric], label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    for ax, metric in zip(axes[2:], schedules, strict=True):
        ax.plot(epochs, history[metric], "o-", markersize=3)
        ax.set_title(metric)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_rate_schedules(schedules, *, xlabel: str = "epoch"):
    """The shapes of learning-rate schedules: ``{name: (positions, rates)}``, each
    divided by its own largest rate (optimisers differ in scale: Adam's 5e-4 and
    SGD's 0.4 are not comparable)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, (positions, rates) in schedules.items():
        rates = np.asarray(rates, dtype=float)
        ax.plot(positions, rates / rates.max(), label=f"{name} (peak {rates.max():g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("learning rate / its peak")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    return fig


def per_layer_norms(norms, *, ylabel: str = "gradient norm"):
    """One line per entry of ``norms`` (``{label: values, one per layer}``) against
    the layer's depth, on a log scale, so that a factor of 100 between the first and
    the last layer shows as plainly as one of 2."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for label, values in norms.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = nearest the input)")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_heatmap(matrix, names, *, title: str = "", hide_diagonal: bool = False):
    """A confusion matrix (rows: true class, columns: predicted) as a heat map of
    each row's shares, so that classes of any size compare; ``names`` label both
    axes (20 superclasses read well; 100 classes are drawn without labels).

    ``hide_diagonal`` blanks the right answers and scales the colours to the largest
    off-diagonal share, so that the mistakes, a few percent each, stand out instead
    of a bright diagonal taking the whole colour range."""
    matrix = np.asarray(matrix, dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    label = "share of the true class's images"
    top = 1.0
    if hide_diagonal:
        shares[np.diag_indices_from(shares)] = np.nan
        mistakes = shares[~np.isnan(shares)]
        top = mistakes.max() if mistakes.size and mistakes.max() > 0 else 1.0
        label += " (right answers left out)"
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=top)
    if len(names) <= 30:
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    return fig


def per_class_bars(accuracy, names, *, count: int = 10):
    """The ``count`` worst and best classes by accuracy, side by side, each bar
    labelled with its value; the title says how many classes score 0."""
    accuracy = np.asarray(accuracy, dtype=float)
    order = np.argsort(accuracy, kind="stable")
    order = order[~np.isnan(accuracy[order])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.3 * count + 1.2), sharex=True)
    for ax, picked, label in (
        (axes[0], order[:count], "worst"),
        (axes[1], order[::-1][:count], "best"),
    ):
        bars = ax.barh([names[i] for i in picked][::-1], accuracy[picked][::-1])
        ax.bar_label(
            bars, labels=[f"{v:.0%}" for v in accuracy[picked][::-1]], fontsize=7
        )
        ax.set_title(f"{label} {len(picked)} classes")
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("accuracy")
    zeros = int(np.sum(accuracy[order] == 0))
    fig.suptitle(f"{zeros} of {len(order)} classes at 0 %", fontsize=9)
    fig.tight_layout()
    return fig


def reliability_diagram(result):
    """Accuracy against confidence per bin (from ``evaluation.reliability``), with
    the diagonal of perfect calibration and the expected calibration error, and
    below it how many images fall in each bin (Guo et al.'s second panel: a bin of
    few images says little)."""
    edges = result["edges"]
    centres = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    filled = result["counts"] > 0
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(4.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(
        centres[filled],
        result["accuracy"][filled],
        width=widths[filled],
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(
        centres[filled],
        result["confidence"][filled],
        "o",
        color="tab:orange",  # the bars are blue
        label="mean confidence",
    )
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"expected calibration error {result['ece']:.3f}")
    ax.legend(loc="upper left")
    counts.bar(centres, result["counts"], width=widths, edgecolor="black", color="gray")
    counts.set_ylabel("images")
    counts.set_xlabel("confidence (top-1 probability)")
    fig.tight_layout()
    return fig


def mistakes_gallery(images, labels, probabilities, names, *, count: int = 16):
    """The ``count`` most confident mistakes: each image with its true name, the
    predicted name and the predicted probability."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    picked = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    titles = [
        f"{names[labels[i]]}\nas {names[predicted[i]]} {confidence[i]:.0%}"
        for i in picked
    ]
    return image_grid(np.asarray(images)[picked], titles, ncols=8, cell=1.4)


def files_and_inputs(originals, inputs, top_titles, bottom_titles):
    """Each file as it is (top row: ``originals``, PIL images or arrays of any size)
    above what the model receives (bottom row: ``inputs``, ``N x 32 x 32 x 3``)."""
    count = len(originals)
    fig, axes = plt.subplots(2, count, figsize=(2.2 * count, 4.8), squeeze=False)
    for column in range(count):
        axes[0, column].imshow(originals[column])
        axes[0, column].set_title(top_titles[column], fontsize=8)
        axes[1, column].imshow(inputs[column])
        axes[1, column].set_title(bottom_titles[column], fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def saliency_maps(images, maps, titles=None, *, alpha: float = 0.5):
    """Each uint8 image (``N x H x W x 3``) above itself overlaid with its saliency
    map (``N x H x W`` in [0, 1], such as ``evaluation.grad_cam``'s), drawn with the
    "jet" colour map: red where the evidence for the class is strongest."""
    images, maps = np.asarray(images), np.asarray(maps)
    fig, axes = plt.subplots(
        2, len(images), figsize=(1.6 * len(images), 3.6), squeeze=False
    )
    for i, (image, heat) in enumerate(zip(images, maps, strict=True)):
        axes[0, i].imshow(image)
        axes[1, i].imshow(image)
        axes[1, i].imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=alpha)
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
