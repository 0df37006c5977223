"""report.html in a real headless Chromium: the script runs, sorts from the address, payloads stay inert, and
projection videos (detect --video) play from the assets folder under the report's own Content-Security-Policy.

Needs Debian's chromium (`apt-get install -y chromium`; CI installs it). Without it these tests fail with that
advice, unless SGPROJECT_SKIP_BROWSER_TESTS=1 says to skip them. SGPROJECT_UPDATE_SCREENSHOT=1 also refreshes
docs/report_screenshot.png (the README's picture) from the fake report.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from detectors.report import write_reports
from tests.detectors.report_fixtures import PWNED, make_report
from tests.projector.videos import avc1_codecs

SKIP_ENV = "SGPROJECT_SKIP_BROWSER_TESTS"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report_screenshot.png"
TITLE = "Forensic report: images judged against portraits-64"


def _chromium() -> str:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser tests skipped")
    for name in (os.environ.get("SGPROJECT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail(
        "Chromium is needed for the report browser tests and was not found: install it with "
        f"`apt-get update && apt-get install -y chromium` (CI does), or set {SKIP_ENV}=1 to skip these tests",
        pytrace=False,
    )


def run_chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run on a fresh profile; console messages go to stderr."""
    exe = _chromium()
    with tempfile.TemporaryDirectory(prefix="sgproject-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
               "--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000", *args, url]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    fake = make_report(tmp_path_factory.mktemp("browser") / "run")
    write_reports(fake.dir, fake.rows, fake.run)
    return fake


def _dom(report, fragment: str = "") -> tuple[str, str]:
    result = run_chromium((report.dir / "report.html").as_uri() + fragment, "--dump-dom")
    return result.stdout, result.stderr


def _column(dom: str, key: str) -> list[str]:
    """The data-v values of one column, in the order the rows are in the DOM (None: no cell, e.g. error rows)."""
    rows = re.findall(r"<tr class=\"row-[a-z]+\">(.*?)</tr>", dom, re.S)
    out = []
    for row in rows:
        m = re.search(rf'data-col="{key}" data-v="([^"]*)"', row)
        out.append(m.group(1) if m else None)
    return out


def _title(dom: str) -> str:
    return re.search(r"<title>(.*?)</title>", dom, re.S).group(1)


def test_the_script_ran_the_rows_are_there_and_no_payload_executed(report):
    dom, log = _dom(report)
    assert re.search(r'<html lang="en" class="[^"]*\bjs\b', dom), "the report's own script did not run"
    assert _column(dom, "index") == [str(i) for i in range(1, 11)]  # default order
    assert _title(dom) == TITLE and PWNED not in _title(dom)
    assert "Content Security Policy" not in log, log  # the page's own style and script were allowed; nothing else tried
    assert "Uncaught" not in log, log


def test_sort_from_the_address_fragment(report):
    dom, _ = _dom(report, "#sort=lpips-desc")
    lpips = _column(dom, "lpips")
    values = [float(v) for v in lpips if v is not None]
    assert len(values) == 8 and values == sorted(values, reverse=True)
    assert lpips[-2:] == [None, None]  # rows that could not be judged go last
    assert re.search(r'<th [^>]*data-key="lpips"[^>]*aria-sort="descending"', dom)

    dom, _ = _dom(report, "#sort=psnr-asc")
    psnr = [float(v) for v in _column(dom, "psnr") if v is not None]
    assert psnr == sorted(psnr)


def test_an_unknown_sort_key_in_the_address_is_ignored(report):
    dom, log = _dom(report, "#sort=__proto__-desc")
    assert _column(dom, "index") == [str(i) for i in range(1, 11)]
    assert "Uncaught" not in log, log


def test_screenshot(report, tmp_path):
    shot = tmp_path / "report.png"
    run_chromium((report.dir / "report.html").as_uri(), f"--screenshot={shot}", "--window-size=1440,2000")
    with Image.open(shot) as im:
        assert im.size == (1440, 2000)
        colours = im.convert("RGB").resize((72, 100)).getcolors(72 * 100)
        assert colours is not None and len(colours) > 50  # rendered content, not a blank page
    if os.environ.get("SGPROJECT_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)


# ------------------------------------------------------------------------------------------------------- videos

# What the page itself can tell: the probe is added to a copy of report.html, and its hash to script-src alone, so
# the videos load under the report's own media policy. It reports, per <video>, what the browser made of it once
# each has its metadata (or an error), and whether a remote video is refused.
PROBE = """
(function () {
  "use strict";
  var out = document.createElement("pre");
  out.id = "probe";
  var codecs = document.body.getAttribute("data-probe-codecs");
  var videos = Array.prototype.slice.call(document.querySelectorAll("video"));
  var blocked = [];
  document.addEventListener("securitypolicyviolation", function (e) {
    blocked.push({ uri: e.blockedURI, directive: e.effectiveDirective });
  });
  var remote = document.createElement("video");
  remote.muted = true;
  remote.src = "https://example.com/remote.mp4";
  function settled(v) {
    return new Promise(function (resolve) {
      if (v.readyState >= 1 || v.error) { resolve(); return; }
      v.addEventListener("loadedmetadata", resolve);
      v.addEventListener("error", resolve);
      v.load();
    });
  }
  Promise.all(videos.map(settled)).then(function () {
    setTimeout(function () {
      out.textContent = JSON.stringify({
        canPlay: document.createElement("video").canPlayType('video/mp4; codecs="' + codecs + '"'),
        videos: videos.map(function (v) {
          return { src: v.getAttribute("src"), readyState: v.readyState,
                   duration: isFinite(v.duration) ? v.duration : String(v.duration),
                   error: v.error ? v.error.code : null, width: v.videoWidth, height: v.videoHeight };
        }),
        blocked: blocked
      });
      document.body.appendChild(out);
    }, 200);
  });
})();
"""


def _with_probe(html: str, codecs: str) -> str:
    """report.html plus the probe script, allowed by its hash; every other directive of the policy unchanged."""
    digest = base64.b64encode(hashlib.sha256(PROBE.encode()).digest()).decode()
    html, n = re.subn(r"(script-src 'sha256-[^']+')", rf"\1 'sha256-{digest}'", html, count=1)
    assert n == 1
    html = html.replace("<body>", f'<body data-probe-codecs="{codecs}">', 1)
    return html.replace("</body>", f"<script>{PROBE}</script></body>", 1)


def test_projection_videos_play_in_the_browser(tmp_path):
    fake = make_report(tmp_path / "run", videos=True)
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    assert "media-src 'self'" in html
    codecs = avc1_codecs(fake.dir / fake.rows[0]["video"])
    probe = fake.dir / "probe.html"  # beside report.html: the same relative paths to assets/
    probe.write_text(_with_probe(html, codecs), encoding="utf-8")

    result = run_chromium(probe.as_uri(), "--dump-dom", "--autoplay-policy=no-user-gesture-required")
    m = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert m, result.stderr[-3000:]
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert got["canPlay"] in ("probably", "maybe"), (codecs, got)
    assert [v["src"] for v in got["videos"]] == [r["video"] for r in fake.rows[:7]]
    for v in got["videos"]:
        assert v["error"] is None and v["readyState"] >= 1, v
        assert isinstance(v["duration"], (int, float)) and v["duration"] > 0, v  # 10 frames at 20 fps: 0.5 s
        assert (v["width"], v["height"]) == (512, 256), v
    assert [b["directive"] for b in got["blocked"]] == ["media-src"], got["blocked"]  # the remote one, only
    assert "Uncaught" not in result.stderr, result.stderr[-3000:]
