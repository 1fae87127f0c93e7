"""pipelines.ingest / pipelines.adapters: real samples, a RetailRocket fixture, contract CSV/Parquet, s3:// via moto."""
from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.adapters import ADAPTERS, detect_layout, map_event_types
from pipelines.errors import UserError
from pipelines.ingest import FORMATS, ingest
from pipelines.schema import EVENT_TYPES, REQUIRED_EVENT_COLUMNS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ecommerce"
if not DATA.exists():  # checkouts that carry shared/ inside the repository
    DATA = Path(__file__).resolve().parents[1] / "shared" / "datasets" / "ecommerce"
REES46 = DATA / "rees46_2019-Oct-sample.csv"
TAOBAO = DATA / "taobao_UserBehavior_sample.csv"
needs_samples = pytest.mark.skipif(not (REES46.exists() and TAOBAO.exists()), reason="real samples not on disk")

# A few lines in the real RetailRocket events.csv shape (epoch milliseconds, transactionid only on transactions).
RETAILROCKET_CSV = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,111016,addtocart,318965,
1433222276276,483717,transaction,253185,9282
1433221955914,483717,addtocart,253185,
1433223236124,951259,wishlist,367447,
"""

CONTRACT_CSV = """event_time,user_id,event_type,price,device_id,coupon_code
2024-03-01T10:00:00Z,007,login,,dev-1,
2024-03-01T10:05:00+01:00,007,purchase,19.90,dev-1,SPRING10
1709287500,0042,VIEW,,,
,12,cart,3.5,dev-9,
"""


def data_rows(path: Path, header: bool) -> int:
    with open(path, "rb") as fh:
        lines = [line for line in fh.read().splitlines() if line.strip()]
    return len(lines) - (1 if header else 0)


def assert_contract_columns(df: pd.DataFrame) -> None:
    for col in REQUIRED_EVENT_COLUMNS:
        assert col in df.columns


# --- real samples -----------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("fmt", ["auto", "rees46"])
def test_rees46_sample(fmt):
    raw = pd.read_csv(REES46, dtype=str)
    assert data_rows(REES46, header=True) == len(raw) == 1000
    df = ingest(str(REES46), fmt)
    assert len(df) == 1000
    assert_contract_columns(df)
    assert {"session_id", "product_id", "category", "price", "brand"} <= set(df.columns)
    assert not {"user_session", "category_code", "category_id"} & set(df.columns)
    # event types pass through: REES46's are contract types already
    assert set(df["event_type"]) <= set(EVENT_TYPES)
    assert df["event_type"].value_counts().to_dict() == raw["event_type"].value_counts().to_dict()
    # not cleaned yet: the time is the text as given, ids are text
    assert df["event_time"].iloc[0] == raw["event_time"].iloc[0] == "2019-10-01 00:00:00 UTC"
    assert df["user_id"].tolist() == raw["user_id"].tolist()
    assert df["session_id"].tolist() == raw["user_session"].tolist()
    # category = category_code, else category_id (first row has no code)
    expected = raw["category_code"].where(raw["category_code"].notna(), raw["category_id"])
    assert df["category"].tolist() == expected.tolist()
    assert df["category"].iloc[0] == "2103807459595387724"
    assert df["category"].iloc[1] == "appliances.environment.water_heater"
    assert df["category"].notna().all()


@needs_samples
@pytest.mark.parametrize("fmt", ["auto", "taobao"])
def test_taobao_sample(fmt):
    raw = pd.read_csv(TAOBAO, header=None, dtype=str, names=["user_id", "item_id", "category_id", "behavior_type", "timestamp"])
    assert data_rows(TAOBAO, header=False) == len(raw) == 4321
    df = ingest(str(TAOBAO), fmt)
    assert len(df) == 4321
    assert_contract_columns(df)
    assert {"product_id", "category", "source_event_type"} <= set(df.columns)
    # the first line is data, not a header
    assert df.iloc[0][["user_id", "product_id", "category", "event_time"]].tolist() == ["1", "2268318", "2520377", "1511544070"]
    assert df["source_event_type"].tolist() == raw["behavior_type"].tolist()
    pairs = df.groupby(["source_event_type", "event_type"]).size().to_dict()
    counts = raw["behavior_type"].value_counts().to_dict()
    assert pairs == {
        ("pv", "view"): counts["pv"],
        ("buy", "purchase"): counts["buy"],
        ("cart", "cart"): counts["cart"],
        ("fav", "view"): counts["fav"],  # documented choice: a favourite counts as a view
    }
    assert set(df["event_type"]) <= set(EVENT_TYPES)
    assert df["event_time"].tolist() == raw["timestamp"].tolist()  # epoch seconds as given, still text


@needs_samples
def test_samples_survive_cleaning():
    from pipelines.clean import clean

    for path, n in ((REES46, 1000), (TAOBAO, 4321)):
        clean_events, quarantine, report = clean(ingest(str(path)))
        assert report["rows_in"] == n and report["identity_holds"]
        assert report["rows_quarantined"] == 0


# --- RetailRocket fixture -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["auto", "retailrocket"])
def test_retailrocket_fixture(tmp_path, fmt):
    path = tmp_path / "events.csv"
    path.write_text(RETAILROCKET_CSV)
    df = ingest(str(path), fmt)
    assert len(df) == 6
    assert_contract_columns(df)
    assert df["event_time"].tolist()[:2] == ["1433221332117", "1433224214164"]  # epoch ms, as given
    assert df["user_id"].tolist()[:3] == ["257597", "992329", "111016"]
    assert df["product_id"].iloc[3] == "253185"
    # unmappable "wishlist" passes through so cleaning can quarantine it with a reason
    assert df["event_type"].tolist() == ["view", "view", "cart", "purchase", "cart", "wishlist"]
    assert df["source_event_type"].tolist() == ["view", "view", "addtocart", "transaction", "addtocart", "wishlist"]
    assert df["transactionid"].iloc[3] == "9282" and df["transactionid"].isna().sum() == 5
    assert not {"visitorid", "itemid", "event", "timestamp"} & set(df.columns)


def test_retailrocket_unknown_type_is_quarantined_not_dropped(tmp_path):
    from pipelines.clean import clean

    path = tmp_path / "events.csv"
    path.write_text(RETAILROCKET_CSV)
    clean_events, quarantine, report = clean(ingest(str(path)))
    assert report["rows_in"] == 6 and report["identity_holds"]
    assert quarantine["quarantine_reason"].tolist() == ["unknown event_type"]
    assert clean_events["event_time"].min() == pd.Timestamp("2015-06-02 05:02:12.117", tz="UTC")  # read as ms


def test_map_event_types_is_case_insensitive_and_keeps_unknowns():
    values = pd.Series([" PV", "Buy", "fav", "click", None], dtype="str")
    mapped = map_event_types(values, {"pv": "view", "buy": "purchase", "fav": "view"})
    assert mapped.tolist()[:4] == ["view", "purchase", "view", "click"]
    assert pd.isna(mapped.iloc[4])


# --- contract CSV / Parquet / gzip --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["auto", "contract"])
def test_contract_csv_is_read_as_text(tmp_path, fmt):
    path = tmp_path / "events.csv"
    path.write_text(CONTRACT_CSV)
    df = ingest(str(path), fmt)
    assert len(df) == 4
    assert df["user_id"].tolist() == ["007", "007", "0042", "12"]  # leading zeros kept
    assert df["event_time"].iloc[2] == "1709287500"  # epoch left for cleaning
    assert df["event_type"].iloc[2] == "VIEW"  # case left for cleaning
    assert pd.isna(df["event_time"].iloc[3])  # empty -> missing, cleaning quarantines it
    assert df["price"].iloc[1] == "19.90"
    assert "coupon_code" in df.columns and df["coupon_code"].iloc[1] == "SPRING10"  # extra column kept
    assert all(pd.api.types.is_string_dtype(df[c]) for c in df.columns)


def test_gzipped_csv_and_tsv(tmp_path):
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(CONTRACT_CSV.encode()))
    assert ingest(str(gz))["user_id"].tolist() == ["007", "007", "0042", "12"]
    taobao_gz = tmp_path / "UserBehavior.csv.gz"  # header-less detection through gzip
    taobao_gz.write_bytes(gzip.compress(b"1,2268318,2520377,pv,1511544070\n1,2333346,2520771,fav,1511561733\n"))
    df = ingest(str(taobao_gz))
    assert df["event_type"].tolist() == ["view", "view"] and df["source_event_type"].tolist() == ["pv", "fav"]
    tsv = tmp_path / "events.tsv"
    tsv.write_text(CONTRACT_CSV.replace(",", "\t"))
    assert ingest(str(tsv))["user_id"].tolist() == ["007", "007", "0042", "12"]


def test_taobao_with_header_row(tmp_path):
    path = tmp_path / "taobao.csv"
    path.write_text("user_id,item_id,category_id,behavior_type,timestamp\n1,2268318,2520377,buy,1511544070\n")
    for fmt in ("auto", "taobao"):
        df = ingest(str(path), fmt)
        assert len(df) == 1 and df["event_type"].iloc[0] == "purchase" and df["product_id"].iloc[0] == "2268318"


def test_parquet_keeps_types(tmp_path):
    table = pa.table(
        {
            "event_time": pa.array([pd.Timestamp("2024-03-01 10:00", tz="UTC")] * 3, pa.timestamp("us", tz="UTC")),
            "user_id": ["007", "008", "009"],
            "event_type": ["view", "cart", "purchase"],
            "price": pa.array([None, 2.5, 10.0], pa.float64()),
            "quantity": pa.array([1, None, 3], pa.int64()),
            "campaign": ["a", None, "c"],
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    df = ingest(str(path))
    assert len(df) == 3
    assert df["user_id"].tolist() == ["007", "008", "009"]
    assert pd.api.types.is_datetime64_any_dtype(df["event_time"])
    assert df["price"].dtype == "float64"
    assert str(df["quantity"].dtype) == "Int64" and df["quantity"].tolist()[0] == 1  # nulls do not force float
    assert "campaign" in df.columns


def test_parquet_rees46_with_integer_ids(tmp_path):
    big = 2053013552326770905  # beyond float64's exact integers
    df_in = pd.DataFrame(
        {
            "event_time": ["2019-10-01 00:00:00 UTC", "2019-10-01 00:00:01 UTC"],
            "event_type": ["view", "purchase"],
            "product_id": [1, 2],
            "category_id": pa.array([big, None], pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get),
            "category_code": [None, "electronics.smartphone"],
            "brand": ["x", "y"],
            "price": [1.0, 2.0],
            "user_id": [5, 6],
            "user_session": ["s1", "s2"],
        }
    )
    path = tmp_path / "rees.parquet"
    df_in.to_parquet(path, index=False)
    df = ingest(str(path))
    assert df["category"].tolist() == [str(big), "electronics.smartphone"]
    assert df["session_id"].tolist() == ["s1", "s2"]


def test_parquet_without_extension_is_sniffed(tmp_path):
    path = tmp_path / "events_export"
    pd.DataFrame({"event_time": ["2024-01-01"], "user_id": ["1"], "event_type": ["login"]}).to_parquet(path)
    assert len(ingest(str(path))) == 1


# --- errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        ingest(str(tmp_path / "nope.csv"))


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        ingest(str(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("event_time,user_id,event_type\n")
    with pytest.raises(UserError, match="no events"):
        ingest(str(header_only))


def test_missing_required_columns_are_listed(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,event_type\n1,login\n")
    with pytest.raises(UserError, match="missing required column\\(s\\) event_time") as exc:
        ingest(str(path))
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="event_time"):
        ingest(str(path), "contract")
    rr = tmp_path / "rr.csv"
    rr.write_text("timestamp,visitorid,itemid\n1433221332117,1,2\n")
    with pytest.raises(UserError, match="missing required column\\(s\\) event for format retailrocket"):
        ingest(str(rr), "retailrocket")


def test_unrecognised_layout(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order,amount\n1,2\n")
    with pytest.raises(UserError, match="unrecognised events layout.*order, amount.*rees46, taobao, retailrocket"):
        ingest(str(path))


def test_bad_format_name(tmp_path):
    with pytest.raises(UserError, match="unknown events format 'csv'; use one of: auto, contract, rees46, taobao, retailrocket"):
        ingest(str(tmp_path / "whatever.csv"), "csv")
    assert FORMATS == ("auto", *ADAPTERS)


def test_bad_parquet_and_malformed_csv(tmp_path):
    fake = tmp_path / "events.parquet"
    fake.write_text("event_time,user_id,event_type\n")
    with pytest.raises(UserError, match="not a valid Parquet file"):
        ingest(str(fake))
    bad = tmp_path / "bad.csv"
    bad.write_text("event_time,user_id,event_type\n2024-01-01,1,login\n2024-01-01,2,login,extra,fields\n")
    with pytest.raises(UserError, match="malformed CSV"):
        ingest(str(bad))


def test_files_that_are_not_csv_say_what_they_are(tmp_path):
    import zipfile

    html = tmp_path / "page.csv"
    html.write_text("<!DOCTYPE html>\n<html><body>Sign in</body></html>\n")
    with pytest.raises(UserError, match="HTML or XML, not CSV"):
        ingest(str(html))
    jsonl = tmp_path / "events.csv"
    jsonl.write_text('{"event_time": "2024-03-01", "user_id": "a", "event_type": "view"}\n')
    with pytest.raises(UserError, match="JSON, not CSV"):
        ingest(str(jsonl))
    xlsx = tmp_path / "sheet.csv"
    with zipfile.ZipFile(xlsx, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(UserError, match="an Excel workbook, not CSV; export the sheet as CSV"):
        ingest(str(xlsx))
    one = tmp_path / "one.csv"
    with zipfile.ZipFile(one, "w") as archive:
        archive.writestr("events.csv", CONTRACT_CSV)
    assert len(ingest(str(one))) == 4  # a zip holding one CSV is read
    truncated = tmp_path / "truncated.csv"
    truncated.write_bytes(one.read_bytes()[:40])
    with pytest.raises(UserError, match="damaged or truncated zip archive"):
        ingest(str(truncated))


def test_duplicate_header_names_are_refused(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("event_time,user_id,event_type,price,price\n2024-03-01,1,view,1,2\n")
    with pytest.raises(UserError, match="duplicate column name\\(s\\) price in the header"):
        ingest(str(path))
    table = pa.table([pa.array(["2024-03-01"]), pa.array(["1"]), pa.array(["view"]), pa.array(["a"])],
                     names=["event_time", "user_id", "event_type", "event_type"])
    pq.write_table(table, tmp_path / "events.parquet")
    with pytest.raises(UserError, match="duplicate column name\\(s\\) event_type"):
        ingest(str(tmp_path / "events.parquet"))


def test_a_pipe_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "events.csv"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        ingest(str(fifo))


def test_ingest_stamps_the_ingest_time(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(CONTRACT_CSV)
    before = pd.Timestamp.now(tz="UTC")
    stamped = pd.Timestamp(ingest(str(path)).attrs["ingested_at"])
    assert before <= stamped <= pd.Timestamp.now(tz="UTC")


def test_detect_layout_order():
    rees = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"]
    assert detect_layout(rees) == "rees46"  # not "contract", although it has the three required columns
    assert detect_layout(["event_time", "user_id", "event_type", "session_id"]) == "contract"
    assert detect_layout(["timestamp", "visitorid", "event", "itemid", "transactionid"]) == "retailrocket"
    assert detect_layout(["a", "b"]) is None


# --- s3:// through a local moto server ------------------------------------------------------------


def test_s3_csv_and_parquet(s3, tmp_path):
    s3.put_object(Bucket="events", Key="raw/2024-03-01/events.csv", Body=CONTRACT_CSV.encode())
    df = ingest("s3://events/raw/2024-03-01/events.csv")
    assert df["user_id"].tolist() == ["007", "007", "0042", "12"] and "coupon_code" in df.columns

    local = tmp_path / "events.parquet"
    pd.DataFrame({"event_time": [1709287500], "user_id": ["007"], "event_type": ["view"]}).to_parquet(local, index=False)
    s3.upload_file(str(local), "events", "raw/events.parquet")
    df = ingest("s3://events/raw/events.parquet")
    assert df["user_id"].tolist() == ["007"] and df["event_time"].dtype == "int64"

    s3.put_object(Bucket="events", Key="rr/events.csv.gz", Body=gzip.compress(RETAILROCKET_CSV.encode()))
    df = ingest("s3://events/rr/events.csv.gz", "retailrocket")
    assert len(df) == 6 and df["event_type"].iloc[3] == "purchase"


def test_s3_missing_object(s3):
    with pytest.raises(UserError, match="cannot download from S3"):
        ingest("s3://events/no/such/events.csv")
