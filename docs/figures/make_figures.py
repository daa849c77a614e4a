"""The idea drawn: the two explanatory figures of the README and lessons 05 and 12.

    python docs/figures/make_figures.py            # writes docs/figures/stochastic_depth.png, dense_block.png
    python docs/figures/make_figures.py --out DIR  # somewhere else

1. ``stochastic_depth.png``: a ResNet-32's 15 residual blocks over six mini-batches, each
   block open or closed as ``net.sample_gates(rng)`` really drew it (linear rule, p_L = 0.5);
   below, one block three ways: gate open in training, gate closed in training (the branch is
   not called, forward or backward) and at test time (the branch runs, scaled by p_l).
2. ``dense_block.png``: the first dense block of a DenseNet-BC (depth 28, k = 12): which maps
   each layer reads (every earlier one), and the concatenation each layer's input is; the
   channel counts are read from ``minisd.DenseNet``.

Everything drawn about a network is read from minisd's own objects, so the figures follow the code.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

import minisd  # noqa: E402

HERE = Path(__file__).resolve().parent
FORWARD, BACKWARD = "#1f5fa8", "#d9480f"   # blue: the forward pass; orange: gradients
OPEN_FILL, OPEN_EDGE = "#a9cbe8", "#1f5fa8"
CLOSED_EDGE = "#9a9a9a"


# ---------------------------------------------------------------------------
# small drawing helpers
# ---------------------------------------------------------------------------

def box(ax, x, y, w, h, text="", fill="white", edge="black", dashed=False, fontsize=10, color="black", lw=1.4):
    """A rounded box with its lower-left corner at (x, y) and ``text`` in its middle."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=fill, edgecolor=edge, lw=lw, ls=(0, (4, 3)) if dashed else "-"))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=color)


def path(ax, points, color, dashed=False, lw=2.0, head=True):
    """A polyline through ``points`` with an arrowhead at its end."""
    xs, ys = zip(*points)
    ls = (0, (5, 3)) if dashed else "-"
    ax.plot(xs[:-1] + (xs[-1],), ys, color=color, lw=lw, ls=ls, solid_capstyle="butt")
    if head:
        ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=16,
                                     color=color, lw=0, shrinkA=0, shrinkB=0))


