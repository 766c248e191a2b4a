"""Sums of ``Z_i' W Z_j`` over many chunks, in a form that adds without merging.

The engine reads ``Z_i' W Z_j`` as a :class:`~mixedanova.likelihood.crossprod.PairBlock`:
the distinct pair keys ``level_i * nlev_j + level_j`` sorted, one ``q_i x q_j``
block each.  Chunks of crossed factors with many levels share few pairs, so a
sum of chunk blocks is as large as the chunks together, and merging the sorted
keys at every addition (as a tree sum would) sorts the same keys again and
again.  :class:`PairSum` is the form in which the chunks' sums travel until
the end, where :meth:`PairSum.block` merges them once:

* when the key space is small next to the chunk's rows, a *dense* part: the
  count and the summed values of every key (``bincount``; sums add
  elementwise);
* otherwise *runs*: each chunk's keys, one per row (repeats allowed), grouped by
  *bucket* (the key's high bits, at most ``2**16`` buckets; a stable radix
  argsort of the bucket numbers, not a sort of the keys) with their values, and
  only the low bits of each key stored (two bytes a row for up to ``2**32``
  keys).  Runs add by being listed together.

:meth:`PairSum.block` merges the runs bucket by bucket: the entries of a bucket
from all runs go to one row of a padded matrix whose rows are sorted at once
(``np.sort(..., axis=1)``: short rows, sorted in registers), the sorted rows give
the distinct keys and their counts (run lengths) or values (sums over the runs
of equal keys), written into preallocated output (an upper bound whose unused
tail is given back), a group of buckets at a time.  When the runs held grow beyond :data:`MERGE_BYTES` they
are merged into one run of distinct keys and counts or values, so that data with
many repeated pairs keep a memory set by the distinct pairs, not the rows.

Counts are exact integers and the values the same sums over the same rows as a
merge of sorted blocks, possibly added in another order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .crossprod import PairBlock

__all__ = ["KeySpace", "PairRun", "PairSum", "MERGE_BYTES", "MAX_MERGE_THREADS", "merge_threads"]

BUCKET_BITS = 16
MERGE_BYTES = 1 << 30          # runs held beyond this many bytes are merged into one
_GROUP_ENTRIES = 1 << 22       # entries per group of buckets merged at a time
_MAX_ROW = 1 << 12             # longest row of the padded matrix; longer buckets: own sort
_PARALLEL_ENTRIES = 1 << 23    # entries from which the final merge runs in threads
MAX_MERGE_THREADS = 4


@dataclass(frozen=True)
class KeySpace:
    """The keys ``[0, size)`` of one pair of terms.

    ``stride``: the block's key of key ``k`` is ``k * stride`` (a term with itself
    keeps the key of level ``l`` as ``l``, its block key being ``l * (nlev + 1)``).
    A key's bucket is ``k >> shift`` (at most ``2**16`` buckets), its local key the
    ``shift`` low bits.
    """

    size: int
    stride: int = 1

    @property
    def shift(self) -> int:
        return max(0, (max(self.size, 1) - 1).bit_length() - BUCKET_BITS)

    @property
    def nbuckets(self) -> int:
        return ((max(self.size, 1) - 1) >> self.shift) + 1

    @property
    def local_dtype(self):
        s = self.shift
        return np.uint16 if s <= 16 else np.uint32 if s <= 32 else np.uint64

    @property
    def key_dtype(self):
        return np.uint32 if self.size <= 2**32 else np.int64


@dataclass(frozen=True)
class PairRun:
    """Keys of many entries (repeats allowed) with their counts or values.

    ``offsets`` None: ``keys`` holds whole keys in any order.  Else the entries are
    grouped by bucket, bucket ``b`` at ``offsets[b]:offsets[b + 1]``, and ``keys``
    holds their local keys.  ``counts`` None: each entry counts once; ``vals``
    None: an entry's block is its count in every cell (two all-ones columns).
    """

    keys: np.ndarray
    offsets: np.ndarray | None = None
    counts: np.ndarray | None = None
    vals: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.offsets, self.counts, self.vals)
                   if a is not None)


def _bucketed(space: KeySpace, run: PairRun, is_sorted: bool = False) -> PairRun:
    """``run`` with its entries grouped by bucket (a stable radix argsort of the
    bucket numbers; nothing to move when the keys are sorted)."""
    if run.offsets is not None:
        return run
    keys = run.keys
    nb = space.nbuckets
    b = np.empty(len(keys), dtype=np.uint8 if nb <= 256 else np.uint16)
    np.right_shift(keys, space.shift, out=b, casting="unsafe")  # < nb: fits
    offsets = np.zeros(nb + 1, dtype=np.int32 if len(keys) < 2**31 else np.int64)
    np.cumsum(np.bincount(b, minlength=nb), out=offsets[1:])
    counts, vals = run.counts, run.vals
    local = np.empty(len(keys), dtype=space.local_dtype)
    np.bitwise_and(keys, keys.dtype.type((1 << space.shift) - 1), out=local,
                   casting="unsafe")
    if not is_sorted:
        order = np.argsort(b, kind="stable")
        local = local[order]
        counts = None if counts is None else counts[order]
        vals = None if vals is None else vals[order]
    return PairRun(local, offsets, counts, vals)


def _vals_of(run_counts: np.ndarray | None, vals: np.ndarray | None, n: int,
             q: tuple[int, int]) -> np.ndarray:
    if vals is not None:
        return vals
    c = np.ones(n) if run_counts is None else run_counts.astype(float)
    return np.repeat(c, q[0] * q[1]).reshape(n, q[0], q[1])


@dataclass(frozen=True)
class PairSum:
    """``Z_i' W Z_j`` of summed chunks (see the module docstring).

    Attributes
    ----------
    space : KeySpace
    q : tuple of int
        ``(q_i, q_j)``.
    counts : numpy.ndarray or None
        Dense part: ``(size,)`` entries of each key.
    dvals : numpy.ndarray or None
        Dense part: ``(size, q_i, q_j)`` summed blocks (None with ``counts``: the
        counts in every cell).
    runs : tuple of PairRun
    """

    space: KeySpace
    q: tuple[int, int]
    counts: np.ndarray | None = None
    dvals: np.ndarray | None = None
    runs: tuple = ()

    # ------------------------------------------------------------ building
    @classmethod
    def of_keys(cls, space: KeySpace, keys: np.ndarray, vals: np.ndarray | None,
                q: tuple[int, int]) -> "PairSum":
        """One chunk's entries: ``keys`` (one per row) and their blocks ``vals``
        (``(n, q_i, q_j)``; None: two all-ones columns, the block is the count).

        Dense when the key space is not much larger than the rows, else one run
        grouped by bucket (left whole when there are fewer entries than buckets).
        """
        n = len(keys)
        if space.size <= 4 * n + 4096:
            counts = np.bincount(keys, minlength=space.size)
            dvals = None
            if vals is not None:
                flat = vals.reshape(n, q[0] * q[1])
                dvals = np.empty((space.size, q[0] * q[1]))
                for c in range(flat.shape[1]):
                    dvals[:, c] = np.bincount(keys, weights=flat[:, c], minlength=space.size)
                dvals = dvals.reshape(space.size, q[0], q[1])
            return cls(space, q, counts, dvals)
        run = PairRun(keys.astype(space.key_dtype, copy=False), vals=vals)
        if n >= space.nbuckets:
            run = _bucketed(space, run)
        return cls(space, q, runs=(run,))

    @classmethod
    def of_block(cls, space: KeySpace, block: PairBlock) -> "PairSum":
        """A :class:`PairBlock` of this key space as a sum (one run)."""
        keys = np.asarray(block.keys, dtype=np.int64) // space.stride
        counts = np.ones(len(keys), dtype=np.int64)
        return cls(space, tuple(block.vals.shape[1:]),
                   runs=(PairRun(keys.astype(space.key_dtype), None, counts,
                                 np.asarray(block.vals, dtype=float)),))

    # ------------------------------------------------------------ adding
    def __add__(self, other) -> "PairSum":
        return PairSum.total([self, other])

    def __radd__(self, other) -> "PairSum":
        return PairSum.total([other, self])

    @staticmethod
    def total(items: list) -> "PairSum":
        """The sum of many (dense parts added, runs listed; runs folded into the
        dense part when there is one, merged into one run beyond
        :data:`MERGE_BYTES`)."""
        items = [x for x in items if x is not None]
        first = next(x for x in items if isinstance(x, PairSum))
        space, q = first.space, first.q
        items = [x if isinstance(x, PairSum) else PairSum.of_block(space, x) for x in items]
        counts, dvals, runs = None, None, []
        for x in items:
            runs.extend(x.runs)
            if x.counts is None:
                continue
            if counts is None:
                counts = x.counts.copy()
                dvals = None if x.dvals is None else x.dvals.copy()
                continue
            if dvals is None and x.dvals is not None:
                dvals = _dense_vals(counts, q)
            counts += x.counts
            if dvals is not None:
                dvals += _dense_vals(x.counts, q) if x.dvals is None else x.dvals
        out = PairSum(space, q, counts, dvals, tuple(runs))
        if counts is not None and runs:
            return out._folded()
        if sum(r.nbytes for r in runs) > MERGE_BYTES and len(runs) > 1:
            return out._merged()
        return out

    def _folded(self) -> "PairSum":
        """The runs added into the dense part."""
        counts = self.counts.copy()
        dvals = None if self.dvals is None else self.dvals.copy()
        size, q = self.space.size, self.q
        for r in self.runs:
            keys = _whole_keys(self.space, r)
            rc = np.bincount(keys, weights=r.counts, minlength=size)
            rc = rc.astype(np.int64, copy=False)
            if dvals is None and r.vals is not None:
                dvals = _dense_vals(counts, q)  # the counts so far, as blocks
            counts += rc
            if dvals is None:
                continue
            if r.vals is None:
                dvals += rc.astype(float)[:, None, None]
                continue
            flat = dvals.reshape(size, -1)
            v = r.vals.reshape(r.n, q[0] * q[1])
            for c in range(v.shape[1]):
                flat[:, c] += np.bincount(keys, weights=v[:, c], minlength=size)
        return PairSum(self.space, q, counts, dvals)

    def _merged(self) -> "PairSum":
        keys, counts, vals = _merge_runs(self.space, self.q, self.runs, final=False)
        run = PairRun(keys.astype(self.space.key_dtype), None, counts, vals)
        return PairSum(self.space, self.q, runs=(_bucketed(self.space, run, True),))

    # ------------------------------------------------------------ the end
    def block(self) -> PairBlock:
        """The summed :class:`PairBlock` (sorted distinct keys, float blocks)."""
        s = self._folded() if self.counts is not None and self.runs else self
        if s.counts is not None:
            lev = np.flatnonzero(s.counts)
            vals = (_dense_vals(s.counts[lev], s.q) if s.dvals is None else s.dvals[lev])
            return PairBlock(lev.astype(np.int64) * s.space.stride, vals)
        keys, _, vals = _merge_runs(s.space, s.q, s.runs, final=True)
        if s.space.stride != 1:
            keys *= s.space.stride
        return PairBlock(keys, vals)


def _dense_vals(counts: np.ndarray, q: tuple[int, int]) -> np.ndarray:
    return np.repeat(counts.astype(float), q[0] * q[1]).reshape(len(counts), q[0], q[1])


def _whole_keys(space: KeySpace, run: PairRun) -> np.ndarray:
    """The whole keys of a run's entries (in the run's order)."""
    if run.offsets is None:
        return run.keys.astype(np.int64, copy=False)
    b = np.repeat(np.arange(space.nbuckets, dtype=np.int64), np.diff(run.offsets))
    return (b << space.shift) | run.keys.astype(np.int64)


# ---------------------------------------------------------------- merging runs
@dataclass
class _Out:
    """Preallocated output (an upper bound of the distinct keys), filled group by
    group, and scratch arrays that the groups reuse (fresh memory is slow to touch)."""

    keys: np.ndarray
    counts: np.ndarray | None
    vals: np.ndarray | None
    scratch: dict = field(default_factory=dict)

    def temp(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """An uninitialized array for this group, reusing the last group's memory."""
        n = int(np.prod(shape))
        a = self.scratch.get(name)
        if a is None or a.dtype != dtype or len(a) < n:
            a = self.scratch[name] = np.empty(max(n, 1), dtype=dtype)
        return a[:n].reshape(shape)


