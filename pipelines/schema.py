"""The data contract (shared/contract/README.md) as code: one place for column names and types."""
from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = (
    "signup",
    "login",
    "login_failed",
    "view",
    "cart",
    "remove_from_cart",
    "purchase",
    "payment_failed",
    "refund",
    "review",
)

REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("event_time", "user_id", "event_type")

# Column -> pandas dtype after cleaning. event_time is tz-aware UTC; "str" is pandas 3's default
# (pyarrow-backed, NaN for missing), which is what Parquet round-trips to.
EVENT_DTYPES: dict[str, str] = {
    "event_time": "datetime64[us, UTC]",
    "user_id": "str",
    "event_type": "str",
    "event_id": "str",
    "session_id": "str",
    "product_id": "str",
    "category": "str",
    "price": "float64",
    "quantity": "Int64",
    "device_id": "str",
    "ip": "str",
    "country": "str",
    "rating": "Int64",
    "review_text": "str",
}

LABEL_COLUMNS: tuple[str, ...] = ("user_id", "is_anomaly", "anomaly_type")

SCORE_COLUMNS: tuple[str, ...] = ("user_id", "score", "rank", "flagged", "reasons", "model_version", "as_of")

FLAGGED_USERS_COLUMNS: tuple[str, ...] = (
    "as_of",
    "user_id",
    "score",
    "rank",
    "reasons",
    "anomaly_types",
    "model_version",
    "run_id",
    "scored_at",
)
