"""Forensic reports: summary, the three formats, atomic writes, escaping, re-rendering and `sgproject report`."""

import base64
import csv
import hashlib
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import sgproject.cli  # noqa: F401  (registers the commands on `app`)
from detectors import report as rp
from detectors.report import ReportError, render_from_results, summarize, write_reports
from detectors.results import make_row, read_results
from detectors.scoring import HEAT_VMAX
from sgproject.app import app
from tests.detectors.report_fixtures import (
    MALICIOUS_IMG, MALICIOUS_SCRIPT, NON_ASCII, PWNED, FakeReport, make_report, make_run,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def _template_folder(tmp_path_factory):
    return make_report(tmp_path_factory.mktemp("report-template") / "run")


@pytest.fixture
def fake(_template_folder, tmp_path):
    """A fresh copy of the fake report folder (calibrated, complete), without reports in it yet."""
    shutil.copytree(_template_folder.dir, tmp_path / "run")
    folder = tmp_path / "run"
    return FakeReport(folder, folder / "results.jsonl", [dict(r) for r in _template_folder.rows],
                      dict(_template_folder.run))


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <title>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title" and not self.title

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _tags(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def _no_temp_files(folder: Path):
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------------ summary


def test_summarize_counts_verdicts_and_thresholds(fake):
    s = summarize(fake.rows, fake.run)
    assert s["counts"] == {"total": 10, "ok": 8, "error": 2, "generated": 3, "real": 4, "uncertain": 1,
                           "insufficient": 0, "out-of-domain": 0, "unscored": 0}
    assert s["by_verdict"]["generated"] == ["inbox/seed0003.png", "inbox/seed0017.png", "inbox/seed0042.png"]
    assert s["by_verdict"]["error"] == ["inbox/broken.jpg", MALICIOUS_IMG]
    assert s["thresholds"] == {"threshold": 0.12, "t_generated": 0.9, "t_real": 0.1}
    assert s["scores"]["lpips"]["min"] == 0.033 and s["scores"]["lpips"]["max"] == 0.463
    assert s["scores"]["lpips"]["n"] == 8
    assert s["duration_s"] == 278.4 and s["projection_s"] == pytest.approx(8 * 31.5)
    assert s["conclusion"] == "3 of 10 images flagged as generated, 1 uncertain; 2 could not be judged."
    assert s["calibrated"] and not s["partial"] and s["warnings"] == []


def test_summarize_without_calibration_and_with_the_random_backbone(fake):
    rows = [{**r, "verdict": None, "probability": None} for r in fake.rows]
    s = summarize(rows, make_run(calibrated=False, random_backbone=True))
    assert s["counts"]["unscored"] == 8 and s["counts"]["generated"] == 0
    assert not s["calibrated"] and s["thresholds"] is None
    assert s["conclusion"] == "8 of 10 images scored; no calibration, so no verdicts; 2 could not be judged."
    assert any("random VGG backbone" in w for w in s["warnings"])
    assert any("No calibration" in w for w in s["warnings"])


def test_summarize_edge_cases():
    assert summarize([], {})["conclusion"] == "No images were judged."
    one = [make_row(path="a.png", status="ok", verdict="generated", features={"lpips": 0.01})]
    assert summarize(one, {})["conclusion"] == "1 of 1 image flagged as generated."


# ------------------------------------------------------------------------------------------------------ writing


def test_write_reports_writes_three_files_atomically(fake):
    written = write_reports(fake.dir, fake.rows, fake.run)
    assert written == {"html": fake.dir / "report.html", "json": fake.dir / "report.json",
                       "csv": fake.dir / "report.csv"}
    assert all(p.stat().st_size > 0 for p in written.values())
    _no_temp_files(fake.dir)
    only = write_reports(fake.dir / "sub", fake.rows, fake.run, formats=("json",))
    assert list(only) == ["json"] and not (fake.dir / "sub" / "report.html").exists()
    with pytest.raises(ReportError, match="unknown report format"):
        write_reports(fake.dir, fake.rows, fake.run, formats=("pdf",))


def test_a_failure_while_rendering_leaves_the_previous_reports_intact(fake, monkeypatch):
    write_reports(fake.dir, fake.rows, fake.run)
    before = {n: (fake.dir / n).read_bytes() for n in ("report.html", "report.json", "report.csv")}

    def broken(rows):
        raise RuntimeError("simulated crash while rendering")

    monkeypatch.setattr(rp, "render_csv", broken)  # the html and json are rendered by then; nothing is written
    with pytest.raises(RuntimeError, match="simulated"):
        write_reports(fake.dir, fake.rows[:3], fake.run, partial=True)
    assert {n: (fake.dir / n).read_bytes() for n in before} == before
    _no_temp_files(fake.dir)


def test_a_failure_while_writing_leaves_the_file_and_no_temp_file(fake, monkeypatch):
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    before = (fake.dir / "report.html").read_bytes()

    def replace_fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rp.os, "replace", replace_fails)
    with pytest.raises(OSError, match="No space"):
        write_reports(fake.dir, fake.rows[:2], fake.run, formats=("html",))
    assert (fake.dir / "report.html").read_bytes() == before
    _no_temp_files(fake.dir)


def test_report_json_round_trips_the_rows(fake):
    write_reports(fake.dir, fake.rows, fake.run)
    doc = json.loads((fake.dir / "report.json").read_text(encoding="utf-8"))
    assert set(doc) == {"summary", "run", "rows", "partial"}
    assert doc["rows"] == fake.rows
    assert doc["run"]["model"] == fake.run["model"] and doc["partial"] is False
    assert doc["summary"]["counts"]["total"] == 10


def test_report_csv_one_record_per_row_with_non_ascii_paths_intact(fake):
    rows = fake.rows + [make_row(path="=HYPERLINK(\"http://evil.example\",\"x\").png", status="error", error="x")]
    write_reports(fake.dir, rows, fake.run, formats=("csv",))
    raw = (fake.dir / "report.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM, so that spreadsheets read it as UTF-8
    with open(fake.dir / "report.csv", encoding="utf-8-sig", newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == len(rows)
    assert [r["path"] for r in records[:-1]] == [r["path"] for r in fake.rows]
    assert NON_ASCII in {r["path"] for r in records} and "portrait_ministre_été.jpg" in raw.decode("utf-8-sig")
    assert records[-1]["path"].startswith("'=HYPERLINK")  # never a live formula in a spreadsheet
    first = records[0]
    assert first["features.lpips"] == "0.041" and first["verdict"] == "generated" and first["error"] == ""
    assert list(records[0])[:5] == ["path", "status", "error", "verdict", "probability"]
    assert records[1]["notes"] == "EXIF orientation 6 applied; centre-cropped and resized 4000x3000 -> 64x64"
    assert records[8]["error"].startswith("truncated JPEG")


# --------------------------------------------------------------------------------------------------------- HTML


def test_html_is_self_contained_and_embeds_every_thumbnail(fake):
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    parsed = _tags(html)
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            value = (attrs.get(name) or "").strip()
            assert not value or value.startswith(("data:", "#")), (tag, name, value[:80])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html)
    assert "@import" not in html and "url(" not in html
    assert not [t for t, a in parsed.tags if t == "link"]

    srcs = [a["src"] for t, a in parsed.tags if t == "img"]
    assert len(srcs) == 8 * 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    for row in fake.rows[:8]:
        for k in ("target", "reconstruction", "heatmap"):
            assert (fake.dir / row[k]).read_bytes() in embedded
    for t, a in parsed.tags:
        if t == "img":
            assert a.get("alt"), "every image has an alt text"
            assert "pixelated" in a.get("class", "")  # 64-px assets shown larger


def test_html_content_security_policy_allows_only_its_own_style_and_script(fake):
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1)
    csp = csp.replace("&#39;", "'")
    assert "default-src 'none'" in csp and "img-src data:" in csp
    for tag in ("style", "script"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp


@pytest.mark.parametrize("partial", [False, True])
def test_partial_banner_iff_partial(fake, partial):
    write_reports(fake.dir, fake.rows, fake.run, partial=partial)
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    assert ("PARTIAL REPORT" in html) == partial
    assert json.loads((fake.dir / "report.json").read_text(encoding="utf-8"))["partial"] is partial


def test_partial_is_also_taken_from_run_json(fake):
    write_reports(fake.dir, fake.rows, {**fake.run, "partial": True}, formats=("html",))
    assert "PARTIAL REPORT" in (fake.dir / "report.html").read_text(encoding="utf-8")


def test_malicious_file_names_are_escaped(fake):
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    parsed = _tags(html)
    assert [t for t, _ in parsed.tags].count("script") == 1  # only the report's own
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]  # no event handlers at all
    assert all(a.get("src", "").startswith("data:") for t, a in parsed.tags if t == "img")
    assert "<script>document.title" not in html and "<img src=x" not in html and "<svg onload" not in html
    assert "&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;.png" in html
    assert PWNED not in parsed.title
    assert MALICIOUS_SCRIPT in json.dumps(read_results(fake.results))  # the name itself is kept, not mangled


def test_html_shows_verdicts_histogram_settings_and_errors(fake):
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    assert "3 of 10 images flagged as generated, 1 uncertain; 2 could not be judged." in html
    assert html.count('class="badge generated"') == 3 + 1  # three rows and the legend
    assert '<line class="threshold"' in html and "threshold 0.12" in html
    assert fake.run["model"]["sha256"] in html and "lpips-vgg16:imagenet:397923af" in html
    assert "truncated JPEG: the file ends after 18 of 52 KiB" in html
    assert "AUC 0.998" in html and "num_steps = 300" in html and "torch 2.3.1" in html
    assert NON_ASCII in html
    assert 'data-col="lpips" data-v="0.041"' in html  # what the sorting script reads
    assert "NOT COMPARABLE" not in html and "No calibration" not in html


def test_html_warns_loudly_about_the_random_backbone_and_missing_calibration(fake):
    rows = [{**r, "verdict": None, "probability": None} for r in fake.rows]
    write_reports(fake.dir, rows, make_run(calibrated=False, random_backbone=True), formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    assert "NOT COMPARABLE WITH STANDARD SCORES" in html and "lpips-vgg16:random-seed0" in html
    assert "No calibration: scores only, no verdicts" in html
    assert '<line class="threshold"' not in html
    assert "8 of 10 images scored; no calibration, so no verdicts; 2 could not be judged." in html


def test_html_survives_missing_foreign_and_large_assets(fake):
    Image.new("RGB", (1024, 1024), (200, 30, 30)).save(fake.dir / "assets" / "big.png")
    rows = [dict(fake.rows[0], target="assets/big.png", reconstruction="../../../etc/passwd",
                 heatmap="assets/does-not-exist.png")]
    write_reports(fake.dir, rows, {}, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    srcs = [a["src"] for t, a in _tags(html).tags if t == "img"]
    assert len(srcs) == 1 and html.count("image missing") == 2
    with Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1]))) as im:
        assert im.size == (rp.THUMB_MAX, rp.THUMB_MAX)
    assert "Calibration" in html  # an empty run dict still renders


