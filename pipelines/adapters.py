"""Adapters: public e-commerce event data sets -> the contract's column names (contract section 1).

Each adapter renames and maps; it does not coerce types, parse times or drop rows. That is
cleaning's job, so every adapter returns exactly as many rows as it was given, and a value it
cannot map (an unknown event type, say) is passed through unchanged for cleaning to quarantine
with a reason.

Mapping decisions (also in the report of the ingest step):

* REES46 ("eCommerce behavior data from multi category store"): event_time as given (text with
  a trailing " UTC"); event_type as given (view / cart / remove_from_cart / purchase are already
  contract types); category = category_code, or category_id where the code is empty;
  session_id = user_session; brand is kept as an extra column. category_id is dropped.
* Taobao UserBehavior (no header: user_id,item_id,category_id,behavior_type,timestamp):
  product_id = item_id, category = category_id, event_time = the epoch-seconds value as given;
  behaviour pv -> view, buy -> purchase, cart -> cart, fav -> view. The contract has no
  "favourite" type; a favourite is a view of the item that also bookmarks it, so it counts as
  engagement rather than being quarantined (3% of the sample). The original behaviour is kept in
  the extra column `source_event_type`, so nothing is lost and fav can be told apart from pv.
* RetailRocket events.csv (timestamp,visitorid,event,itemid,transactionid): event_time =
  timestamp (epoch milliseconds, as given; cleaning detects the unit), user_id = visitorid,
  product_id = itemid, event view -> view, addtocart -> cart, transaction -> purchase;
  transactionid is kept as an extra column and the original event in `source_event_type`.

Columns an adapter does not consume are kept as extras (the contract keeps unknown columns).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import pandas as pd

from pipelines.schema import EVENT_DTYPES, REQUIRED_EVENT_COLUMNS

SOURCE_EVENT_TYPE = "source_event_type"

TAOBAO_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
TAOBAO_BEHAVIOURS: dict[str, str] = {"pv": "view", "buy": "purchase", "cart": "cart", "fav": "view"}
RETAILROCKET_EVENTS: dict[str, str] = {"view": "view", "addtocart": "cart", "transaction": "purchase"}


def from_contract(df: pd.DataFrame) -> pd.DataFrame:
    """Already in the contract's shape: nothing to rename."""
    return df


def from_rees46(df: pd.DataFrame) -> pd.DataFrame:
    out = _rename(df, {"user_session": "session_id"})
    if "category_code" in df.columns or "category_id" in df.columns:
        code = _blank_to_na(df["category_code"]) if "category_code" in df.columns else None
        cid = _as_text(df["category_id"]) if "category_id" in df.columns else None
        category = code if cid is None else (cid if code is None else code.where(code.notna(), cid))
        out = out.drop(columns=[c for c in ("category_code", "category_id") if c in out.columns])
        out["category"] = category
    return _order(out)


def from_taobao(df: pd.DataFrame) -> pd.DataFrame:
    columns = {"item_id": "product_id", "category_id": "category", "timestamp": "event_time"}
    return _with_mapped_events(df, columns, "behavior_type", TAOBAO_BEHAVIOURS)


def from_retailrocket(df: pd.DataFrame) -> pd.DataFrame:
    columns = {"timestamp": "event_time", "visitorid": "user_id", "itemid": "product_id"}
    return _with_mapped_events(df, columns, "event", RETAILROCKET_EVENTS)


def _with_mapped_events(df: pd.DataFrame, columns: dict[str, str], source: str, mapping: dict[str, str]) -> pd.DataFrame:
    """Rename to contract columns and translate the source's event vocabulary, keeping the original."""
    out = _rename(df, columns).drop(columns=[source])
    out["event_type"] = map_event_types(df[source], mapping)
    out[SOURCE_EVENT_TYPE] = df[source]
    return _order(out)


@dataclass(frozen=True)
class Adapter:
    name: str
    convert: Callable[[pd.DataFrame], pd.DataFrame]
    required: tuple[str, ...]  # source columns the adapter cannot do without
    description: str


ADAPTERS: dict[str, Adapter] = {
    "contract": Adapter("contract", from_contract, REQUIRED_EVENT_COLUMNS, "contract columns event_time,user_id,event_type,..."),
    "rees46": Adapter(
        "rees46",
        from_rees46,
        ("event_time", "event_type", "user_id"),
        "REES46 event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
    ),
    "taobao": Adapter(
        "taobao",
        from_taobao,
        ("user_id", "item_id", "behavior_type", "timestamp"),
        "Taobao UserBehavior, no header: user_id,item_id,category_id,behavior_type,timestamp",
    ),
    "retailrocket": Adapter(
        "retailrocket",
        from_retailrocket,
        ("timestamp", "visitorid", "event"),
        "RetailRocket timestamp,visitorid,event,itemid,transactionid",
    ),
}


def detect_layout(columns: Iterable[str]) -> str | None:
    """The adapter whose layout these column names are, or None.

    REES46 is checked before the contract because its header also holds event_time, user_id and
    event_type; without that order it would be read as contract data and lose its session and
    category mapping.
    """
    cols = {str(c) for c in columns}
    if {"user_session", "category_code"} <= cols and "session_id" not in cols:
        return "rees46"
    if set(REQUIRED_EVENT_COLUMNS) <= cols:
        return "contract"
    if {"visitorid", "event"} <= cols:
        return "retailrocket"
    if {"behavior_type", "item_id"} <= cols:  # a Taobao file saved with its column names
        return "taobao"
    return None


def looks_like_taobao_row(values: Iterable[object]) -> bool:
    """A header-less first row of Taobao UserBehavior: 5 fields, the 4th a behaviour code."""
    values = [str(v).strip() for v in values]
    return len(values) == len(TAOBAO_COLUMNS) and values[3].lower() in TAOBAO_BEHAVIOURS


def map_event_types(values: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """Source event names -> contract types, case- and space-insensitively; unknown names unchanged."""
    key = values.astype("str").str.strip().str.lower()
    mapped = key.map(mapping)
    return mapped.where(mapped.notna(), values).where(values.notna())


def _rename(df: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    mapping = {src: dst for src, dst in mapping.items() if src in df.columns}
    # A target name that is also an unconsumed source column would be duplicated: the mapped one wins.
    clash = [dst for dst in mapping.values() if dst in df.columns and dst not in mapping]
    return df.drop(columns=clash).rename(columns=mapping)


def _as_text(col: pd.Series) -> pd.Series:
    """Ids as text without a detour through float ("2053013552326770905", never "2.05e18")."""
    if pd.api.types.is_string_dtype(col) and col.dtype != object:
        return _blank_to_na(col)
    if pd.api.types.is_float_dtype(col):
        whole = col.notna() & (col % 1 == 0)
        text = col.astype("str")
        text.loc[whole] = col[whole].astype("int64").astype("str")
        return text.where(col.notna())
    return _blank_to_na(col.astype("str").where(col.notna()))


def _blank_to_na(col: pd.Series) -> pd.Series:
    if not (pd.api.types.is_string_dtype(col) or col.dtype == object):
        return col
    text = col.astype("str")
    return text.where(col.notna() & text.str.strip().ne(""))


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first, in the contract's order; extras after, in source order."""
    first = [c for c in EVENT_DTYPES if c in df.columns]
    return df[first + [c for c in df.columns if c not in EVENT_DTYPES]]
