"""Face alignment: the dlib-68 aligner (the `faces` extra, FFHQ's landmarks) against the Haar fallback.

    python -m bench.align [--copies 8] [--portraits 20] [--portrait-res 256] [--aligners dlib-68,haar,dlib-68-single]
    python -m bench.align --figure docs/align_before_after.png    # only the README's before/after figure

Run from the repository root.

Images: two real photographs that ship with installed packages (scikit-image's astronaut, matplotlib's Grace
Hopper), each as it is and as `--copies` copies turned (up to 30 degrees), scaled (0.7-1.4x) and shifted (up to
30 px) by a seeded random similarity; and `--portraits` procedural portraits, whose eye and mouth positions are
known exactly.

For each aligner and set:

- found: images where a face was found with both eyes detected (not estimated).
- landmark error: px at 256 (in the reference crop: the error in source pixels times 256 / its side) of the eyes
  and mouth against the reference. Portraits: the painted positions (their mouth is the centre of the lips, dlib's
  the midpoint of the corners, so the mouth error has a floor). Copies: the aligner's own landmarks on the
  original, moved by the known transform (how well it follows the face), and, in the `vs dlib` column, dlib-68's
  landmarks on the original (how far it is from FFHQ's landmarks).
- crop agreement: the largest distance between the corners of the crop and the reference crop's, px at 256.
- s/img: median seconds per image for detection, landmarks and the 256 px crop.

`dlib-68-single` is one landmark prediction in the detector's box, as FFHQ's own script made it
(`predict_landmarks68(stable=False)`); `dlib-68` is what `--align` runs (`stable=True`).
"""

from __future__ import annotations

import argparse
import time

import cv2
import matplotlib.cbook
import numpy as np
import skimage.data
import torch
from PIL import Image

from bench._common import print_machine
from detectors.align import (
    Landmarks, align_face, detect_faces_dlib, detect_landmarks68, ffhq_quad, landmarks_from_68, predict_landmarks68,
    quad_to_output, warp_quad,
)
from generator.data.portraits import render_portrait

R = 256
NAMES = ("left_eye", "right_eye", "mouth")


def photos() -> dict[str, np.ndarray]:
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return {"astronaut": skimage.data.astronaut(), "hopper": np.asarray(Image.open(hopper).convert("RGB"))}


def copies(rgb: np.ndarray, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (image, M) pairs: `rgb` moved by seeded random similarities M ([2, 3]), edges replicated."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    out = []
    for _ in range(n):
        M = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-30, 30), rng.uniform(0.7, 1.4))
        M[:, 2] += rng.uniform(-30, 30, 2)
        out.append((cv2.warpAffine(rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), M))
    return out


def run_aligner(name: str, rgb: np.ndarray) -> tuple[Landmarks | None, float]:
    """(eyes and mouth, or None when no face or an eye was not found; seconds including the crop)."""
    t = time.perf_counter()
    if name == "dlib-68-single":
        boxes, _ = detect_faces_dlib(rgb)
        lm = landmarks_from_68(predict_landmarks68(rgb, boxes[0], stable=False)) if boxes else None
        if lm is not None:
            warp_quad(rgb, ffhq_quad(lm.left_eye, lm.right_eye, lm.mouth), R)
    else:
        a = align_face(rgb, R, aligner=name)
        lm = a.landmarks if a.aligned else None
    seconds = time.perf_counter() - t
    if lm is not None and {"left_eye", "right_eye"} & set(lm.estimated):
        lm = None
    return lm, seconds


def moved(lm: Landmarks, M: np.ndarray) -> Landmarks:
    return Landmarks(*(tuple(M @ (*getattr(lm, k), 1.0)) for k in NAMES), estimated=[])


def compare(lm: Landmarks, ref: Landmarks) -> tuple[np.ndarray, float]:
    """([3] eye, eye, mouth errors, crop corner distance), px at R in the reference crop."""
    q_ref, q = (ffhq_quad(x.left_eye, x.right_eye, x.mouth) for x in (ref, lm))
    M = quad_to_output(q_ref, R)  # [2, 3] source -> reference crop
    errs = np.array([np.hypot(*(M[:, :2] @ np.subtract(getattr(lm, k), getattr(ref, k)))) for k in NAMES])
    corners = np.hypot(*((q - q_ref) @ M[:, :2].T).T).max()
    return errs, float(corners)


def summary(errs: list, corners: list) -> str:
    if not errs:
        return "-"
    e = np.array(errs)  # [n, 3]
    eyes, mouth = e[:, :2].ravel(), e[:, 2]
    return (f"eyes {np.median(eyes):.2f} / {eyes.max():.2f}  mouth {np.median(mouth):.2f} / {mouth.max():.2f}  "
            f"crop {np.median(corners):.2f} / {max(corners):.2f}")