def test_no_histogram_without_scores():
    rows = [make_row(path="a.png", status="error", error="unreadable")]
    assert rp.histogram(rows, 0.1) is None


def test_heat_scale_matches_the_scoring_module():
    assert rp.HEAT_VMAX == HEAT_VMAX


# ------------------------------------------------------------------------------------------ render_from_results


def test_render_from_results_skips_a_torn_last_line(tmp_path):
    fake = make_report(tmp_path / "run", torn=True)
    written = render_from_results(fake.results)
    assert set(written) == {"html", "json", "csv"} and written["html"].parent == fake.dir
    doc = json.loads(written["json"].read_text(encoding="utf-8"))
    assert len(doc["rows"]) == 10 and doc["run"]["model"]["name"] == "portraits-64"
    assert "killed-mid-write" not in written["html"].read_text(encoding="utf-8")


def test_render_from_results_into_another_folder_rewrites_asset_paths(fake, tmp_path):
    out = tmp_path / "elsewhere" / "reports"
    written = render_from_results(fake.results, out_dir=out)
    assert written["html"] == out / "report.html"
    doc = json.loads(written["json"].read_text(encoding="utf-8"))
    target = doc["rows"][0]["target"]
    assert target == "../../run/assets/00-target.png" and (out / target).is_file()
    html = written["html"].read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 24


