"""A fake detection-report folder for the report tests: results.jsonl, run.json and small PNG assets.

The rows look like a real run of the bundled 64-px model: a few generated images (near-perfect reconstructions,
dark heat maps), a few real ones (bright heat maps), one uncertain, two that could not be judged, non-ASCII
paths, and file names that carry HTML/JS payloads (each would set document.title to PWNED if it ever ran). With
`videos`, the judged rows but the last also get an H.264 projection video, as detect --video writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.results import ResultsWriter, make_row
from generator.data.portraits import render_portrait
from generator.util.files import write_json_atomic
from projector.video import H264, write_projection_video

PWNED = "PWNED"
MALICIOUS_SCRIPT = f"uploads/<script>document.title='{PWNED}'</script>.png"
MALICIOUS_IMG = f"uploads/\"><img src=x onerror=\"document.title='{PWNED}'\">.png"
NON_ASCII = "inbox/фото/Дмитрий — 日本語 café.png"

# path, verdict, probability, lpips, psnr, w_typicality, noise_gaussianity, notes
IMAGES = [
    ("inbox/seed0003.png", "generated", 0.991, 0.041, 31.2, 1.04, 0.21, []),
    ("inbox/agency/DSC_0412.jpg", "real", 0.012, 0.412, 17.9, 2.71, 1.35,
     ["EXIF orientation 6 applied", "centre-cropped and resized 4000x3000 -> 64x64"]),
    (NON_ASCII, "real", 0.034, 0.377, 18.4, 2.35, 1.12, []),
    ("inbox/seed0017.png", "generated", 0.973, 0.058, 29.6, 1.11, 0.25, []),
    ("inbox/press/portrait_ministre_été.jpg", "uncertain", 0.48, 0.139, 23.5, 1.72, 0.61,
     ["16-bit PNG scaled to 8 bits"]),
    (MALICIOUS_SCRIPT, "real", 0.021, 0.351, 19.0, 2.05, 0.98,
     [f"<b onmouseover=\"document.title='{PWNED}'\">note</b>"]),
    ("inbox/seed0042.png", "generated", 0.995, 0.033, 32.8, 0.97, 0.19, []),
    ("inbox/screenshots/tweet.png", "real", 0.004, 0.463, 16.2, 3.02, 1.51, ["transparency composited on white"]),
]
ERRORS = [
    ("inbox/broken.jpg", "truncated JPEG: the file ends after 18 of 52 KiB"),
    (MALICIOUS_IMG, f"not an image: the file starts with <svg onload=\"document.title='{PWNED}'\">"),
]
CALIBRATION = {
    "path": "detectors/calibrations/portraits-64.json", "kind": "logistic-lpips", "t_generated": 0.9,
    "t_real": 0.1, "threshold": 0.12, "features": ["lpips"], "auc": 0.998, "tpr_at_1fpr": 0.97,
    "tpr_at_5fpr": 0.99, "n_generated": 500, "n_real": 500, "id": "0f3a9c1d2b4e5f60",
}


@dataclass
class FakeReport:
    dir: Path
    results: Path  # results.jsonl
    rows: list[dict]
    run: dict


def _portrait(index: int, res: int) -> np.ndarray:
    return render_portrait(7, index, res)[0]


def _assets(target: np.ndarray, lpips: float, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A plausible reconstruction (worse for a higher LPIPS) and its inferno heat map."""
    rng = np.random.default_rng(index)
    x = target.astype(np.float32)
    if lpips > 0.1:  # the generator 'cannot reproduce' it: blurred, shifted colours, lost details
        k = 5 if lpips > 0.3 else 3
        x = cv2.GaussianBlur(x, (k, k), 0) * 0.9 + np.array([18, 6, -10], np.float32)
    recon = np.clip(x + rng.normal(0, 40 * lpips, x.shape), 0, 255).astype(np.uint8)
    diff = np.abs(recon.astype(np.float32) - target.astype(np.float32)).mean(2)
    heat = cv2.GaussianBlur(diff, (0, 0), 2) / 40.0 + 0.08
    u8 = np.clip(heat * 255, 0, 255).astype(np.uint8)
    return recon, cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def _png(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))


