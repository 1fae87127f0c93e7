"""The run report in a real browser: Debian's headless Chromium (`.ci/run` / `make tools` install
it) opens the report from disk, driven over the DevTools protocol on a pipe (stdlib only:
tests/chromium.py, which docs/make_run_report_screenshot.py uses too). The page must load
without console errors or failed requests, every image must load (naturalWidth > 0), and a
screenshot of the whole page must not be blank. A control page with a broken image, a script
error and nothing drawn shows each check can fail."""
from __future__ import annotations

import io as pyio
import json
from pathlib import Path

import pytest

from chromium import Chromium, ChromiumMissing
from pipelines.layout import Layout
from report_data import DAYS, scored_days

IMAGES = "JSON.stringify([...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, done: i.complete})))"


def pixel_spread(png: bytes) -> tuple[float, tuple[int, int]]:
    """(standard deviation of the grey levels, size) of a screenshot."""
    from PIL import Image, ImageStat

    with Image.open(pyio.BytesIO(png)) as image:
        grey = image.convert("L")
        return ImageStat.Stat(grey).stddev[0], grey.size


def render(path: Path, profile: Path) -> tuple[list[str], list[dict], bytes]:
    try:
        browser = Chromium(profile)
    except ChromiumMissing as exc:  # CI installs it; a missing browser fails, never skips
        pytest.fail(str(exc))
    try:
        browser.open(path)
        images = json.loads(browser.evaluate(IMAGES))
        shot = browser.screenshot()
        return browser.problems(), images, shot
    finally:
        browser.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    params, labels = scored_days(root)
    from pipelines import stages

    stages.report_stage(params, DAYS[-1], labels=str(labels))  # the fullest report: with the labelled section
    return Path(Layout.from_params(params).run_report(DAYS[-1]))


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    problems, images, shot = render(report, tmp_path / "profile")
    assert problems == []
    assert len(images) == 14
    broken = [i for i, image in enumerate(images) if not (image["done"] and image["w"] > 0 and image["h"] > 0)]
    assert broken == []
    spread, (width, height) = pixel_spread(shot)
    assert width >= 1000 and height > 2000  # the whole page, not the first screen
    assert spread > 20, f"the screenshot looks blank (grey-level spread {spread:.1f})"
    (tmp_path / "report.png").write_bytes(shot)


def test_the_checks_catch_a_broken_page(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><img src='missing.png' alt='gone'>"
                      "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    problems, images, shot = render(broken, tmp_path / "profile")
    assert any("boom" in p for p in problems) and any("undefinedFunction" in p for p in problems)
    assert any("missing.png" in p or "ERR_FILE_NOT_FOUND" in p for p in problems)
    assert images and images[0]["w"] == 0
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    problems, images, shot = render(blank, tmp_path / "profile2")
    assert problems == [] and images == []
    assert pixel_spread(shot)[0] < 1