def _merge_runs(space: KeySpace, q: tuple[int, int], runs, final: bool):
    """Distinct keys (sorted, int64, unscaled) and their counts or blocks.

    ``final``: blocks as float ``(m, q_i, q_j)`` always (counts None); else counts
    (int64) when every run is counts-only, blocks otherwise.
    """
    runs = [_bucketed(space, r) for r in runs if r.n]
    with_vals = any(r.vals is not None for r in runs)
    with_counts = any(r.counts is not None for r in runs)
    nb = space.nbuckets
    if not runs:
        return (np.zeros(0, dtype=np.int64), None if final or with_vals else
                np.zeros(0, dtype=np.int64), np.zeros((0,) + tuple(q)) if final or
                with_vals else None)
    per_bucket = np.zeros(nb, dtype=np.int64)
    for r in runs:
        per_bucket += np.diff(r.offsets)
    total = int(per_bucket.sum())
    ends = np.cumsum(per_bucket)
    # groups of consecutive buckets with about _GROUP_ENTRIES entries each
    cuts = np.searchsorted(ends, np.arange(_GROUP_ENTRIES, total, _GROUP_ENTRIES),
                           side="left")
    bounds = np.unique(np.concatenate([[0], cuts + 1, [nb]]).clip(0, nb))
    groups = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    out = _Out(np.empty(total, dtype=np.int64),
               None if (final or with_vals) else np.empty(total, dtype=np.int64),
               np.empty((total,) + tuple(q)) if (final or with_vals) else None)
    want_vals = out.vals is not None
    track = with_counts or with_vals
    # consecutive shares of the groups merged in threads (numpy's sorts and
    # gathers release the GIL): share k writes from the first entry of its
    # buckets (its distinct keys never outnumber its entries), then moves down
    starts = [int(ends[b0 - 1]) if b0 else 0 for b0, _ in groups]
    shares = _shares(starts, total, min(merge_threads(), len(groups))
                     if total >= _PARALLEL_ENTRIES else 1)

    def merge_share(k: int) -> int:
        o = out if k == 0 else _Out(out.keys, out.counts, out.vals)
        a, b = shares[k], shares[k + 1]
        at = starts[a] if a < len(groups) else total
        pos = at
        for b0, b1 in groups[a:b]:  # one after the other, each written where the last ended
            pos += _merge_group(space, q, runs, b0, b1, per_bucket[b0:b1], o, pos, track,
                                want_vals)
        return pos - at

    nshare = len(shares) - 1
    if nshare == 1:
        pos = merge_share(0)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(nshare - 1) as ex:
            futures = [ex.submit(merge_share, k) for k in range(1, nshare)]
            written = [merge_share(0)] + [f.result() for f in futures]
        pos = written[0]
        for k in range(1, nshare):
            at = starts[shares[k]] if shares[k] < len(groups) else total
            for a in (out.keys, out.counts, out.vals):
                if a is not None:
                    _move_down(a, at, pos, written[k])
            pos += written[k]
    for a in (out.keys, out.counts, out.vals):
        if a is not None:
            a.resize((pos,) + a.shape[1:], refcheck=False)  # in place: frees the tail
    return out.keys, out.counts, out.vals


