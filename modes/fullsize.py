"""Full-size masks at a cost that follows the bones, not the image.

Bilinear upsampling (align_corners=False) makes every full-size pixel a convex combination of at most 2x2
model-resolution cells, so `p > t` can only hold next to a cell above t. Per class, the cells above t (less a
rounding margin) give a box of full-size rows and columns; only that box is computed, and everything outside is
known to be <= t without being allocated. Masks, Dice counts, confidences and RLE text all come from the boxes
(FullSizeProbs), for validation, inference, ensembles, pseudo-labels and threshold tuning. Histograms over many
thresholds (threshold tuning, the analysis report) go one step further: the same convexity bounds each 2x2 quad
of cells, and only the quads that straddle a bin edge have their pixels computed (bin_counts).

Exactness: inside a box the values are F.interpolate's bit for bit on the CPU. Why this is hand-written: no
torch op interpolates a sub-window of the full-size grid (F.interpolate of a crop has other coordinates), so
aten's CPU kernel (UpSampleKernel.cpp, non-separable, float32) is mirrored: source index
fma(in/out, i + 0.5, -0.5) clamped at 0, lambda = src - floor(src), weights (1 - lambda, lambda); per pixel the
width is interpolated first, then the height, each as fma(x0, w0, x1 * w1) (the contraction the compiler makes
of `t0 * w0 + t1 * w1`), done by torch.addcmul. A channels-last map, or a small output, goes through aten's
channels-last kernel, mirrored too (_channels_last_box). On CUDA the kernel's contraction is nvcc's choice and is
not verified here (no GPU was lent): there a value within an ulp of the threshold could flip.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
import torch.nn.functional as F

MIN_QUAD_SCALE = 3  # bin_counts pays from this upsampling factor on (2x: slower than binning every pixel)
TILE_PIXELS = 1 << 18  # bin_counts computes this many pixels at a time
MARGIN = 1e-5  # cells above t - MARGIN count as hot: covers float rounding of weights that sum to 1 + ulp


@functools.lru_cache(maxsize=64)
def axis_table(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's 1-D linear interpolation from size_in to size_out: (lo, hi) int64 and (w_lo, w_hi) float32."""
    out = np.arange(size_out)
    if size_in == size_out:
        return out, out, np.ones(size_out, np.float32), np.zeros(size_out, np.float32)
    scale = np.float32(size_in) / np.float32(size_out)
    src = (np.float64(scale) * (out + 0.5) - 0.5).astype(np.float32)  # one rounding: fma
    src = np.maximum(src, np.float32(0))
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    lam = np.clip(src - lo.astype(np.float32), 0, 1).astype(np.float32)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, np.float32(1) - lam, lam


@functools.lru_cache(maxsize=64)
def _device_table(size_in: int, size_out: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    lo, hi, w_lo, w_hi = axis_table(size_in, size_out)
    return tuple(torch.from_numpy(a).to(device) for a in (lo, hi, w_lo, w_hi))


@contextlib.contextmanager
def one_thread(device: torch.device):
    """On the CPU, run the crop work with one intra-op thread: crops are small, and a second thread only adds
    synchronisation (on the loaded 2-core machine here, 10x more CPU time with 2 threads than with 1,
    benchmarks/RESULTS.md). Restores the previous count; nothing changes on an accelerator."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fma(a, b, c), one rounding: torch.addcmul is a fused multiply-add (tests/test_fullsize.py checks the
    results bit for bit against F.interpolate; a float64 emulation costs 9x more)."""
    return torch.addcmul(c, a, b)


def uses_channels_last_kernel(p: torch.Tensor, size: tuple[int, int]) -> bool:
    """Whether aten (CPU) interpolates this (C, h, w) map with its channels-last kernel (UpSampleKernel.cpp's
    _use_vectorized_kernel_cond_2d / upsample_bilinear2d_kernel_impl_float), whose rounding differs."""
    if p.device.type != "cpu":
        return False
    channels = p.shape[0]
    channels_last = channels > 3 and p[None].is_contiguous(memory_format=torch.channels_last)
    return channels_last or size[0] + size[1] <= 128 or (torch.get_num_threads() == 1 and channels == 3)


def upsample_box(p: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int], c: int,
                 channels_last: bool = False) -> torch.Tensor:
    """Channel c of a (C, h, w) map bilinearly upsampled to `size`, rows r0:r1 and columns c0:c1 of `box` only,
    with F.interpolate's values; `channels_last`: as aten's channels-last kernel computes them."""
    r0, r1, c0, c1 = box
    h, w = p.shape[-2:]
    if (h, w) == tuple(size):
        return p[c, r0:r1, c0:c1].clone()
    rows = tuple(t[r0:r1] for t in _device_table(h, size[0], p.device))
    cols = tuple(t[c0:c1] for t in _device_table(w, size[1], p.device))
    if channels_last:
        return _channels_last_box(p, c, rows, cols, _vector_width())
    rlo, rhi, rw0, rw1 = rows
    clo, chi, cw0, cw1 = cols
    lo_r, hi_r = axis_table(h, size[0])[:2]
    a0, a1 = int(lo_r[r0]), int(hi_r[r1 - 1]) + 1  # the model-resolution rows the box reads
    rows = p[c, a0:a1]
    across = _fma(rows.index_select(1, clo), cw0, rows.index_select(1, chi) * cw1)  # along the width first
    return _fma(across.index_select(0, rlo - a0), rw0[:, None], across.index_select(0, rhi - a0) * rw1[:, None])


