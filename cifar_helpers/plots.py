"""Every figure the notebooks show. Each function returns a matplotlib Figure.

A notebook cell calls one function and ends with ``plt.show()``; tests call the same
functions and close the figures. Introduced in notebook 01.
"""

import matplotlib.pyplot as plt
import numpy as np

_CHANNELS = (("red", "tab:red"), ("green", "tab:green"), ("blue", "tab:blue"))


def image_grid(images, titles=None, *, ncols: int = 8, cell: float = 1.3):
    """A grid of uint8 ``N x H x W x 3`` images, each with an optional title."""
    images = np.asarray(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * cell, nrows * (cell + 0.25)), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
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


def class_counts(labels, names, *, title: str = "Images per class"):
    """Bar chart of how many images each class has, with the mean as a line."""
    counts = np.bincount(np.asarray(labels), minlength=len(names))
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.bar(np.arange(len(names)), counts, width=0.8)
    ax.axhline(counts.mean(), color="black", lw=0.8, ls="--", label="mean")
    ax.set_xlim(-1, len(names))
    ax.set_xlabel("class index")
    ax.set_ylabel("images")
    ax.set_title(f"{title} (min {counts.min()}, max {counts.max()})")
    ax.legend()
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