def test_render_from_results_without_run_json(fake):
    (fake.dir / "run.json").unlink()
    written = render_from_results(fake.results, formats=("html",))
    assert "3 of 10 images flagged as generated" in written["html"].read_text(encoding="utf-8")


def test_render_from_results_errors(tmp_path):
    with pytest.raises(ReportError, match="not found"):
        render_from_results(tmp_path / "nope.jsonl")
    empty = tmp_path / "results.jsonl"
    empty.write_text('{"path": "a.png", "sta', encoding="utf-8")
    with pytest.raises(ReportError, match="no complete result rows"):
        render_from_results(empty)
    empty.write_text(json.dumps(make_row(path="a.png", status="error", error="x")) + "\n", encoding="utf-8")
    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="run.json is not valid JSON"):
        render_from_results(empty)


# ------------------------------------------------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def _video_template(tmp_path_factory):
    return make_report(tmp_path_factory.mktemp("report-videos") / "run", videos=True)


@pytest.fixture
def with_videos(_video_template, tmp_path):
    """A fresh copy of a fake report folder whose judged rows (but the last) have H.264 projection videos."""
    shutil.copytree(_video_template.dir, tmp_path / "run")
    folder = tmp_path / "run"
    return FakeReport(folder, folder / "results.jsonl", [dict(r) for r in _video_template.rows],
                      json.loads(json.dumps(_video_template.run)))


