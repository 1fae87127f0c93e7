"""The screenshot of the README's "Run report and drift" section (docs/run_report.png), made from
a real run report.

    python docs/make_run_report_screenshot.py [--users 3000] [--png docs/run_report.png] [--keep DIR]

It simulates a world (params.yaml's simulate section: seed 42, 28 days to 2026-11-21, with
`--users` users), runs ingest, clean and features for 2026-11-17 to 2026-11-21 in a temporary
folder (or DIR), trains and promotes a champion on 2026-11-17, scores every day (so the flags per
day chart has five bars), reruns the last day's report with the simulation's labels (the PR and
ROC curves, recall per abuse type), opens that report.html in Debian's headless Chromium and saves
a screenshot of the whole page, 1280 CSS pixels wide, to PNG (reduced to a 256-colour palette,
about 200 KB instead of 525 KB, as the page's flat colours allow; --lossless keeps every colour).
It prints the day's headline figures and drift verdict, and the PNG's size.

Chromium is driven over the DevTools protocol on a pipe with the standard library only, by
tests/chromium.py, the driver tests/test_report_browser.py uses.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _simulation import scored_days, simulated_world

REPO = Path(__file__).resolve().parents[1]
TRAIN_DAY = "2026-11-17"
DAYS = ("2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21")
WIDTH, HEIGHT = 1280, 900


def run_days(root: Path, users: int) -> tuple[dict, Path]:
    """(params, labels path) of five scored days under `root` (the simulation and the days as
    docs/make_drift_example.py runs them: docs/_simulation.py)."""
    from pipelines import stages

    params = simulated_world(root, users, labels=True)
    for _ in scored_days(params, DAYS, TRAIN_DAY):
        pass
    stages.report_stage(params, DAYS[-1], labels=str(root / "labels.parquet"))
    return params, root / "labels.parquet"


def palette_png(png: bytes) -> bytes:
    """The same picture with at most 256 colours (the page is flat colours and anti-aliased text)."""
    import io as pyio

    from PIL import Image

    with Image.open(pyio.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    out = pyio.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def write_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000, help="simulated users (3000)")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "run_report.png", help="where the screenshot goes")
    parser.add_argument("--lossless", action="store_true", help="keep Chromium's full-colour PNG")
    parser.add_argument("--keep", type=Path, default=None, help="run in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "docs")]
    from chromium import Chromium, ChromiumMissing
    from PIL import Image

    from pipelines import io
    from pipelines.layout import Layout

    with tempfile.TemporaryDirectory(prefix="run-report-shot-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        params, _ = run_days(root, args.users)
        lay = Layout.from_params(params)
        day = DAYS[-1]
        report = Path(lay.run_report(day))
        try:
            browser = Chromium(Path(tmp) / "profile", WIDTH, HEIGHT)
        except ChromiumMissing as exc:
            raise SystemExit(f"error: {exc}") from None
        try:
            browser.open(report)
            shot = browser.screenshot()
        finally:
            browser.close()
        write_atomic(shot if args.lossless else palette_png(shot), args.png)
        score, drift = io.read_json(lay.report(day, "score.json")), io.read_json(lay.report(day, "drift.json"))
        with Image.open(args.png) as image:
            size = image.size
    print(f"{day}: {score['users_scored']} users scored, {score['flagged']} flagged; drift {drift['status']} "
          f"({drift['users']} users today, {drift['reference_users']} in training; severe: "
          f"{', '.join(drift.get('severe', [])) or 'none'}; score PSI {drift['score']['psi']:.3f}); "
          f"report {report if args.keep else '(temporary)'}")
    print(f"wrote {args.png} ({size[0]} x {size[1]} px, {args.png.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