def node(ax, x, y, text, r=0.32, fill="white", edge="black", fontsize=13):
    ax.add_patch(Circle((x, y), r, facecolor=fill, edgecolor=edge, lw=1.4, zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=4)


# ---------------------------------------------------------------------------
# figure 1: stochastic depth
# ---------------------------------------------------------------------------

def draw_gates_over_batches(ax, depth=32, p_last=0.5, batches=6, seed=0):
    """Rows: mini-batches; boxes: the residual blocks, filled when the gate was open."""
    net = minisd.ResNet(depth=depth, p_last=p_last, seed=0)
    rng = np.random.default_rng(seed)
    draws = [net.sample_gates(rng) for _ in range(batches)]  # what train_step draws, batch after batch
    probs = net.survival_probs
    n = len(probs)
    per_stage = n // 3
    gap = 0.55  # extra space between the three stages
    xs = [1.6 + i + gap * (i // per_stage) for i in range(n)]
    right = xs[-1] + 1.0

    ax.set_xlim(-0.6, right + 2.6)
    ax.set_ylim(-0.9, batches + 1.55)
    ax.axis("off")
    for stage, width in enumerate((16, 32, 64)):
        lo, hi = xs[stage * per_stage] - 0.4, xs[(stage + 1) * per_stage - 1] + 0.4
        ax.text((lo + hi) / 2, batches + 1.25, f"stage {stage + 1}: {width} channels, {32 >> stage}x{32 >> stage}",
                ha="center", va="center", fontsize=10, color="#444")
        ax.plot([lo, hi], [batches + 1.05] * 2, color="#888", lw=1)
    for i, p in enumerate(probs):
        ax.text(xs[i], batches + 0.6, f"{p:.2f}", ha="center", va="center", fontsize=8.5, color="#333")
    ax.text(0.75, batches + 0.6, "$p_l$", ha="center", va="center", fontsize=11)

    for row, gates in enumerate(draws):
        y = batches - 1 - row  # mini-batch 1 at the top
        ax.plot([0.9, right], [y + 0.3, y + 0.3], color="#555", lw=1.2, zorder=1)  # the shortcut path
        ax.text(0.75, y + 0.3, f"batch {row + 1}", ha="right", va="center", fontsize=10)
        for x, gate in zip(xs, gates):
            if gate:
                box(ax, x - 0.36, y, 0.72, 0.6, fill=OPEN_FILL, edge=OPEN_EDGE)
            else:
                box(ax, x - 0.36, y, 0.72, 0.6, fill="none", edge=CLOSED_EDGE, dashed=True)  # shortcut shows through
        ax.text(right + 0.25, y + 0.3, f"{sum(gates)} of {n} ran", ha="left", va="center", fontsize=10)
    expected = net.expected_blocks()
    ax.text(right + 0.25, -0.54, f"expected: {expected:.2f}\n(the sum of $p_l$)", ha="left", va="center",
            fontsize=9.5, color="#444")
    box(ax, 1.2, -0.75, 0.6, 0.42, fill=OPEN_FILL, edge=OPEN_EDGE)
    ax.text(1.95, -0.54, "gate open: the block's branch runs (forward and backward)", va="center", fontsize=9.5)
    box(ax, 8.8, -0.75, 0.6, 0.42, fill="none", edge=CLOSED_EDGE, dashed=True)
    ax.plot([8.7, 9.45], [-0.54, -0.54], color="#555", lw=1.2, zorder=1)
    ax.text(9.55, -0.54, "gate closed: only the shortcut (identity) carries the signal", va="center", fontsize=9.5)
    ax.set_title(f"Training: every mini-batch draws each block's gate, open with probability $p_l$\n"
                 f"ResNet-{depth}, linear rule $p_l = 1 - (l/L)(1 - p_L)$, $p_L$ = {p_last}; "
                 f"real draws of net.sample_gates(rng), seed {seed}", fontsize=11.5, loc="left")


def draw_block(ax, kind):
    """One residual block, flowing left to right: ``kind`` is "open", "closed" or "test"."""
    ax.set_xlim(-0.2, 10.2)
    ax.set_ylim(-0.6, 6.0)
    ax.set_aspect("equal")  # round circles
    ax.axis("off")
    y0, y1 = 1.7, 4.1        # shortcut row, branch row
    xs, xj = 1.5, 7.6        # split point, join (the sum)
    live = kind != "closed"
    branch_color = FORWARD if live else CLOSED_EDGE
    node(ax, 0.5, y0, "$x_{l-1}$", r=0.5, fontsize=10.5)
    node(ax, 9.6, y0, "$x_l$", r=0.5, fontsize=11)
    box(ax, 2.5, y1 - 0.55, 3.9, 1.1, "branch $f_l$\nconv-BN-ReLU-conv-BN",
        fill=OPEN_FILL if live else "#f2f2f2", edge=OPEN_EDGE if live else CLOSED_EDGE,
        dashed=not live, fontsize=9.5, color="black" if live else "#888")
    node(ax, xj, y0, "+", r=0.3, fontsize=14)
    box(ax, 8.15, y0 - 0.3, 0.85, 0.6, "ReLU", fontsize=7.5)

    # forward: along the shortcut, and through the branch when it runs
    path(ax, [(1.0, y0), (xj - 0.3, y0)], FORWARD)
    path(ax, [(xj + 0.3, y0), (8.15, y0)], FORWARD, head=False)
    path(ax, [(9.0, y0), (9.1, y0)], FORWARD)
    ax.text(4.4, y0 - 0.02, "shortcut (identity)", ha="center", va="top", fontsize=9, color="#333")
    if kind == "open":
        ax.text(4.45, y1 + 0.95, "called: forward and backward,\nits weights get gradients",
                ha="center", va="center", fontsize=9.5, color=FORWARD)
    if live:
        path(ax, [(xs, y0), (xs, y1), (2.5, y1)], FORWARD)
        if kind == "test":  # the branch's output times p_l before the sum
            node(ax, xj, y1, r"$\times p_l$", r=0.42, fontsize=10, fill="#fff3bf")
            path(ax, [(6.4, y1), (xj - 0.42, y1)], FORWARD)
            path(ax, [(xj, y1 - 0.42), (xj, y0 + 0.3)], FORWARD)
        else:
            path(ax, [(6.4, y1), (xj, y1), (xj, y0 + 0.3)], FORWARD)
    else:
        ax.plot([xs, xs, 2.5], [y0, y1, y1], color=CLOSED_EDGE, lw=1.2, ls=":")
        ax.plot([6.4, xj, xj], [y1, y1, y0 + 0.3], color=CLOSED_EDGE, lw=1.2, ls=":")
        ax.text(4.45, y1 + 0.95, "not called: no forward, no backward,\nno gradient for its weights",
                ha="center", va="center", fontsize=9.5, color="#666")

    # backward (training only): the gradient runs the same paths right to left
    if kind != "test":
        d = -0.42
        path(ax, [(9.1, y0 + d), (1.0, y0 + d)], BACKWARD, dashed=True)
        ax.text(1.0, y0 + d - 0.3, "gradient", ha="left", va="center", fontsize=8.5, color=BACKWARD)
        if live:
            path(ax, [(xj + 0.35, y0 + 0.3), (xj + 0.35, y1 + 0.35), (6.4, y1 + 0.35)], BACKWARD, dashed=True)
            path(ax, [(2.5, y1 + 0.35), (xs - 0.35, y1 + 0.35), (xs - 0.35, y0 + d + 0.05)], BACKWARD, dashed=True)

    titles = {"open": "Training, gate open (probability $p_l$)",
              "closed": "Training, gate closed (probability $1 - p_l$)",
              "test": "Test time: every block runs"}
    formulas = {"open": r"$x_l = \mathrm{ReLU}(x_{l-1} + f_l(x_{l-1}))$",
                "closed": r"$x_l = \mathrm{ReLU}(x_{l-1})$",
                "test": r"$x_l = \mathrm{ReLU}(x_{l-1} + p_l\, f_l(x_{l-1}))$"}
    ax.set_title(titles[kind], fontsize=11.5)
    ax.text(5.0, 0.1, formulas[kind], ha="center", va="center", fontsize=12)
    if kind == "test":
        ax.text(4.45, y1 + 0.95, "the branch's output times $p_l$: its expected\nshare in training; no gates, no backward",
                ha="center", va="center", fontsize=9.5, color="#444")


def stochastic_depth_figure(path_png):
    fig = plt.figure(figsize=(15, 9.8))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.25, 1], hspace=0.1, wspace=0.06,
                            left=0.02, right=0.98, top=0.89, bottom=0.06)
    draw_gates_over_batches(fig.add_subplot(grid[0, :]))
    for col, kind in enumerate(("open", "closed", "test")):
        draw_block(fig.add_subplot(grid[1, col]), kind)
    fig.legend(handles=[plt.Line2D([], [], color=FORWARD, lw=2, label="forward"),
                        plt.Line2D([], [], color=BACKWARD, lw=2, ls=(0, (5, 3)), label="backward (gradients)")],
               loc="lower center", bbox_to_anchor=(0.5, 0.045), fontsize=11, frameon=False, ncol=2)
    fig.suptitle("Stochastic depth (Huang et al. 2016): a deep ResNet trained as a shorter random one, "
                 "tested whole", fontsize=14, fontweight="bold", x=0.02, y=0.985, ha="left")
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# figure 2: a dense block's concatenations
# ---------------------------------------------------------------------------

MAP_COLORS = ["#bdbdbd", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]


def dense_block_figure(path_png, depth=28, growth_rate=12):
    net = minisd.DenseNet(depth=depth, growth_rate=growth_rate, bottleneck=True, rng=np.random.default_rng(0))
    block, trans = net.block1, net.trans1
    layers = block.layers
    k = growth_rate
    c0 = layers[0].in_channels
    width = layers[0].conv1.params["weight"].shape[0]  # the bottleneck's 4k maps
    n = len(layers)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9.4), height_ratios=[1, 1.1],
                                      gridspec_kw=dict(hspace=0.02, left=0.02, right=0.98, top=0.99, bottom=0.01))
    xs = [1.6 + 2.4 * i for i in range(n + 1)]  # the input, then one column per layer
    x_out = xs[-1] + 2.4                          # the transition after the block
    for ax in (top, bottom):
        ax.set_xlim(0, x_out + 1.6)
        ax.axis("off")

    # -- top: who reads what. Each set of maps (the input's, each layer's k new ones) goes to
    # every later layer and on to the transition; the arrows spread over the boxes' tops.
    top.set_ylim(-1.0, 5.2)
    y, node_w = 0.8, 1.5
    box(top, xs[0] - node_w / 2, y - 0.45, node_w, 0.9, f"input $x_0$\n{c0} maps", fill=MAP_COLORS[0], fontsize=10)
    for i, layer in enumerate(layers, start=1):
        box(top, xs[i] - node_w / 2, y - 0.45, node_w, 0.9, f"layer {i}\n+{layer.growth_rate} maps",
            fill=MAP_COLORS[i % len(MAP_COLORS)], fontsize=10, color="white")
    box(top, x_out - 0.9, y - 0.45, 1.8, 0.9, f"transition\n{block.out_channels} -> {trans.out_channels} maps",
        fontsize=9.5)
    targets = xs[1:] + [x_out]
    for src in range(n + 1):
        color = MAP_COLORS[src % len(MAP_COLORS)] if src else "#7f7f7f"
        outgoing = targets[src:]
        for j, dst_x in enumerate(outgoing):
            t = targets.index(dst_x)  # this target has t + 1 sources: spread their arrivals
            start = xs[src] - 0.5 + 1.0 * (j + 0.5) / len(outgoing)
            end = dst_x - 0.5 + 1.0 * (src + 0.5) / (t + 1)
            top.add_patch(FancyArrowPatch((start, y + 0.47), (end, y + 0.47), connectionstyle="arc3,rad=-0.32",
                                          arrowstyle="-|>", mutation_scale=11, color=color, lw=1.5))
    top.text(0.1, 4.85, "A dense block: every layer reads the maps of every layer before it",
             fontsize=13, fontweight="bold")
    top.text(0.1, 4.4, f"DenseNet-BC of depth {depth}, growth rate k = {k}: its first block, {n} layers. Each layer: "
             f"BN-ReLU-conv1x1 ({width} maps)-BN-ReLU-conv3x3 ({k} maps),", fontsize=10.5, color="#333")
    top.text(0.1, 3.98, "its output appended to its input:   "
             r"$x_i = \mathrm{cat}(x_{i-1},\ f_i(x_{i-1}))$", fontsize=10.5, color="#333")
    top.text(0.1, -0.55, "stochastic depth makes such long paths by chance (a dropped block passes its input on); "
             "a DenseNet wires them all in", fontsize=10, color="#444", style="italic")

    # -- bottom: under each layer, the concatenation it reads (bar height = maps, colour = which layer made them)
    scale = 4.6 / block.out_channels
    bottom.set_ylim(-1.35, 6.3)
    base, bar_w = 0.3, 1.0
    stacks = [(xs[i], i - 1, f"layer {i} reads") for i in range(1, n + 1)] + [(x_out, n, "block output")]
    for col, (x, made, label) in enumerate(stacks):  # ``made``: how many layers' maps are in it
        h = base
        for j, c in [(0, c0)] + [(j, k) for j in range(1, made + 1)]:
            bottom.add_patch(Rectangle((x - bar_w / 2, h), bar_w, c * scale,
                                       facecolor=MAP_COLORS[j % len(MAP_COLORS)], edgecolor="white", lw=1))
            h += c * scale
        channels = c0 + made * k
        assert channels == (layers[col].in_channels if col < n else block.out_channels)  # as the model says
        bottom.text(x, h + 0.12, f"{label}\n{channels} maps", ha="center", va="bottom", fontsize=9.5)
        if col < n:  # this layer's k new maps join the stack the next one reads
            x_next, mid = stacks[col + 1][0], base + channels * scale / 2
            bottom.add_patch(FancyArrowPatch((x + bar_w / 2 + 0.05, mid), (x_next - bar_w / 2 - 0.05, mid),
                                             arrowstyle="-|>", mutation_scale=12, color="#555", lw=1.2))
            bottom.text((x + x_next) / 2, mid + 0.12, f"cat: + {k} maps\nof layer {col + 1}", ha="center",
                        va="bottom", fontsize=8.5, color="#555")
    bottom.text(0.1, 5.95, "The concatenations: one stack of maps that grows by k per layer",
                fontsize=13, fontweight="bold")
    bottom.text(0.1, -0.45, "backward: a concatenation's gradient is a split - the last k channels go back "
                "through the layer, the rest straight back to the earlier layers' maps,", fontsize=10, color="#333")
    bottom.text(0.1, -0.95, "so every layer receives the gradient of every later one directly. "
                "Kept naively, each layer's input is a new copy: memory grows with the square of the layers.",
                fontsize=10, color="#333")
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs (default: docs/figures)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "stochastic_depth.png", args.out / "dense_block.png"]
    stochastic_depth_figure(written[0])
    dense_block_figure(written[1])
    for f in written:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