def merge_threads() -> int:
    """Threads for the final merge: the cores this process may use, at most
    :data:`MAX_MERGE_THREADS`."""
    import os
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_MERGE_THREADS))


def _shares(starts: list[int], total: int, k: int) -> list[int]:
    """Cuts of the groups into ``k`` consecutive shares of about equal entries
    (``starts``: each group's first entry); returns group indices ``0 = c_0 < ... =
    len(starts)``."""
    if k <= 1:
        return [0, len(starts)]
    cuts = np.searchsorted(np.asarray(starts), total * np.arange(1, k) / k, side="left")
    return [0] + sorted({int(c) for c in cuts if 0 < c < len(starts)}) + [len(starts)]


def _move_down(a: np.ndarray, src: int, dst: int, n: int) -> None:
    """``a[dst:dst + n] = a[src:src + n]`` for ``dst <= src``, in pieces that do not
    overlap (no temporary copy of the whole range)."""
    if n == 0 or src == dst:
        return
    step = min(src - dst, 1 << 22)
    for i in range(0, n, step):
        m = min(step, n - i)
        a[dst + i:dst + i + m] = a[src + i:src + i + m]


def _row_width(tot: np.ndarray) -> int:
    """Width of the padded rows: a power of 2 holding nearly every bucket (the few
    longer ones are sorted on their own)."""
    nz = tot[tot > 0]
    w = float(nz.max())
    if len(nz) > 200:  # a few long buckets do not widen every row
        w = min(w, 1.5 * float(np.quantile(nz, 0.995)))
    return min(_MAX_ROW, 1 << max(int(np.ceil(w)) - 1, 7).bit_length())


