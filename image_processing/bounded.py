"""The CPU accelerator of semantic inference: `post_processing.semantic_segmentation`'s maps, from bounds.

Both resamplings are convex blends and the sigmoid is monotone, so a query's logit extrema over a window bound it
at every pixel reading the window. Bounds on score differences decide blocks of cells, then cells; only the source
pixels left open get exact scores, over the classes in contention. Cells are the 2x2 windows of logits; n_s source
pixels evaluated exactly, K_c classes in contention. Panoptic and instance: `bounded_masks.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .resampling import BAND_ELEMENTS, Geometry, Rows, take
from .tiles import SLACK, blend, upsampled_at

_BLOCK = 4  # cells per side of a block in the first round of semantic decisions (measured: 4 beats 8)
_CHUNK = 1 << 14  # regions per chunk in `_dominance` (bounds its (R, Q) temporaries)
_PROBE = 8  # one row of blocks in _PROBE tells whether bounds pay (`decided_share`)
_PROBE_ABOVE = 1 << 22  # logit values from which that is asked before computing the bounds
_CELL_TEST_SHARE = 1 / 8  # decided share of blocks from which cells are tested too (`_decide_cells`)
_REST_CHUNK = 1 << 17  # output pixels per chunk whose class comes from blending their sources' scores
_CHUNK_VALUES = 1 << 19  # sigmoid values per chunk of exact scores (2 MB: near the caches; measured 1<<18..1<<21)


# ----------------------------------------------------------------------------------------------------
# Semantic
# ----------------------------------------------------------------------------------------------------
def semantic(probs: Tensor, logits: Tensor, geometry: Geometry, band_rows: int | None) -> Tensor:
    """`post_processing.semantic_segmentation`'s map of one image, (H_t, W_t) int64: blocks of 4x4 cells
    (overlapping by one, so each output window lies in one block) decide first, then cells; source pixels in
    undecided cells or next to them or to another class (`_needed`) get exact scores."""
    slack = SLACK * float(probs.sum(0).max())
    # NOTE: on large logits, a probe first: on untrained or noisy outputs the bounds would only cost time.
    if logits.numel() < _PROBE_ABOVE or decided_share(probs, logits) >= _CELL_TEST_SHARE:
        low, high = _cell_extrema(logits)  # (Q, h, w) each: bounds of the sigmoid over each cell
        cell_label, certain, block_classes, cell_classes = _decide_cells(probs, low, high, slack)
        del low, high
    else:  # every cell open, every class in contention
        certain = torch.zeros(logits.shape[1:], dtype=torch.bool, device=logits.device)
        cell_label = torch.zeros(logits.shape[1:], dtype=torch.long, device=logits.device)
        block_classes = cell_classes = torch.arange(probs.shape[1], device=logits.device)
    identity = geometry.y.identity and geometry.x.identity
    # NOTE: an output pixel that is its own source needs scores only where its cell is undecided, and only the
    # classes in contention there; one that blends sources across cells needs them next to a boundary too, and
    # all the classes in contention in its block (the block's test is the one that covers its whole window).
    needed = ~certain if identity else _needed(certain, cell_label)
    classes = cell_classes if identity else torch.cat([block_classes, cell_label[needed]]).unique()
    sources = _Sources(probs[:, classes], logits, geometry, classes, cell_label, needed, band_rows)
    segmentation = torch.empty(geometry.target, dtype=torch.long, device=logits.device)
    for rows in geometry.bands(sources.band_rows):
        band = sources.band(geometry.y.sources(rows), scores=not identity)
        if identity:
            segmentation[rows[0] : rows[1]] = band.label
        else:
            segmentation[rows[0] : rows[1]] = _resized_argmax(band, geometry, rows, slack)
    return segmentation


def semantic_open_share(probs: Tensor, logits: Tensor) -> float:
    """The share of the image the bounds leave open, at most 1 - `decided_share` (cells decide more than blocks)."""
    return 1.0 - decided_share(probs, logits)


def decided_share(probs: Tensor, logits: Tensor) -> float:
    """The share of blocks the bounds decide, judged on every `_PROBE`-th row of blocks (1.0 for maps too small
    to probe): ~0 on an untrained model's or noisy outputs, 0.6-0.9 on a trained model's."""
    height, slack = logits.shape[1], SLACK * float(probs.sum(0).max())
    if height < 8 * _PROBE:
        return 1.0
    low, high = [], []
    for first in range(0, height - 6, 4 * _PROBE):  # block row b covers the cells of logit rows 4b .. 4b + 5
        cells = _cell_extrema(logits[:, first : first + 6])
        low.append(_blocks(cells[0], torch.amin)[:, 0])  # (Q, blocks in the row)
        high.append(_blocks(cells[1], torch.amax)[:, 0])
    decided, _, _ = _dominance(probs, torch.cat(low, 1).t(), torch.cat(high, 1).t(), slack)
    return float(decided.float().mean())


def _needed(certain: Tensor, label: Tensor) -> Tensor:
    """(h, w) bool: the cells whose source pixels need exact scores when output pixels blend sources across cells
    (2x2 adjacent cells at most): the undecided cells, their neighbours, and those next to a cell of another class."""
    open_cells = (~certain).float()[None, None]
    needed = F.max_pool2d(open_cells, 3, stride=1, padding=1)[0, 0] > 0
    h, w = label.shape
    padded = F.pad(label[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    for dy in range(3):
        for dx in range(3):
            needed |= padded[dy : dy + h, dx : dx + w] != label
    return needed


class _Band:
    """Source rows of the cropped input: per pixel its `label`, and where scored, `gap` (best - second; inf where
    decided), `second` and `where` (column in `scores` (K_c, n_s), else -1); `classes`/`row_of`: row <-> class."""

    def __init__(self, rows: Rows, label: Tensor, classes: Tensor, row_of: Tensor) -> None:
        self.rows, self.label, self.classes, self.row_of = rows, label, classes, row_of
        self.gap = self.second = self.where = self.scores = None


class _Sources:
    """Exact scores of the source pixels in needed cells, band by band: U (a 16x4 matrix per cell when the padded
    input is four times the logits, else pixel by pixel), sigmoid, the classes' sums, in chunks that stay in cache."""

    def __init__(self, probs, logits, geometry, classes, cell_label, needed, band_rows) -> None:
        device = logits.device
        self.probs_t = probs.t().contiguous()  # (K_c, Q)
        self.logits, self.geometry, self.classes = logits, geometry, classes
        self.cell_label, self.needed = cell_label, needed
        size = max(int(cell_label.max()), int(classes.max()) if len(classes) else 0) + 1
        self.row_of = torch.full((size,), -1, dtype=torch.long, device=device)
        self.row_of[classes] = torch.arange(len(classes), device=device)  # class id -> its row in the scores
        self.every_cell = bool(needed.all())
        self.every_class = bool((classes == torch.arange(len(classes), device=device)).all())  # row = class id
        self.weights = _CELL_WEIGHTS.to(device)
        queries, count = len(logits), max(len(classes), 1)
        (h_v, w_v), (h_t, w_t) = geometry.valid, geometry.target
        # NOTE: a band holds its output rows' labels (one value each, in a few copies), and the scores of its source
        # rows (K_c per source pixel, with ~8 values of indices and bounds).
        per_row = 4 * w_t + (count + 8) * w_v * (h_v / h_t + 2 / h_t)
        self.band_rows = band_rows or max(1, min(h_t, int(BAND_ELEMENTS // per_row)))
        self.chunk = max(1, _CHUNK_VALUES // (16 * queries))  # cells per chunk

    def band(self, rows: Rows, scores: bool) -> _Band:
        """The band of source rows rows[0]..rows[1]-1; with `scores`, also what `_resized_argmax` reads."""
        geometry, device = self.geometry, self.logits.device
        if not scores and geometry.stride_4 and self.every_cell:  # untrained or noisy outputs: nothing decided
            label = torch.empty(rows[1] - rows[0], geometry.valid[1], dtype=torch.long, device=device)
            self._whole_cells(rows, label)
            return _Band(rows, label, self.classes, self.row_of)
        taps_y, taps_x = geometry.y.tap0[rows[0] : rows[1]], geometry.x.tap0  # each source pixel's cell
        label = self.cell_label.index_select(0, taps_y).index_select(1, taps_x)  # (rows, w_v)
        band = _Band(rows, label, self.classes, self.row_of)
        need = self.needed.index_select(0, taps_y).index_select(1, taps_x)
        if scores:
            band.gap = torch.full(label.shape, math.inf, device=device)
            band.second = torch.zeros(label.shape, device=device)
            band.where = torch.full(label.shape, -1, dtype=torch.long, device=device)
        if not bool(need.any()):
            return band
        parts, offset = [], 0
        for index, keep, part in self._cells(need, rows) if geometry.stride_4 else self._pixels(need, rows):
            # part: (G, K_c, n) scores of G * n pixels, G-major; those at `keep` are the band's pixels `index`
            best, arg = part.max(1)
            if scores:
                second = part.scatter(1, arg[:, None], -math.inf).max(1).values.flatten()
            best, arg = best.flatten(), arg.flatten()
            if keep is not None:
                best, arg = take(best, keep), take(arg, keep)
            label.view(-1)[index] = take(self.classes, arg)
            if scores:
                second = second if keep is None else take(second, keep)
                band.gap.view(-1)[index] = best - second
                band.second.view(-1)[index] = second
                columns = torch.arange(len(index), device=device) if keep is None else keep
                band.where.view(-1)[index] = columns + offset
                parts.append(part.transpose(0, 1).reshape(part.shape[1], -1))  # (K_c, G * n)
                offset += parts[-1].shape[1]
        if scores:
            band.scores = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        return band

    def _cells(self, need: Tensor, rows: Rows):
        """Scores of the needed pixels through whole cells (`_cell_table`)."""
        geometry, device = self.geometry, self.logits.device
        (first, last), (_, w), (_, w_v) = rows, geometry.low, geometry.valid
        table, top, bottom = self._cell_table(rows)
        # The needed pixels' cells: the band's mask placed on the cells' grid of pixels, any over each cell.
        grid = torch.zeros(4 * (bottom - top), 4 * (w + 1), dtype=torch.bool, device=device)
        grid[first - (4 * top - 2) : last - (4 * top - 2), 2 : 2 + w_v] = need
        needed_cells = grid.view(bottom - top, 4, w + 1, 4).any(3).any(1)  # (cell rows, w + 1)
        offsets = torch.arange(16, device=device)
        if bool(needed_cells.all()):  # every cell: slices of whole cell rows, no gathers
            step = max(1, self.chunk // (w + 1))
            chunks = [(r, min(r + step, bottom - top)) for r in range(0, bottom - top, step)]
        else:
            chunks = torch.split(needed_cells.flatten().nonzero().squeeze(1), self.chunk)
        for chunk in chunks:
            if isinstance(chunk, tuple):
                corners = _row_corners(table, *chunk)
                chunk = torch.arange(chunk[0] * (w + 1), chunk[1] * (w + 1), device=device)
            else:
                top_left = chunk // (w + 1) * (w + 2) + chunk % (w + 1)
                corners = [table.flatten(1).index_select(1, top_left + d) for d in (0, 1, w + 2, w + 3)]
            cell_y, cell_x = chunk // (w + 1), chunk % (w + 1)
            part = self._cell_scores(corners)
            # The cells' pixels in the band (a cell at the band's or the image's edge holds fewer).
            y = (4 * (cell_y + top) - 2 - first)[None, :] + (offsets // 4)[:, None]  # (16, n)
            x = (4 * cell_x - 2)[None, :] + (offsets % 4)[:, None]
            keep = ((y >= 0) & (y < last - first) & (x >= 0) & (x < w_v)).flatten().nonzero().squeeze(1)
            yield take((y * w_v + x).flatten(), keep), keep, part

    def _cell_table(self, rows: Rows) -> tuple[Tensor, int, int]:
        """The logits, padded by one sample on each side, over the cells of source rows rows[0]..rows[1]-1: (Q, cell
        rows + 1, w + 2), and those cell rows top..bottom-1. Cell e holds pixels 4e-2 .. 4e+1, between samples e-1
        and e of the padded logits (torch clamps at the edges: the edge repeated); the same along columns."""
        (first, last), (h, w) = rows, self.geometry.low
        top, bottom = (first + 2) // 4, (last + 1) // 4 + 1
        padded_rows = (torch.arange(top, bottom + 1, device=self.logits.device) - 1).clamp_(0, h - 1)
        band = self.logits.index_select(1, padded_rows)  # (Q, cell rows + 1, w)
        # NOTE: the columns by a replicate pad: a gather along the last dim is several times slower
        table = F.pad(band.view(1, -1, w), (1, 1), mode="replicate").view(len(band), -1, w + 2)
        return table, top, bottom

    def _cell_scores(self, corners: list[Tensor]) -> Tensor:
        """(16, K_c, n) scores of n cells' pixels (row-major) from their four corner samples (Q, n) each."""
        masks = torch.mm(self.weights, torch.stack(corners).view(4, -1)).view(16, len(self.logits), -1).sigmoid_()
        return torch.matmul(self.probs_t, masks)

    def _whole_cells(self, rows: Rows, label: Tensor) -> None:
        """`label` (rows, w_v) when every cell is open and no scores are needed (no resize): `_cells`' values, put
        on the pixel grid by a reshape instead of per-pixel gathers."""
        (first, last), (_, w), (_, w_v) = rows, self.geometry.low, self.geometry.valid
        table, top, bottom = self._cell_table(rows)
        step = max(1, self.chunk // (w + 1))
        for r0 in range(0, bottom - top, step):
            r1 = min(r0 + step, bottom - top)
            arg = self._cell_scores(_row_corners(table, r0, r1)).max(1).indices  # (16, cells)
            grid = arg.view(4, 4, r1 - r0, w + 1).permute(2, 0, 3, 1).reshape(4 * (r1 - r0), 4 * (w + 1))
            y0 = 4 * (top + r0) - 2  # the source row of the grid's first row
            low, high = max(y0, first), min(y0 + 4 * (r1 - r0), last)
            if low < high:
                cut = grid[low - y0 : high - y0, 2 : 2 + w_v]
                label[low - first : high - first] = (
                    cut if self.every_class else take(self.classes, cut.flatten()).view(cut.shape)
                )

    def _pixels(self, need: Tensor, rows: Rows):
        """Scores of the needed pixels one by one (any padding): U at each, sigmoid, the classes' sums."""
        table = self.logits.flatten(1).t().contiguous()  # (h * w, Q)
        for chunk in torch.split(need.flatten().nonzero().squeeze(1), 16 * self.chunk):
            y, x = chunk // self.geometry.valid[1] + rows[0], chunk % self.geometry.valid[1]
            masks = upsampled_at(table, self.geometry, y, x).sigmoid_()  # (n, Q)
            yield chunk, None, torch.mm(self.probs_t, masks.t())[None]


_FRACTIONS = torch.arange(4) * 0.25 + 0.125
_Y, _X = _FRACTIONS.repeat_interleave(4), _FRACTIONS.repeat(4)
# (16, 4): a cell's 16 pixels (row-major) from its four corner samples
_CELL_WEIGHTS = torch.stack([(1 - _Y) * (1 - _X), (1 - _Y) * _X, _Y * (1 - _X), _Y * _X], 1)


def _row_corners(table: Tensor, first: int, last: int) -> list[Tensor]:
    """The corner samples (Q, cells) of cell rows first..last-1 of a `_cell_table`: top-left, top-right, bottom-left,
    bottom-right."""
    top, bottom = table[:, first:last], table[:, first + 1 : last + 1]
    return [c.reshape(len(table), -1) for c in (top[..., :-1], top[..., 1:], bottom[..., :-1], bottom[..., 1:])]


def _resized_argmax(band: _Band, geometry: Geometry, rows: Rows, slack: float) -> Tensor:
    """The argmax of R's blend of the sources' scores over output `rows`, (rows, W_t).

    R blends four sources convexly: where all four are sure of one class, it wins. Elsewhere a class that is no
    source's best is below the blend of the second bests; pixels where that does not settle it are blended over
    every class in contention (`_blended_labels`).
    """
    ay, ax, first = geometry.y, geometry.x, band.rows[0]
    # (rows,) each output row's two source rows, in the band
    top, bottom = ay.src0[rows[0] : rows[1]] - first, ay.src1[rows[0] : rows[1]] - first
    label_top, label_bottom = band.label.index_select(0, top), band.label.index_select(0, bottom)
    sure = label_top == label_bottom
    sure &= (band.gap.index_select(0, top) > slack) & (band.gap.index_select(0, bottom) > slack)
    code = torch.where(sure, label_top, -1)  # (rows, w_v): both source rows sure of one class, else -1
    left, right = code.index_select(1, ax.src0), code.index_select(1, ax.src1)  # (rows, W_t)
    rest = ((left != right) | (left < 0)).flatten().nonzero().squeeze(1)
    weight_y = ay.src_weight[rows[0] : rows[1]]
    for chunk in torch.split(rest, _REST_CHUNK) if len(rest) else []:
        left.view(-1)[chunk] = _blended_labels(band, geometry, chunk, (top, bottom), weight_y, slack)
    return left


def _blended_labels(band: _Band, geometry: Geometry, pixels: Tensor, source_rows, weight_y, slack) -> Tensor:
    """The classes of output pixels (flat indices in the band's output rows, (m,)) from their sources' scores."""
    ax, width = geometry.x, geometry.target[1]
    out_y, out_x = pixels // width, pixels % width
    sy = [take(rows, out_y) for rows in source_rows]
    sx = [take(ax.src0, out_x), take(ax.src1, out_x)]
    flat = torch.stack([sy[i] * geometry.valid[1] + sx[j] for i in (0, 1) for j in (0, 1)])  # (4, m) in the band
    where = take(band.where.view(-1), flat.flatten()).view(flat.shape)  # (4, m) columns of band.scores
    weight_y, weight_x = take(weight_y, out_y), take(ax.src_weight, out_x)
    scores, count = band.scores, band.scores.shape[1]
    slots = take(band.label.view(-1), flat.flatten()).view(flat.shape)  # (4, m) each corner's best class
    slot_rows = take(band.row_of, slots.flatten()).view(slots.shape)  # (4, m) rows of band.scores
    blends = torch.stack([blend(scores.view(-1), slot * count + where, weight_y, weight_x) for slot in slot_rows])
    second = blend(band.second.view(-1), flat, weight_y, weight_x)
    best, slot = blends.max(0)
    labels = slots.gather(0, slot[None])[0]
    unsure = (best <= second + slack).nonzero().squeeze(1)
    for part in torch.split(unsure, max(1, BAND_ELEMENTS // (8 * len(band.classes)))) if len(unsure) else []:
        full = blend(scores.t(), where[:, part], weight_y[part, None], weight_x[part, None])  # (u, K_c)
        labels[part] = take(band.classes, full.max(1).indices)
    return labels


def _decide_cells(probs: Tensor, low: Tensor, high: Tensor, slack: float):
    """Blocks, then the cells of undecided blocks: per cell (h, w) its class and whether it wins at every pixel of
    the cell for certain; the classes that may win in an undecided block (K_b,) and cell (K_c,)."""
    block_low, block_high = _blocks(low, torch.amin), _blocks(high, torch.amax)
    decided, guess, contenders = _dominance(probs, block_low.flatten(1).t(), block_high.flatten(1).t(), slack)
    block_classes = contenders.nonzero().squeeze(1)
    (h, w), blocks = low.shape[1:], block_low.shape[1:]
    rows, cols = torch.arange(h, device=probs.device), torch.arange(w, device=probs.device)
    cell_block = ((rows // _BLOCK)[:, None] * blocks[1] + cols // _BLOCK).flatten()  # (h * w,) block of each cell
    label, certain = take(guess, cell_block), take(decided, cell_block)
    open_cells = (~certain).nonzero().squeeze(1)
    classes = block_classes[:0]
    # NOTE: testing a cell costs ~4 Q K_b flops; deciding it saves 16 pixels of exact scores, ~32 Q K_c flops: worth
    # it where a fair share of cells gets decided, which the share of decided blocks predicts (on untrained or noisy
    # outputs both are ~0, on trained ones 60-90 % of the blocks and most of the remaining cells).
    if len(open_cells) and float(decided.float().mean()) < _CELL_TEST_SHARE:
        return label.view(h, w), certain.view(h, w), block_classes, block_classes
    if len(open_cells):
        # NOTE: a class outside block_classes loses to its block's guess, which the cell's guess beats.
        certain[open_cells], cell_guess, contenders = _dominance(
            probs[:, block_classes],
            low.flatten(1).index_select(1, open_cells).t(),
            high.flatten(1).index_select(1, open_cells).t(),
            slack,
        )
        label[open_cells] = block_classes[cell_guess]
        classes = block_classes[contenders]
    return label.view(h, w), certain.view(h, w), block_classes, classes


def _cell_extrema(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(C, h, w) -> sigmoid of the minimum and maximum over each 2x2 window logits[:, i : i + 2, j : j + 2] (cut at
    the edges), (C, h, w) each. NOTE: in chunks of rows, so that each chunk's passes stay in cache."""
    channels, height, width = logits.shape
    bounds = (torch.empty_like(logits), torch.empty_like(logits))
    step = max(1, _CHUNK * 16 // max(channels * width, 1))
    for first in range(0, height, step):
        last = min(first + step, height)
        below = logits[:, first + 1 : last + 1]  # the next row of each row (none for the last row)
        count = below.shape[1]
        for op, out in zip((torch.minimum, torch.maximum), bounds):
            pair = torch.empty(channels, last - first, width, device=logits.device)  # over rows i, i + 1
            op(logits[:, first : first + count], below, out=pair[:, :count])
            pair[:, count:] = logits[:, first + count : last]
            band = out[:, first:last]
            op(pair[:, :, :-1], pair[:, :, 1:], out=band[:, :, :-1])
            band[:, :, -1] = pair[:, :, -1]
            band.sigmoid_()
    return bounds


def _dominance(probs: Tensor, low: Tensor, high: Tensor, slack: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per region (R), whether the guess (the best class at the lower bounds) wins for certain, and the guess; and
    the classes that may win an undecided region, (K,) bool. probs (Q, K); low, high (R, Q) sigmoid bounds.
    NOTE: score(guess) - score(k) = sum_q d_q * sigmoid_q (d_q = p_q(guess) - p_q(k)) >= low @ d - (high - low) @
    max(-d, 0); certain when > slack for every k.
    """
    decided = torch.zeros(len(low), dtype=torch.bool, device=probs.device)
    guess = torch.zeros(len(low), dtype=torch.long, device=probs.device)
    contenders = torch.zeros(probs.shape[1], dtype=torch.bool, device=probs.device)
    for first in range(0, len(low), _CHUNK):
        chunk = slice(first, first + _CHUNK)
        at_low = torch.mm(low[chunk], probs)  # (R, K) scores at the lower bounds
        guess[chunk] = at_low.max(1).indices  # NOTE: as argmax(1), faster on CPU
        spread = high[chunk] - low[chunk]  # (R, Q)
        chunk_guess, chunk_decided = guess[chunk], decided[chunk]
        for label in torch.unique(chunk_guess).tolist():
            members = (chunk_guess == label).nonzero().squeeze(1)
            scores = at_low[members]
            margin = (scores[:, label : label + 1] - scores).sub_(
                torch.mm(spread[members], (probs - probs[:, label : label + 1]).clamp_(min=0))
            )  # (R_label, K) lower bounds
            margin[:, label] = math.inf
            beaten = margin > slack
            won = beaten.all(1)
            chunk_decided[members] = won
            if not bool(won.all()):
                contenders |= (~beaten[~won]).any(0)
                contenders[label] = True
    return decided, guess, contenders


def _blocks(values: Tensor, reduce) -> Tensor:
    """(C, h, w) cell bounds -> (C, B_y, B_x) block bounds: `reduce` (torch.amin / amax) over cells
    _BLOCK * b .. _BLOCK * (b + 1) inclusive along each axis (cut at the edges)."""
    for dim in (1, 2):
        n = values.shape[dim]
        count = -(-n // _BLOCK)
        extra = count * _BLOCK + 1 - n  # repeat the last cell: it is inside the last block already
        last = values.narrow(dim, n - 1, 1)
        padded = torch.cat([values, last.expand(*[extra if d == dim else -1 for d in range(values.ndim)])], dim)
        main = padded.narrow(dim, 0, count * _BLOCK)
        shape = list(main.shape)
        shape[dim : dim + 1] = [count, _BLOCK]
        reduced = reduce(main.reshape(shape), dim=dim + 1)
        overlap = padded.narrow(dim, _BLOCK, count * _BLOCK - _BLOCK + 1)[
            tuple(slice(None, None, _BLOCK) if d == dim else slice(None) for d in range(values.ndim))
        ]
        values = reduce(torch.stack([reduced, overlap]), dim=0)
    return values