def _csp(html: str) -> str:
    return re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1).replace(
        "&#39;", "'")


def test_without_videos_nothing_about_them_is_written(fake):
    written = write_reports(fake.dir, fake.rows, fake.run)
    html = written["html"].read_text(encoding="utf-8")
    assert "<video" not in html and "media-src" not in _csp(html) and '<th scope="col">Projection</th>' not in html
    assert "This file is self-contained" in html
    with open(written["csv"], encoding="utf-8-sig", newline="") as f:
        assert "video" not in next(csv.reader(f))
    assert all("video" not in r for r in json.loads(written["json"].read_text(encoding="utf-8"))["rows"])
    assert all("video" not in r for r in read_results(fake.results))  # rows without videos: no key at all


def test_videos_play_from_the_assets_folder_under_a_local_media_policy(with_videos):
    fake = with_videos
    written = write_reports(fake.dir, fake.rows, fake.run)
    html = written["html"].read_text(encoding="utf-8")
    parsed = _tags(html)
    videos = [a for t, a in parsed.tags if t == "video"]
    assert [v["src"] for v in videos] == [r["video"] for r in fake.rows[:7]]
    for v in videos:
        assert {"controls", "muted", "playsinline"} <= set(v) and v["preload"] == "metadata"
        assert (v["width"], v["height"]) == ("192", "96")  # target | reconstruction, 96 px each
        assert (fake.dir / v["src"]).is_file() and v["aria-label"].startswith("Projection of ")
    assert html.count('<span class="missing">no video</span>') == 1  # the judged row without one
    assert '<th scope="col">Projection</th>' in html and 'colspan="4"' in html  # error rows span it too
    assert "the projection videos are files in the assets folder" in html and "self-contained" not in html

    csp = _csp(html)
    assert "media-src 'self'" in csp and "default-src 'none'" in csp and "img-src data:" in csp
    assert "http" not in csp and "*" not in csp  # nothing remote
    for tag, attrs in parsed.tags:  # every other reference is still embedded
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value or value.startswith(("data:", "#")) or (tag == "video" and value.startswith("assets/"))

    with open(written["csv"], encoding="utf-8-sig", newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["video"] for r in records[:8]] == [r["video"] for r in fake.rows[:7]] + [""]
    doc = json.loads(written["json"].read_text(encoding="utf-8"))
    assert doc["rows"][0]["video"] == "assets/00-projection.mp4" and doc["run"]["video"]["codec"] == "h264"


def test_video_links_are_quoted_and_never_leave_the_results_folder(with_videos):
    fake = with_videos
    odd = 'assets/a b"<i>.mp4'
    shutil.copyfile(fake.dir / fake.rows[0]["video"], fake.dir / odd)
    rows = [dict(fake.rows[0], video=odd)] + [
        dict(fake.rows[i], video=v) for i, v in enumerate(
            ["https://evil.example/x.mp4", "//evil.example/x.mp4", "../../../etc/passwd", "/etc/passwd",
             "assets/missing.mp4", "javascript:alert(1)"], start=1)]
    html = write_reports(fake.dir, rows, fake.run, formats=("html",))["html"].read_text(encoding="utf-8")
    videos = [a for t, a in _tags(html).tags if t == "video"]
    assert [v["src"] for v in videos] == ["assets/a%20b%22%3Ci%3E.mp4"]
    assert html.count('<span class="missing">no video</span>') == 6
    assert "evil.example" not in html and "/etc/passwd" not in html and "javascript:" not in html