def _merge_group(space: KeySpace, q, runs, b0: int, b1: int, tot: np.ndarray, out: _Out,
                 start: int, track: bool, want_vals: bool) -> int:
    """Merge buckets ``[b0, b1)`` of all runs into ``out`` at ``start``; returns
    the number of distinct keys written.

    Every bucket is one row of a padded matrix (sentinel: the largest value of the
    type, so that a row's first ``tot`` entries after sorting are its own);
    buckets longer than the rows are sorted on their own.  With ``track`` (counts
    or values to carry) each entry's slot in its row is packed below its key, so
    that sorting the row also gives where each entry came from.
    """
    nrow = b1 - b0
    if int(tot.sum()) == 0:
        return 0
    width = _row_width(tot)
    big = tot > width
    any_big = bool(big.any())
    slot_bits = width.bit_length()  # slots < width: a packed entry is never the sentinel
    if track:
        pdt = np.uint32 if space.shift + slot_bits <= 32 else np.uint64
    else:
        pdt = space.local_dtype
    buf = out.temp("buf", (nrow * width,), pdt)
    buf.fill(np.iinfo(pdt).max)
    src = np.empty(nrow * width, dtype=np.int64) if track else None
    idt = np.intp  # slot numbers (an index of this type is scattered fastest)
    base = np.arange(nrow, dtype=idt) * idt(width)
    filled = np.zeros(nrow, dtype=idt)
    gcounts, gvals = [], []  # the group's entries' counts / blocks (track)
    big_pieces: list[tuple[int, int, int, int, int]] = []  # bucket, entry id, n, run, at
    goff = 0
    for j, r in enumerate(runs):
        o = r.offsets
        lo, hi = int(o[b0]), int(o[b1])
        if hi == lo:
            continue
        cnt = np.diff(o[b0:b1 + 1])
        sub = r.keys[lo:hi]
        if track:
            gcounts.append(np.ones(hi - lo, dtype=np.int64) if r.counts is None
                           else r.counts[lo:hi])
            if want_vals:
                gvals.append(_vals_of(None if r.counts is None else r.counts[lo:hi],
                                      None if r.vals is None else r.vals[lo:hi], hi - lo, q))
        ids = None
        if any_big:
            for b in np.flatnonzero(big & (cnt > 0)):
                at = int(o[b0 + b])
                big_pieces.append((int(b), goff + at - lo, int(cnt[b]), j, at))
            ids = np.flatnonzero(np.repeat(~big, cnt))
            sub = sub[ids]
            cnt = np.where(big, 0, cnt)
        cnt = cnt.astype(idt)
        dest = np.repeat(base + filled - (np.cumsum(cnt, dtype=idt) - cnt), cnt)
        dest += np.arange(len(sub), dtype=idt)
        filled += cnt
        if track:
            slot = (dest - np.repeat(base, cnt)).astype(pdt)
            buf[dest] = (sub.astype(pdt) << pdt(slot_bits)) | slot
            src[dest] = goff + (np.arange(hi - lo, dtype=np.int64) if ids is None else ids)
        else:
            buf[dest] = sub
        goff += hi - lo
    buf = buf.reshape(nrow, width)
    # short rows sort in registers; long rows of 16-bit keys by a radix sort
    buf.sort(axis=1, kind="stable" if (width > 512 and pdt == np.uint16) else None)
    tot_s = np.where(big, 0, tot)
    mask = np.less(np.arange(width)[None, :], tot_s[:, None],
                   out=out.temp("mask", (nrow, width), bool))
    if not track and not big_pieces:
        return _emit_rows(space, buf, mask, tot_s, b0, b1, q, out, start, want_vals)
    order = None
    if track:
        slot = buf & pdt((1 << slot_bits) - 1)
        buf >>= pdt(slot_bits)
        slot = slot.astype(np.intp)
        slot += base[:, None]
        order = src[slot[mask]]  # the group's entry ids in sorted order
        del src, slot
    kdt = space.key_dtype
    keys = buf.astype(kdt)
    del buf
    keys |= (np.arange(b0, b1, dtype=kdt) << kdt(space.shift))[:, None]
    keys = keys[mask]
    del mask
    if big_pieces:
        keys, order = _splice_bigs(space, runs, big_pieces, tot_s, b0, keys, order)
    gc = np.concatenate(gcounts) if track else None
    gv = np.concatenate(gvals) if (track and want_vals) else None
    return _emit(keys, order, gc, gv, q, out, start, want_vals)


