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

Chromium is driven over the DevTools protocol on a pipe with the standard library only, as
tests/test_report_browser.py does (a minimal copy of its Chromium class: that module is a test
module, with pytest fixtures and the tests' own data helpers).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAIN_DAY = "2026-11-17"
DAYS = ("2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21")
WIDTH, HEIGHT = 1280, 900
TIMEOUT_S = 120


class Chromium:
    """A headless Chromium with one page, spoken to over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, profile: Path, width: int = WIDTH, height: int = HEIGHT):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise SystemExit("error: chromium is not installed: run `make tools` (Debian package chromium)")
        to_r, self._to = os.pipe()
        self._from, from_w = os.pipe()

        def wire_fds():  # the browser reads commands on fd 3 and answers on fd 4
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--disable-background-networking", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_fds, pass_fds=(3, 4))
        os.close(to_r)
        os.close(from_w)
        self._buffer, self._next_id = b"", 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, path: Path) -> None:
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))

    def screenshot(self) -> bytes:
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call("Page.captureScreenshot", session=True, format="png", clip=clip, captureBeyondViewport=True)
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._to)
        os.close(self._from)


def run_days(root: Path, users: int) -> tuple[dict, Path]:
    """(params, labels path) of five scored days under `root`."""
    from pipelines import stages
    from pipelines.config import load_params, override
    from pipelines.simulate import simulate

    params = load_params(str(REPO / "params.yaml"))
    events, labels = simulate({**params["simulate"], "n_users": users})
    events.to_parquet(root / "events.parquet", index=False)
    labels.to_parquet(root / "labels.parquet", index=False)
    for key, value in (("storage", {"data": str(root / "data"), "reports": str(root / "reports"),
                                    "models": str(root / "models")}),
                       ("ingest.source", str(root / "events.parquet"))):
        params = override(params, key, value)
    for day in DAYS:
        stages.ingest_stage(params, day)
        stages.clean_stage(params, day)
        stages.features_stage(params, day)
        if day == TRAIN_DAY:
            stages.train_stage(params, day)
            stages.promote_stage(params, day)
        stages.score_stage(params, day)
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
    sys.path.insert(0, str(REPO))
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
        browser = Chromium(Path(tmp) / "profile")
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