def _channels_last_box(p, c, rows, cols, width: int) -> torch.Tensor:
    """aten's channels-last kernel: weights h * w per corner, summed as fma chains that differ between the
    channels in SIMD vectors of `width` floats and the scalar tail (the last C % width channels)."""
    rlo, rhi, rw0, rw1 = rows
    clo, chi, cw0, cw1 = cols
    w00, w01 = rw0[:, None] * cw0, rw0[:, None] * cw1
    w10, w11 = rw1[:, None] * cw0, rw1[:, None] * cw1
    top, bottom = p[c].index_select(0, rlo), p[c].index_select(0, rhi)
    x00, x01 = top.index_select(1, clo), top.index_select(1, chi)
    x10, x11 = bottom.index_select(1, clo), bottom.index_select(1, chi)
    if c < p.shape[0] - p.shape[0] % width:
        return _fma(x00, w00, _fma(x01, w01, _fma(x11, w11, x10 * w10)))
    return _fma(x11, w11, _fma(x10, w10, _fma(x00, w00, x01 * w01)))


def pixel_values(p: torch.Tensor, size: tuple[int, int], rows: torch.Tensor, cols: torch.Tensor,
                 channels_last: bool = False) -> torch.Tensor:
    """(C, n) values of every class of a (C, h, w) map bilinearly upsampled to `size`, at the n full-size pixels
    (rows[k], cols[k]) only, with F.interpolate's values (upsample_box's arithmetic, per pixel)."""
    h, w = p.shape[-2:]
    if (h, w) == tuple(size):
        return p[:, rows, cols]
    rlo, rhi, rw0, rw1 = (t[rows] for t in _device_table(h, size[0], p.device))
    clo, chi, cw0, cw1 = (t[cols] for t in _device_table(w, size[1], p.device))
    flat = p.reshape(p.shape[0], h * w)  # index_select of flat indices: faster than indexing by (row, column)
    x00, x01, x10, x11 = (flat.index_select(1, r * w + c) for r, c in ((rlo, clo), (rlo, chi), (rhi, clo), (rhi, chi)))
    if not channels_last:  # along the width first, then the height
        return _fma(_fma(x00, cw0, x01 * cw1), rw0, _fma(x10, cw0, x11 * cw1) * rw1)
    w00, w01, w10, w11 = rw0 * cw0, rw0 * cw1, rw1 * cw0, rw1 * cw1
    vector = p.shape[0] - p.shape[0] % _vector_width()  # _channels_last_box's two orders of the sums
    return torch.cat([_fma(x00[:vector], w00, _fma(x01[:vector], w01, _fma(x11[:vector], w11, x10[:vector] * w10))),
                      _fma(x11[vector:], w11, _fma(x10[vector:], w10, _fma(x00[vector:], w00, x01[vector:] * w01)))])