def _emit_rows(space: KeySpace, buf: np.ndarray, mask: np.ndarray, tot: np.ndarray,
               b0: int, b1: int, q, out: _Out, start: int, want_vals: bool) -> int:
    """Run-length encode sorted rows of local keys (row ``r``: bucket ``b0 + r``, its
    ``tot[r]`` entries where ``mask``) into ``out`` at ``start``, each entry
    counting once."""
    nrow, width = buf.shape
    rep = np.equal(buf[:, 1:], buf[:, :-1], out=out.temp("rep", (nrow, width - 1), bool))
    rep &= mask[:, 1:]  # repeats: equal to the entry before
    r, c = np.nonzero(rep)
    distinct = out.temp("distinct", (nrow, width), bool)
    distinct[...] = mask
    distinct[:, 1:] ^= rep
    per_row = tot - np.bincount(r, minlength=len(tot))
    m = int(per_row.sum())
    keys = out.keys[start:start + m]
    np.add(np.repeat(np.arange(b0, b1, dtype=np.int64) << space.shift, per_row),
           buf[distinct], out=keys)
    # the k-th repeat of row r, at column c, adds 1 to the row's distinct key
    # number c - k - 1 (c - k distinct entries up to it)
    k = np.arange(len(r)) - np.searchsorted(r, r)
    dup = (np.cumsum(per_row) - per_row)[r] + c - k
    cnt = out.vals[start:start + m].reshape(m, -1) if want_vals else \
        out.counts[start:start + m, None]
    cnt.fill(1)
    if len(dup):
        head = np.empty(len(dup), dtype=bool)  # dup is sorted: its run lengths
        head[0] = True
        np.not_equal(dup[1:], dup[:-1], out=head[1:])
        at = np.flatnonzero(head)
        cnt[dup[at]] += np.diff(np.append(at, len(dup)))[:, None]
    return m