def figure(path: str) -> None:
    """The README's figure: a turned, scaled and shifted astronaut with what dlib-68 found, and the crop."""
    rgb = skimage.data.astronaut()
    M = cv2.getRotationMatrix2D((256, 256), 14, 0.85)
    M[:, 2] += (-30, 25)
    before = cv2.warpAffine(rgb, M, (512, 512), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    al = align_face(before, R, aligner="dlib-68")
    points, _, _ = detect_landmarks68(before)
    canvas = before.copy()
    x, y, w, h = al.face_box
    cv2.rectangle(canvas, (x, y), (x + w, y + h), (235, 200, 0), 2, cv2.LINE_AA)
    cv2.polylines(canvas, [np.rint(al.quad).astype(np.int32)], True, (0, 220, 0), 3, cv2.LINE_AA)
    cv2.circle(canvas, tuple(int(v) for v in np.rint(al.quad[0])), 6, (0, 220, 0), -1, cv2.LINE_AA)
    for px, py in points:
        cv2.circle(canvas, (round(px), round(py)), 2, (255, 255, 255), -1, cv2.LINE_AA)
    for k, colour in zip(NAMES, ((255, 40, 40), (40, 140, 255), (255, 0, 255))):
        cv2.circle(canvas, tuple(round(v) for v in getattr(al.landmarks, k)), 5, colour, -1, cv2.LINE_AA)
    after = cv2.resize(al.image, (512, 512), interpolation=cv2.INTER_NEAREST)
    header = np.full((56, 1036, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(header, "before: rotated 14 deg, scaled 0.85, shifted", (8, 22), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(header, "after: align_face(..., 256) with dlib-68, shown 2x", (524, 22), font, 0.6, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(header, "yellow: face box; white: dlib's 68 points; dots: eyes, mouth; green: crop (dot = top-left)",
                (8, 46), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    body = np.full((512, 1036, 3), 255, np.uint8)
    body[:, :512], body[:, 524:] = canvas, after
    Image.fromarray(np.concatenate([header, body])).save(path, optimize=True)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="moved copies of each photo")
    ap.add_argument("--portraits", type=int, default=20, help="procedural portraits (set 0)")
    ap.add_argument("--portrait-res", type=int, default=256, help="their size in pixels")
    ap.add_argument("--aligners", default="dlib-68,haar,dlib-68-single")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", metavar="PNG", help="only write the README's before/after figure to PNG")
    args = ap.parse_args()
    if args.figure:
        return figure(args.figure)
    aligners = args.aligners.split(",")
    print_machine("bench.align: face alignment, dlib-68 vs haar", torch.device("cpu"))
    print(f"  images   photos astronaut + hopper, {args.copies} moved copies each; {args.portraits} portraits at "
          f"{args.portrait_res} px; errors in px at {R}: median / max")
    print()

    pics = photos()
    dlib_ref = {name: run_aligner("dlib-68", rgb)[0] for name, rgb in pics.items()} if "dlib-68" in aligners else {}
    for aligner in aligners:
        rows = []
        # Photos and their moved copies.
        for name, rgb in pics.items():
            own, seconds = run_aligner(aligner, rgb)
            times, errs, corners, vs_dlib, found = [seconds], [], [], [], int(own is not None)
            for img, M in copies(rgb, args.copies, args.seed):
                lm, s = run_aligner(aligner, img)
                times.append(s)
                if lm is None:
                    continue
                found += 1
                if own is not None:
                    e, c = compare(lm, moved(own, M))
                    errs.append(e)
                    corners.append(c)
                if name in dlib_ref and dlib_ref[name] is not None:
                    vs_dlib.append(compare(lm, moved(dlib_ref[name], M))[0])
            vd = f"{np.median(np.concatenate(vs_dlib)):.2f}" if vs_dlib else "-"
            rows.append((f"{name} + copies", f"{found}/{args.copies + 1}", summary(errs, corners), vd,
                         float(np.median(times))))
        # Portraits with known landmarks.
        times, errs, corners, found = [], [], [], 0
        for i in range(args.portraits):
            img, labels = render_portrait(0, i, args.portrait_res)
            truth = Landmarks(*(tuple(labels[k]) for k in NAMES), estimated=[])
            lm, s = run_aligner(aligner, img)
            times.append(s)
            if lm is None:
                continue
            found += 1
            e, c = compare(lm, truth)
            errs.append(e)
            corners.append(c)
        rows.append((f"portraits {args.portrait_res}px", f"{found}/{args.portraits}", summary(errs, corners), "-",
                     float(np.median(times))))

        print(f"{aligner}")
        print(f"  {'set':<20} {'found':>6}  {'landmark and crop error (px at 256, median / max)':<58} "
              f"{'vs dlib':>7} {'s/img':>6}")
        for set_name, found_s, text, vd, sec in rows:
            print(f"  {set_name:<20} {found_s:>6}  {text:<58} {vd:>7} {sec:6.2f}")
        print(flush=True)


if __name__ == "__main__":
    main()