@functools.lru_cache(maxsize=1)
def _vector_width() -> int:
    """The float SIMD width of aten's channels-last kernel on this CPU (8 with AVX2, also on AVX512 CPUs here):
    found once by comparing with F.interpolate; 8 when none fits (then values may differ by an ulp)."""
    x = torch.rand(1, 37, 9, 8, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    reference = F.interpolate(x, size=(13, 11), mode="bilinear", align_corners=False)[0]
    rows, cols = _device_table(9, 13, x.device), _device_table(8, 11, x.device)
    for width in (8, 16, 4, 32, 1):
        if torch.equal(torch.stack([_channels_last_box(x[0], k, rows, cols, width) for k in range(37)]), reference):
            return width
    return 8


def _full_range(table, first: int, end: int) -> tuple[int, int]:
    """The full-size lines [r0, r1) that read a model-resolution line in [first, end)."""
    lo, hi = table[:2]
    return int(np.searchsorted(hi, first, "left")), int(np.searchsorted(lo, end - 1, "right"))


def _first_last(lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(lines.shape[1], device=lines.device)
    first = torch.where(lines, idx, lines.shape[1]).amin(1)
    last = torch.where(lines, idx, -1).amax(1)
    return first, last + 1


class FullSizeProbs:
    """One image's weighted mean of members' probabilities at its own size, computed only where asked.

    `parts`: (probabilities (C, h, w) at each member's resolution, weight). The mean is formed as the old path did
    (each member upsampled and multiplied by its weight, summed in order, divided by the total weight), so the
    values inside a box are the old full-size values.
    """

    def __init__(self, parts: list[tuple[torch.Tensor, float]], size: tuple[int, int]):
        self.parts = parts
        self.size = (int(size[0]), int(size[1]))
        self.total_weight = sum(w for _, w in parts)
        self.num_classes = parts[0][0].shape[0]
        self.device = parts[0][0].device
        self.kernels = [uses_channels_last_kernel(p, self.size) for p, _ in parts]

    @classmethod
    def of(cls, probs) -> FullSizeProbs:
        """Full-size (C, H, W) probabilities (a tensor or an array) as FullSizeProbs (boxes are plain slices)."""
        probs = torch.from_numpy(np.asarray(probs)) if not isinstance(probs, torch.Tensor) else probs
        return cls([(probs.float(), 1.0)], tuple(probs.shape[-2:]))

    def boxes(self, thresholds) -> list[tuple[int, int, int, int] | None]:
        """Per class, the full-size box (r0, r1, c0, c1) outside which every pixel is <= its threshold, or None.

        Per member, the first and last model-resolution rows and columns with a hot cell (one synchronisation for
        all), then the full-size rows and columns that read any line between them (the tables are monotonic);
        the union over members."""
        t = torch.as_tensor(thresholds, dtype=torch.float32, device=self.device).reshape(-1)
        t = t.expand(self.num_classes).view(-1, 1, 1) - MARGIN
        bounds = []
        for p, _ in self.parts:  # a line is hot where its maximum is (max, then compare: faster than any())
            t2 = t.view(-1, 1)
            bounds.append(torch.stack([*_first_last(p.amax(2) > t2), *_first_last(p.amax(1) > t2)], 1))
        bounds = torch.stack(bounds).tolist()  # (members, C, 4)
        boxes = [None] * self.num_classes
        for (p, _), member in zip(self.parts, bounds):
            tables = (axis_table(p.shape[-2], self.size[0]), axis_table(p.shape[-1], self.size[1]))
            for c, (a0, a1, b0, b1) in enumerate(member):
                if a0 >= a1:
                    continue
                box = (*_full_range(tables[0], a0, a1), *_full_range(tables[1], b0, b1))
                if box[0] >= box[1] or box[2] >= box[3]:  # downsampling can skip the hot lines
                    continue
                old = boxes[c]
                boxes[c] = box if old is None else (min(old[0], box[0]), max(old[1], box[1]),
                                                    min(old[2], box[2]), max(old[3], box[3]))
        return boxes

    def crop(self, c: int, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Class c's mean probabilities inside `box`, float32, equal to the full-size map's values there."""
        mean = None
        for (p, weight), channels_last in zip(self.parts, self.kernels):
            v = upsample_box(p, self.size, box, c, channels_last)
            if weight != 1.0:
                v = v.mul_(weight)
            mean = v if mean is None else mean.add_(v)
        return mean.div_(self.total_weight) if self.total_weight != 1.0 else mean

    def masks(self, thresholds) -> list[tuple[tuple[int, int, int, int], torch.Tensor] | None]:
        """Per class, (box, `probs > threshold` inside it) or None where the mask is empty for sure.

        `thresholds`: a float or a (C,) tensor, compared as the old path compared the full-size map."""
        per_class = isinstance(thresholds, torch.Tensor) and thresholds.numel() > 1
        out = []
        with one_thread(self.device):
            for c, box in enumerate(self.boxes(thresholds)):
                t = thresholds.reshape(-1)[c].to(self.device) if per_class else thresholds
                out.append(None if box is None else (box, self.crop(c, box) > t))
        return out

    def full(self) -> torch.Tensor:
        """The whole (C, H, W) map (the reference's values; for tests and small images)."""
        box = (0, self.size[0], 0, self.size[1])
        with one_thread(self.device):
            return torch.stack([self.crop(c, box) for c in range(self.num_classes)])

    def confidence(self) -> float:
        """0.5 + mean over classes and pixels of |p - 0.5|, without the full-size map.

        Outside the boxes for 0.5 every pixel is <= 0.5, so there |p - 0.5| = 0.5 - p, and the sum of p over the
        whole image is linear in the model-resolution maps (row and column weight sums). Equal to the hand-bone
        pseudo-labels' confidence of the full map (tasks/handbone/pseudo.py) up to float64 rounding of the sums."""
        inside_abs = inside_sum = 0.0
        inside_count = 0
        with one_thread(self.device):
            for c, box in enumerate(self.boxes(0.5)):
                if box is not None:
                    v = self.crop(c, box)
                    inside_abs += float((v - 0.5).abs_().sum(dtype=torch.float64))
                    inside_sum += float(v.sum(dtype=torch.float64))
                    inside_count += v.numel()
        n = self.num_classes * self.size[0] * self.size[1]
        outside = 0.5 * (n - inside_count) - (self._total_sum() - inside_sum)
        return 0.5 + (inside_abs + outside) / n

    def _total_sum(self) -> float:
        """Sum of the mean map over all classes and full-size pixels, from the model-resolution maps."""
        total = 0.0
        for p, weight in self.parts:
            h, w = p.shape[-2:]
            line_weights = []
            for n_in, n_out in ((h, self.size[0]), (w, self.size[1])):
                lo, hi, w_lo, w_hi = axis_table(n_in, n_out)
                sums = np.bincount(lo, w_lo.astype(np.float64), n_in) + np.bincount(hi, w_hi.astype(np.float64), n_in)
                line_weights.append(torch.from_numpy(sums).to(p.device))
            total += weight * float(torch.einsum("cab,a,b->", p.double(), *line_weights))
        return total / self.total_weight


def bits_count(bits: np.ndarray) -> np.ndarray:
    """Set bits per class of packed (C, H, W/8) masks: the truth's areas without unpacking them."""
    return np.bitwise_count(bits).reshape(bits.shape[0], -1).sum(1, dtype=np.int64)


def packed_box(plane: np.ndarray, width: int) -> tuple[int, int, int, int] | None:
    """The tight bounding box (r0, r1, c0, c1) of one packed (H, W/8) mask of `width` columns, read from the bits
    (None where empty)."""
    rows = np.flatnonzero(plane.any(1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(np.unpackbits(np.bitwise_or.reduce(plane, axis=0))[:width])
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def unpack_box(bits: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W/8) packed mask (numpy's big-endian bit order) -> the (r1 - r0, c1 - c0) bool crop of `box`."""
    r0, r1, c0, c1 = box
    block = np.unpackbits(bits[r0:r1, c0 // 8:(c1 + 7) // 8], axis=1)
    return block[:, c0 % 8:c0 % 8 + c1 - c0].view(bool)


def dice_counts(probs: FullSizeProbs, threshold, bits: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Per class (intersection, predicted area, true area), float64, of `probs > threshold` and the packed
    (C, H, W/8) truth: the mask is only looked at inside the boxes, the truth's area comes from its bits."""
    inter = torch.zeros(probs.num_classes, dtype=torch.float64)
    area = torch.zeros(probs.num_classes, dtype=torch.float64)
    for c, item in enumerate(probs.masks(threshold)):
        if item is not None:
            box, mask = item
            mask = mask.cpu().numpy()  # numpy: no thread-pool round trip per small crop
            inter[c] = np.count_nonzero(mask & unpack_box(bits[c], box))
            area[c] = np.count_nonzero(mask)
    return inter, area, torch.from_numpy(bits_count(bits).astype(np.float64))


def value_bins(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin b of a probability p: `p > b / n_bins` holds exactly when ceil(p * n_bins) - 1 >= b (float32, as the
    thresholds compare); -1 for p == 0. Monotonic in p."""
    return (values * n_bins).ceil_().sub_(1).clamp_(-1, n_bins - 1).long()


def _line_groups(size_in: int, size_out: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size lines grouped by the model-resolution line they read first (contiguous: the table is monotonic):
    per model line, its first full-size line and their count."""
    counts = np.bincount(axis_table(size_in, size_out)[0], minlength=size_in)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return torch.from_numpy(starts).to(device), torch.from_numpy(counts).to(device)


def bin_counts(probs: FullSizeProbs, bits: np.ndarray, n_bins: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(C, n_bins) int64 counts of full-size pixels per value_bins bin, all pixels and those of the packed
    (C, H, W/8) truth, exact for bins 1 .. n_bins - 1 (column 0 is left at zero), without computing most pixels.

    The full-size pixels that read the same 2x2 model cells (a quad: about scale x scale pixels) take values
    between the cells' minimum and maximum (a convex combination; MARGIN covers the rounding). A quad whose
    minimum and maximum fall in one bin puts all its pixels there: it is counted by its area and its truth pixels.
    A quad entirely in bins <= 0 is skipped. Only the other quads' pixels are computed, with upsample_box's
    arithmetic (bit for bit), all classes at once. None where this does not apply (several members, a weight, not
    float32) or does not pay (upsampling by less than MIN_QUAD_SCALE: quads of a few pixels cost more than binning
    the pixels, benchmarks/RESULTS.md): the caller bins the boxes' values then."""
    if len(probs.parts) != 1 or probs.total_weight != 1.0:
        return None
    p = probs.parts[0][0]
    (h, w), (big_h, big_w) = p.shape[-2:], probs.size
    if big_h < MIN_QUAD_SCALE * h or big_w < MIN_QUAD_SCALE * w or p.dtype != torch.float32:
        return None
    device, n_classes, stride = p.device, p.shape[0], n_bins + 1
    tiles = _QuadTiles(p, probs.size, probs.kernels[0])
    quad_area = (tiles.rows[1][:, None] * tiles.cols[1][None, :]).double()
    corners = torch.cat([p, p[:, -1:]], 1)
    corners = torch.cat([corners, corners[:, :, -1:]], 2)  # (C, h + 1, w + 1): quad (i, j) reads i, i+1 / j, j+1
    quad = (corners[:, :-1, :-1], corners[:, :-1, 1:], corners[:, 1:, :-1], corners[:, 1:, 1:])
    low = value_bins(torch.minimum(torch.minimum(quad[0], quad[1]), torch.minimum(quad[2], quad[3])) - MARGIN,
                     n_bins)
    high = value_bins(torch.maximum(torch.maximum(quad[0], quad[1]), torch.maximum(quad[2], quad[3])) + MARGIN,
                      n_bins)
    hot = high >= 1
    truth_quads = torch.stack([_truth_by_quad(plane, (h, w), big_w, device) for plane in bits])
    c, i, j = torch.nonzero(hot & (low == high), as_tuple=True)
    flat = c * stride + high[c, i, j] + 1
    hist_all = torch.bincount(flat, quad_area[i, j], n_classes * stride).long()
    hist_true = torch.bincount(flat, truth_quads[c, i, j], n_classes * stride).long()
    for c, i, j, a, b in tiles.by_shape(*torch.nonzero(hot & (low != high), as_tuple=True)):
        flat = tiles.bins(c, i, j, a, b, n_bins) + 1 + (c * stride)[:, None, None]  # (n, a, b)
        hist_all += torch.bincount(flat.flatten(), minlength=n_classes * stride)
        touched = truth_quads[c, i, j] > 0
        if bool(touched.any()):
            inside = tiles.truth(bits, c[touched], i[touched], j[touched], a, b)
            hist_true += torch.bincount(flat[touched][inside], minlength=n_classes * stride)
    hist_all, hist_true = hist_all.view(n_classes, stride), hist_true.view(n_classes, stride)
    hist_all[:, :2] = 0
    hist_true[:, :2] = 0
    return hist_all[:, 1:].cpu(), hist_true[:, 1:].cpu()


def _truth_by_quad(plane: np.ndarray, low_size: tuple[int, int], width: int, device) -> torch.Tensor:
    """A class's packed (H, W/8) truth -> its pixel count per quad, (h, w) float64 (bincount's weights)."""
    out = torch.zeros(low_size, dtype=torch.float64, device=device)
    box = packed_box(plane, width)
    if box is None:
        return out
    sums, groups_read = unpack_box(plane, box).astype(np.int64), []
    for axis, (start, n_in, n_out) in enumerate(((box[0], low_size[0], plane.shape[0]),
                                                  (box[2], low_size[1], width))):
        groups = axis_table(n_in, n_out)[0][start:start + sums.shape[axis]]
        first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        sums = np.add.reduceat(sums, first, axis=axis)
        groups_read.append(torch.from_numpy(groups[first]).to(device))
    out[groups_read[0][:, None], groups_read[1][None, :]] = torch.from_numpy(sums).double().to(device)
    return out


class _QuadTiles:
    """The full-size pixels of chosen quads (class c, row i, column j) of one shape as (n, a, b) tiles, valued as
    upsample_box values them."""

    def __init__(self, p: torch.Tensor, size: tuple[int, int], channels_last: bool):
        self.p, self.channels_last = p, channels_last
        (h, w), device = p.shape[-2:], p.device
        self.rows, self.cols = _line_groups(h, size[0], device), _line_groups(w, size[1], device)
        self.weights = tuple(_device_table(n, big, device)[2:] for n, big in ((h, size[0]), (w, size[1])))

    def by_shape(self, c: torch.Tensor, i: torch.Tensor, j: torch.Tensor):
        """The quads grouped by their shape (a, b) (interior quads share one, border quads differ), in chunks of
        about TILE_PIXELS pixels: their temporaries stay in the CPU's cache."""
        if len(c) == 0:
            return
        wide = int(self.cols[1].max()) + 1
        key = self.rows[1][i] * wide + self.cols[1][j]
        for k in torch.unique(key).tolist():
            a, b = divmod(k, wide)
            if a and b:
                chosen = torch.nonzero(key == k).flatten()
                step = max(1, TILE_PIXELS // (a * b))
                for start in range(0, len(chosen), step):
                    part = chosen[start:start + step]
                    yield c[part], i[part], j[part], a, b

    def _lines(self, i, j, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(max(a, b), device=self.p.device)
        return self.rows[0][i][:, None] + steps[:a], self.cols[0][j][:, None] + steps[:b]

    def bins(self, c, i, j, a: int, b: int, n_bins: int) -> torch.Tensor:
        r, k = self._lines(i, j, a, b)
        rw0, rw1 = (t[r][:, :, None] for t in self.weights[0])
        cw0, cw1 = (t[k][:, None, :] for t in self.weights[1])
        n_classes, (h, w) = self.p.shape[0], self.p.shape[-2:]
        i2, j2 = (i + 1).clamp(max=h - 1), (j + 1).clamp(max=w - 1)
        x00, x01 = self.p[c, i, j][:, None, None], self.p[c, i, j2][:, None, None]
        x10, x11 = self.p[c, i2, j][:, None, None], self.p[c, i2, j2][:, None, None]
        if self.channels_last:  # _channels_last_box's sums, per pixel: the order depends on the class
            w00, w01, w10, w11 = rw0 * cw0, rw0 * cw1, rw1 * cw0, rw1 * cw1
            vector = (c < n_classes - n_classes % _vector_width())[:, None, None]
            values = torch.where(vector, _fma(x00, w00, _fma(x01, w01, _fma(x11, w11, x10 * w10))),
                                 _fma(x11, w11, _fma(x10, w10, _fma(x00, w00, x01 * w01))))
        else:  # upsample_box's: along the width first, then the height
            values = _fma(_fma(x00, cw0, x01 * cw1), rw0, _fma(x10, cw0, x11 * cw1) * rw1)
        return value_bins(values, n_bins)

    def truth(self, bits: np.ndarray, c, i, j, a: int, b: int) -> torch.Tensor:
        """(n, a, b) bool: the tiles' pixels in their class's truth, read from the packed (C, H, W/8) bits
        (numpy's big-endian bit order; gathered by numpy: the cache's read-only pages are not copied)."""
        r, k = (x.cpu().numpy() for x in self._lines(i, j, a, b))
        byte = bits[c.cpu().numpy()[:, None, None], r[:, :, None], (k // 8)[:, None, :]]
        inside = (byte >> (7 - k % 8).astype(np.uint8)[:, None, :]) & 1
        return torch.from_numpy(inside.view(bool)).to(self.p.device)
