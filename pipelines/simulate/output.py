"""From the world's packed event buffer to the (events, labels) DataFrames of the contract.

Display numbers of sessions and devices are shuffled here (the last random draws of a run), so
an id says nothing about how or when it was made; string columns are built with pyarrow from
integer codes, two columns at a time.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.schema import EVENT_DTYPES, EVENT_TYPES
from pipelines.simulate.world import CATEGORIES, COUNTRY_CODES, PRICED, World, render_review_texts


def assemble(w: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, labels) from the world's event buffer: keep the events inside the window, sort
    them by time, unpack the columns and build the string columns from integer codes."""
    rng = w.rng
    if not w.blocks:  # nobody did anything
        empty = np.zeros(0, dtype=np.int64)
        w.blocks.append({"t": empty, "up": empty, "di": empty, "sess": empty, "small": empty})
    t = np.concatenate([b["t"] for b in w.blocks])
    keep = np.flatnonzero((t >= w.t0) & (t < w.t1))
    order = keep[np.argsort(t[keep], kind="stable")]
    del keep
    t = t[order]
    N = len(t)
    packed = {}
    for name in ("up", "di", "sess", "small"):
        packed[name] = np.concatenate([b[name] for b in w.blocks])[order]
    w.blocks = []
    del order
    lo32 = np.int64(0xFFFFFFFF)
    cols: dict[str, np.ndarray] = {
        "user": (packed["up"] >> 32).astype(np.int32),
        "prod": ((packed["up"] & lo32) - 1).astype(np.int32),
        "dev": ((packed["di"] >> 32) - 1).astype(np.int32),
        "ip": ((packed["di"] & lo32) - 1).astype(np.int32),
        "sess": (packed["sess"] - 1).astype(np.int32),
    }
    small = packed["small"]
    del packed
    cols["etype"] = (small & 0xFF).astype(np.int8)
    cols["ctry"] = (((small >> 8) & 0xFF) - 1).astype(np.int8)
    cols["rating"] = ((small >> 16) & 0xFF).astype(np.int8)
    cols["qty"] = ((small >> 24) & 0xFFFF).astype(np.int16)
    cols["text"] = (((small >> 40) & 0xFFFF) - 1).astype(np.int16)
    del small

    # display numbers are shuffled so that ids carry no information about how they were made
    sess_no = rng.permutation(w.n_sess)
    dev_no = rng.permutation(w.n_dev)
    ip_table = np.concatenate(w.ip_parts) if w.ip_parts else np.zeros(0, np.uint32)

    def ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
        width = max(width, len(str(max(int(numbers.max()) if len(numbers) else 0, 1))))
        s = pc.cast(pa.array(numbers.astype(np.int64) + 10**width), pa.large_string())
        return pc.utf8_replace_slice(s, 0, 1, prefix)

    def take(dictionary: pa.Array, idx: np.ndarray) -> pa.Array:
        """dictionary[idx] as a large_string array, null where idx < 0 (a dictionary cast is
        about twice as fast as pc.take here)."""
        mask = idx < 0
        arr = pa.array(idx, mask=mask) if mask.any() else pa.array(idx)
        return pa.DictionaryArray.from_arrays(arr, dictionary).cast(pa.large_string())

    def ip_strings() -> pa.Array:
        parts = [pc.cast(pa.array(((ip_table >> s) & 255).astype(np.int16)), pa.large_string()) for s in (24, 16, 8, 0)]
        return pc.binary_join_element_wise(*parts, pa.scalar(".", pa.large_string()))

    def review_texts() -> pa.Array:
        """The composed texts of the reviews that have one, spread over all N rows (null
        elsewhere) by building the offsets directly: no N-long index array."""
        rows = np.flatnonzero(cols["text"] >= 0)
        texts = render_review_texts(w, cols["text"][rows], cols["user"][rows], prod[rows])
        texts = pa.concat_arrays([texts])  # offset 0, offsets from 0
        lengths = np.diff(np.frombuffer(texts.buffers()[1], dtype=np.int64, count=len(texts) + 1))
        offsets = np.zeros(N + 1, dtype=np.int64)
        offsets[rows + 1] = lengths
        np.cumsum(offsets, out=offsets)
        valid = np.zeros(N, dtype=bool)
        valid[rows] = texts.is_valid().to_numpy(zero_copy_only=False)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        return pa.LargeStringArray.from_buffers(N, pa.py_buffer(offsets), texts.buffers()[2], validity,
                                                null_count=N - int(valid.sum()))

    cat_names = pa.array([c[0] for c in CATEGORIES], pa.large_string())
    prod = cols["prod"]
    jobs = {
        "user_id": lambda: take(ids("u", np.arange(w.U), 7), cols["user"]),
        "event_type": lambda: take(pa.array(list(EVENT_TYPES), pa.large_string()), cols["etype"]),
        "event_id": lambda: ids("e", np.arange(N), 10),
        "session_id": lambda: take(ids("s", sess_no, 8), cols["sess"]),
        "product_id": lambda: take(ids("p", np.arange(w.p["n_products"]), 6), prod),
        "category": lambda: take(cat_names, np.where(prod >= 0, w.prod_cat[np.maximum(prod, 0)], -1)),
        "device_id": lambda: take(ids("d", dev_no, 7), cols["dev"]),
        "ip": lambda: take(ip_strings(), cols["ip"]),
        "country": lambda: take(pa.array(list(COUNTRY_CODES), pa.large_string()), cols["ctry"]),
        "review_text": review_texts,
    }
    with ThreadPoolExecutor(2) as ex:
        futures = {k: ex.submit(f) for k, f in jobs.items()}
        strings = {k: f.result() for k, f in futures.items()}

    priced = PRICED[cols["etype"]] & (prod >= 0)
    price = np.where(priced, w.prod_price[np.maximum(prod, 0)], np.nan)
    qty = cols["qty"]
    rating = cols["rating"]
    data: dict[str, Any] = {}
    for name, dtype in EVENT_DTYPES.items():
        if name == "event_time":
            data[name] = pd.arrays.DatetimeArray._from_sequence(t.view("datetime64[us]"), dtype=pd.DatetimeTZDtype("us", "UTC"))
        elif name == "price":
            data[name] = price
        elif name == "quantity":
            data[name] = pd.arrays.IntegerArray(qty.astype(np.int64), qty <= 0)
        elif name == "rating":
            data[name] = pd.arrays.IntegerArray(rating.astype(np.int64), rating <= 0)
        else:
            data[name] = pd.array(strings[name], dtype="str")
    events = pd.DataFrame(data, copy=False)

    uid = pd.array(ids("u", np.arange(w.U), 7), dtype="str")
    names = np.array([""] + [s.name for s in w.scenarios], dtype=object)
    labels = pd.DataFrame(
        {
            "user_id": uid,
            "is_anomaly": (w.atype >= 0).astype(np.int64),
            "anomaly_type": pd.array(names[w.atype + 1], dtype="str"),
        }
    )
    return events, labels
