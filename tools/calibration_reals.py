"""Write the real images the bundled calibrations are made from: held-out procedural portraits and crops of
photographs far outside the domain, one subfolder each (a calibration's groups; detectors/calibrate.py).

    python -m tools.calibration_reals /tmp/calib-real [--portraits 300] [--photos 48]
    sgproject calibrate --real /tmp/calib-real --out detectors/calibrations/portraits-64.json

The domain check's in-domain reals (portraits only, from index 80,000):

    python -m tools.calibration_reals /tmp/domain-real --portraits 600 --photos 0 --start 80000
    sgproject calibrate-domain --real /tmp/domain-real --out detectors/calibrations/portraits-64.domain.safetensors

Portraits: set 1 from index 10,000 (training used set 0, bench/detect.py set 1 from 20,000, bench/stress.py set 1
from 30,000 and 60,000, samples/ set 1 from 0). Photographs: random crops of scikit-image's
PHOTOS_CALIBRATION (bench/stress.py uses the others, PHOTOS_HELD_OUT), seed 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from generator.data.portraits import render_portrait
from generator.util.imaging import save_png
from detectors.variants import PHOTOS_CALIBRATION, photograph_crops

PORTRAIT_SET, PORTRAIT_START = 1, 10_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--portraits", type=int, default=300)
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--start", type=int, default=PORTRAIT_START, help="index of the first portrait")
    a = ap.parse_args()
    for i in range(a.start, a.start + a.portraits):
        img, _ = render_portrait(PORTRAIT_SET, i, a.res)
        save_png(img, a.out / "portraits" / f"{i:06d}.png")
    for k, (_, crop) in enumerate(photograph_crops(PHOTOS_CALIBRATION, a.photos, seed=1)):
        save_png(crop, a.out / "ood" / f"photo-{k:03d}.png")
    print(f"{a.portraits} portraits and {a.photos} photograph crops under {a.out}")


if __name__ == "__main__":
    main()