def _splice_bigs(space: KeySpace, runs, pieces, tot_s: np.ndarray, b0: int,
                 keys: np.ndarray, order):
    """Insert the long buckets, each sorted on its own, at their place."""
    at = np.concatenate([[0], np.cumsum(tot_s)])
    by_bucket: dict[int, list] = {}
    for b, ent, n, j, pos in pieces:
        by_bucket.setdefault(b, []).append((ent, n, j, pos))
    out_k, out_o = [], []
    prev = 0
    for b in sorted(by_bucket):
        cut = int(at[b])
        out_k.append(keys[prev:cut])
        if order is not None:
            out_o.append(order[prev:cut])
        parts = by_bucket[b]
        loc = np.concatenate([runs[j].keys[pos:pos + n] for _, n, j, pos in parts])
        whole = ((b0 + b) << space.shift) | loc.astype(keys.dtype)
        whole = whole.astype(keys.dtype, copy=False)
        if order is None:
            out_k.append(np.sort(whole))
        else:
            ent = np.concatenate([e + np.arange(n, dtype=np.int64) for e, n, _, _ in parts])
            o = np.argsort(whole, kind="stable")
            out_k.append(whole[o])
            out_o.append(ent[o])
        prev = cut
    out_k.append(keys[prev:])
    if order is not None:
        out_o.append(order[prev:])
    return np.concatenate(out_k), (np.concatenate(out_o) if order is not None else None)


def _emit(keys: np.ndarray, order, gc, gv, q, out: _Out, start: int,
          want_vals: bool) -> int:
    """Run-length encode the sorted ``keys`` into ``out`` at ``start`` (counts or
    blocks gathered through ``order`` from the group's ``gc`` / ``gv``)."""
    n = len(keys)
    first = np.empty(n, dtype=bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    m = int(np.count_nonzero(first))
    out.keys[start:start + m] = keys[first]
    if order is None:  # every entry counts once: 1 plus the repeats that follow it
        dup = np.flatnonzero(~first)
        dup -= np.arange(1, len(dup) + 1)  # the distinct key each repeat belongs to
        head = np.empty(len(dup), dtype=bool)  # dup is sorted: its run lengths
        head[:1] = True
        np.not_equal(dup[1:], dup[:-1], out=head[1:])
        at = np.flatnonzero(head)
        extra = np.diff(np.append(at, len(dup)))
        c = out.vals[start:start + m].reshape(m, -1) if want_vals else \
            out.counts[start:start + m, None]
        c.fill(1)
        c[dup[at]] += extra[:, None]
        return m
    begin = np.flatnonzero(first)
    del first
    if want_vals:
        out.vals[start:start + m] = np.add.reduceat(gv[order], begin, axis=0)
    else:
        out.counts[start:start + m] = np.add.reduceat(gc[order], begin)
    return m