def make_run(*, calibrated: bool = True, partial: bool = False, random_backbone: bool = False, res: int = 64) -> dict:
    perceptual = "lpips-vgg16:random-seed0" if random_backbone else "lpips-vgg16:imagenet:397923af"
    return {
        "started": "2024-05-14T09:12:03Z", "finished": None if partial else "2024-05-14T09:16:41Z",
        "duration_s": 278.4, "partial": partial, "command": "sgproject detect inbox/ --report out/inbox",
        "model": {"name": "portraits-64", "sha256": "4be1c0a9" * 8, "resolution": res, "path": None},
        "perceptual": perceptual,
        "projector": {"space": "w", "num_steps": 300, "lr": 0.1, "lr_rampup": 0.05, "lr_rampdown": 0.25,
                      "initial_noise_factor": 0.05, "noise_ramp_length": 0.75, "noise_weight": 100000.0,
                      "w_avg_samples": 10000, "early_stop": 0, "early_stop_delta": 0.0001, "amp": False},
        "projector_fingerprint": "9d2c5e7a1b3f4c60", "seed": 0, "align": False, "wplus": False,
        "calibration": dict(CALIBRATION) if calibrated else None, "settings_key": "c0ffee" * 4,
        "device": "cuda:0", "world_size": 1,
        "versions": {"sgproject": "0.1.0", "torch": "2.3.1", "python": "3.11.7", "platform": "Linux-6.1-x86_64"},
    }


def make_report(
    folder: Path,
    *,
    calibrated: bool = True,  # rows carry verdicts and probabilities; run.json names a calibration
    partial: bool = False,
    random_backbone: bool = False,
    torn: bool = False,  # leave a torn last line in results.jsonl, as a kill mid-write does
    res: int = 64,  # asset resolution
    write_run: bool = True,
    videos: bool = False,  # projection videos (H.264) for every judged row but the last one
) -> FakeReport:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (path, verdict, prob, lpips, psnr, wt, ng, notes) in enumerate(IMAGES):
        target = _portrait(i, res)
        recon, heat = _assets(target, lpips, i)
        rel = {}
        for kind, pixels in (("target", target), ("reconstruction", recon), ("heatmap", heat)):
            rel[kind] = f"assets/{i:02d}-{kind}.png"
            _png(pixels, folder / rel[kind])
        if videos and i < len(IMAGES) - 1:
            x, y = target.astype(np.float32), recon.astype(np.float32)
            frames = [np.clip(np.round(x + (y - x) * t), 0, 255).astype(np.uint8)
                      for t in np.linspace(1.5, 1.0, 10)]  # a search that settles on the reconstruction
            rel["video"] = f"assets/{i:02d}-projection.mp4"
            write_projection_video(target, frames, folder / rel["video"], fps=20, codec=H264)
        rows.append(make_row(
            path=path, sha256=f"{i:02d}" * 32, size=48_000 + 1000 * i, width=res, height=res,
            format="jpeg" if path.endswith(".jpg") else "png", status="ok",
            verdict=verdict if calibrated else None, probability=prob if calibrated else None,
            features={"lpips": lpips, "psnr": psnr, "w_typicality": wt, "noise_gaussianity": ng},
            steps=300, seconds=31.5, notes=notes, settings_key="c0ffee" * 4, rank=0,
            time=f"2024-05-14T09:{13 + i // 3:02d}:{(i * 17) % 60:02d}+00:00", **rel,
        ))
    for path, reason in ERRORS:
        rows.append(make_row(path=path, status="error", error=reason, size=18_432, settings_key="c0ffee" * 4,
                             rank=0, time="2024-05-14T09:16:40+00:00"))
    results = folder / "results.jsonl"
    with ResultsWriter(results) as w:
        for r in rows:
            w.write(r)
    if torn:
        with open(results, "a", encoding="utf-8") as f:
            f.write('{"path": "inbox/killed-mid-write.png", "status": "o')
    run = make_run(calibrated=calibrated, partial=partial, random_backbone=random_backbone, res=res)
    if videos:
        run["video"] = {"codec": H264, "fps": 20, "frame_every": 3}
    if write_run:
        write_json_atomic(folder / "run.json", run)
    return FakeReport(folder, results, rows, run)