def test_no_media_policy_when_no_video_can_be_shown(with_videos):
    fake = with_videos
    rows = [dict(r, video="assets/missing.mp4") if r.get("video") else r for r in fake.rows]
    html = write_reports(fake.dir, rows, fake.run, formats=("html",))["html"].read_text(encoding="utf-8")
    assert "<video" not in html and "media-src" not in _csp(html)


def test_mpeg4_videos_are_linked_not_played(with_videos):
    fake = with_videos
    run = dict(fake.run, video={"codec": "mpeg4", "fps": 20, "frame_every": 3})
    html = write_reports(fake.dir, fake.rows, run, formats=("html",))["html"].read_text(encoding="utf-8")
    parsed = _tags(html)
    assert not [t for t, _ in parsed.tags if t == "video"]
    links = [a["href"] for t, a in parsed.tags if t == "a" and a.get("href", "").endswith(".mp4")]
    assert links == [r["video"] for r in fake.rows[:7]]
    assert "browsers do not play it" in html and "sgproject[video]" in html


def test_render_from_results_into_another_folder_rewrites_video_paths(with_videos, tmp_path):
    out = tmp_path / "elsewhere" / "reports"
    written = render_from_results(with_videos.results, out_dir=out)
    doc = json.loads(written["json"].read_text(encoding="utf-8"))
    assert doc["rows"][0]["video"] == "../../run/assets/00-projection.mp4"
    html = written["html"].read_text(encoding="utf-8")
    srcs = [a["src"] for t, a in _tags(html).tags if t == "video"]
    assert len(srcs) == 7 and all((out / s).is_file() for s in srcs) and srcs[0].startswith("../../run/assets/")


# ----------------------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_report_renders_and_prints_the_paths(fake, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", str(fake.results), "--format", "json,csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out / "report.json"), str(out / "report.csv")]
    assert "3 of 10 images flagged as generated" in ANSI.sub("", result.stderr)
    assert not (out / "report.html").exists()

    result = runner.invoke(app, ["report", str(fake.results)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(fake.dir / f"report.{x}") for x in ("html", "json", "csv")]


@pytest.mark.parametrize("args, needle", [
    (["missing.jsonl"], "not found"),
    (["RESULTS", "--format", "html,pdf"], "pdf"),
])
def test_cli_report_errors_exit_2_with_one_line(fake, args, needle):
    args = [str(fake.results) if a == "RESULTS" else a for a in args]
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = [line for line in ANSI.sub("", result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_undecodable_file_names_survive_every_format(fake):
    """os.listdir gives undecodable bytes as lone surrogates; they must not crash the reports."""
    rows = [make_row(path="inbox/bad\udcffname.png", status="error", error="unreadable")] + fake.rows[:1]
    written = write_reports(fake.dir, rows, fake.run)
    assert json.loads(written["json"].read_text(encoding="utf-8"))["rows"][0]["path"] == "inbox/bad\udcffname.png"
    assert "inbox/bad\\udcffname.png" in written["html"].read_text(encoding="utf-8")
    assert "inbox/bad\\udcffname.png" in written["csv"].read_text(encoding="utf-8-sig")


def test_html_shows_the_features_the_calibration_decided_on(fake):
    """Columns for the complexity reference, detail and contrast when the run's calibration uses them, not before."""
    write_reports(fake.dir, fake.rows, fake.run, formats=("html",))
    assert ">LPIPS flipped<" not in (fake.dir / "report.html").read_text(encoding="utf-8")
    run = dict(fake.run, calibration=dict(fake.run["calibration"], features=["lpips", "lpips_ref_flip", "detail"]))
    rows = [dict(r, features=dict(r["features"], lpips_ref_flip=0.0616, detail=7.654)) if r.get("features") else r
            for r in fake.rows]
    write_reports(fake.dir, rows, run, formats=("html",))
    html = (fake.dir / "report.html").read_text(encoding="utf-8")
    assert ">LPIPS flipped<" in html and ">Detail<" in html and ">Contrast<" not in html
    assert 'data-col="lpips_ref_flip" data-v="0.0616"' in html and ">7.65<" in html
    assert "turned upside down" in html  # the legend explains it
