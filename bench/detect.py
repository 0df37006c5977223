"""Detection accuracy and speed of one model under several projection setups, side by side on the same images: ROC
AUC and TPR at 1% FPR, clean and after JPEG / resizing, seconds per image.

    python -m bench.detect [--model portraits-64] [--n 100] [--variants clean,jpeg90,resize0.9]
    python -m bench.detect --setups w_avg:200,encoder:25,cascade:25,encoder:0 --n 8 --variants clean   # speed
    python -m bench.detect --setups encoder:0,encoder:10,encoder:25,encoder:50,encoder:100 --n 24   # steps curve
    python -m bench.detect --variants jpeg90 --rows-out r-jpeg.jsonl   # one variant per process, then:
    python -m bench.detect --from-rows r-*.jsonl --out figures.json

Run from the repository root.

Setups: `w_avg:N` starts each projection at w_avg (the paper; before the encoder, `detect`'s only start) and takes
N steps; `encoder:N` starts at the model's bundled encoder's guess (or --encoder's) and takes N steps;
`encoder:0` is `detect --fast`; `cascade:N` is what `detect` does with a calibration that starts at the guess
(the bundled model's default calibration): the guess alone clears the images its fast calibration calls real,
the rest get N steps (`decided_by_the_guess` counts the first); beside a
calibrated `encoder:N` and `encoder:0`, `cascade:N*` is the cascade derived from their rows, without running it
again (its seconds: the guess's plus the N-step run's for the images that go on). Default:
`calibrated`, each setup for which a calibration exists (the model's bundled ones,
detectors/calibrations/<model>*.json, and --calibration), found by its start (w_avg or this encoder's guess) and
number of steps; the setup then projects with the calibration's own settings. A setup with a calibration is judged
exactly as `detect` judges (probability, then verdict bands); one without gets `cv`: a logistic model on the same
features, 5-fold cross-validated on these images, so that its AUC can be compared but it has no verdicts.

Real images: held-out procedural portraits (set 1, indices from 20000; training used set 0, the calibration
set 1 from 10000, samples/ set 1 from 0). Generated images: the model's own outputs for fresh seeds (from
2,000,000; the calibration uses 1,000,000+), with random noise as in the wild. Every image is written to a file
in each variant and judged by the same pipeline as `sgproject detect` (loading, degradation matching, projection,
scoring), so the figures are what a user gets. Seconds per image are the whole run's wall time (loading, projection,
scoring, assets, reports) divided by the images; each setup runs on the same files one after the other, so their
ratio is measured under the same load.

Variants: `clean` (PNG), `jpeg90` (re-saved as JPEG quality 90, Pillow's default 4:2:0 subsampling), `resize0.9`
(shrunk to 0.9x with Lanczos, saved as PNG; the loader scales it back up).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench._common import cpu_model, pick_device
from detectors.batch import DetectSettings, Detector
from detectors.calibration import (CALIBRATIONS_DIR, Calibration, calibration_for, cross_validate, feature_matrix,
                                   roc_auc, tpr_at_fpr)
from detectors.content import insufficient_reason
from detectors.scoring import FEATURES
from detectors.variants import write_variant
from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import load_perceptual
from generator.render import generate_images
from projector.encoder import Encoder, encoder_for
from projector.project import ProjectorConfig, projector_config

REAL_SET, REAL_START = 1, 20_000
GEN_START = 2_000_000


@dataclass
class Setup:
    name: str  # 'w_avg:200', 'encoder:25', 'cascade:25'
    config: ProjectorConfig
    encoder: Encoder | None
    calibration: Calibration | None
    triage: Calibration | None = None  # cascade: the calibration of the encoder's guess alone
    escalation: Calibration | None = None  # cascade: the second look's (the model's deep calibration), if any


def calibrations_of(model_sha256: str, model_name: str, explicit: list[Path]) -> list[Calibration]:
    """--calibration's files, then every bundled calibration of the model (detectors/calibrations/<model>*.json)."""
    paths = [*explicit, *sorted(CALIBRATIONS_DIR.glob(f"{model_name}*.json"))]
    cals = [Calibration.load(p) for p in paths]
    return [c for c in cals if c.model_sha256 == model_sha256]


def calibration_of_setup(cals: list[Calibration], cfg: ProjectorConfig) -> Calibration | None:
    """The calibration made for a setup: the same start (w_avg, or this encoder's guess) and number of steps; its
    other projector settings (learning rate, zoom-and-shift search, ...) are the calibration's own."""
    return next((c for c in cals if c.projector.get("init", "w_avg") == cfg.init
                 and c.projector.get("num_steps") == cfg.num_steps
                 and c.projector.get("encoder_sha256") == cfg.encoder_sha256), None)


def make_setup(spec: str, info, encoder: Encoder | None, cals: list[Calibration], use_calibration: bool) -> Setup:
    start, _, steps = spec.partition(":")
    if start not in ("w_avg", "encoder", "cascade") or not steps.isdigit():
        sys.exit(f"setup {spec!r}: expected w_avg:STEPS, encoder:STEPS or cascade:STEPS")
    if start != "w_avg" and encoder is None:
        sys.exit(f"setup {spec!r}: {info.name} has no bundled encoder; pass --encoder")
    E = encoder if start != "w_avg" else None
    cfg = projector_config(E, num_steps=int(steps))
    cal = calibration_of_setup(cals, cfg) if use_calibration else None
    if cal is not None:  # its projector settings, e.g. another learning rate or the zoom-and-shift search
        cfg = ProjectorConfig(**cal.projector)
    triage = escalation = None
    if start == "cascade":
        triage = calibration_of_setup(cals, projector_config(E, num_steps=0))
        if cal is None or triage is None:
            sys.exit(f"setup {spec!r} needs calibrations of {steps} steps and of 0 steps from the encoder's guess")
        deep = calibration_for(info.name, variant="deep")  # the second look, as `detect` uses it
        escalation = deep if deep is not None and deep.model_sha256 == info.sha256 else None
    return Setup(spec, cfg, E, cal, triage, escalation)


def variant(pixels: np.ndarray, name: str, path: Path) -> Path:
    """The file of variant `name` (detectors/variants.py) of an image."""
    return write_variant(pixels, name, path, np.random.default_rng(0))


def figures_of(rows: list[dict], cal: Calibration | None) -> dict:
    """The figures of one setup and variant from its rows ({label, features, seconds}): calibrated if `cal` is
    given, else cross-validated on these rows."""
    y = np.array([r["label"] for r in rows])
    # a live cascade's rows cleared by the guess have no LPIPS (the fast calibration uses none): NaN, no LPIPS AUC
    lp = np.array([r["features"].get("lpips", np.nan) for r in rows])
    raw = np.array([r["features"].get("lpips_raw", np.nan) for r in rows])
    gen = y == 1
    whole = bool(np.isfinite(lp).all())
    fig = {
        "n_real": int((~gen).sum()), "n_generated": int(gen.sum()),
        "auc_lpips": roc_auc(-lp, y) if whole else float("nan"),
        "tpr1_lpips": tpr_at_fpr(-lp, y, 0.01) if whole else float("nan"),
        "auc_lpips_raw": roc_auc(-raw, y) if whole else float("nan"),
        # reconstruction quality: how closely the model's own images were reproduced
        "lpips_generated": float(np.median(raw[gen])) if gen.any() else float("nan"),
        "psnr_generated": float(np.median([r["features"]["psnr_raw"] for r in rows if r["label"] == 1] or [np.nan])),
        "seconds_per_image": float(np.mean([r["seconds"] for r in rows])),
    }
    if cal is not None:
        # exactly what Detector does per image (detectors.batch): P from the features, then the verdict bands; a
        # cascade's rows come with theirs (from the calibration of whichever stage decided)
        cascade = rows[0].get("setup", "").startswith("cascade")
        p = (np.array([r["probability"] for r in rows]) if cascade
             else cal.probabilities([r["features"] for r in rows]))
        verdicts = [r["verdict"] for r in rows] if cascade else [
            "insufficient" if "detail" in r["features"] and insufficient_reason(r["features"], cal.content)
            else cal.verdict(float(v))
            for r, v in zip(rows, p)]  # the content check as detect applies it (before projection)
        n_decided = sum(v in ("generated", "real") for v in verdicts)
        real_gen = sum(v == "generated" and not t for v, t in zip(verdicts, y))
        gen_real = sum(v == "real" and bool(t) for v, t in zip(verdicts, y))
        fig.update({
            "decision": "calibrated",
            "auc": roc_auc(p, y), "tpr_at_1fpr": tpr_at_fpr(p, y, 0.01), "tpr_at_5fpr": tpr_at_fpr(p, y, 0.05),
            "verdict_accuracy": 1 - (real_gen + gen_real) / n_decided if n_decided else float("nan"),
            "wrong": real_gen + gen_real,
            "real_called_generated": real_gen,
            "generated_called_real": gen_real,
            "uncertain": sum(v == "uncertain" for v in verdicts),
            "insufficient": sum(v == "insufficient" for v in verdicts),
        })
        if cascade:
            fig["decided_by_the_guess"] = sum(bool(r.get("triaged")) for r in rows)
    else:
        x = feature_matrix([r["features"] for r in rows], FEATURES)
        order = np.r_[np.flatnonzero(gen), np.flatnonzero(~gen)]
        p = cross_validate(x[gen], x[~gen])
        if p is not None:
            yy = y[order]
            fig.update({"decision": "cv", "auc": roc_auc(p, yy), "tpr_at_1fpr": tpr_at_fpr(p, yy, 0.01),
                        "tpr_at_5fpr": tpr_at_fpr(p, yy, 0.05)})
    return fig


def project_rows(setups: list[Setup], variants: list[str], n: int, G, info, perceptual, dev, batch_size: int,
                 machine: str, rows_out: Path | None, real_start: int = REAL_START,
                 gen_start: int = GEN_START) -> dict[tuple[str, str], list[dict]]:
    res = G.img_resolution
    reals = [render_portrait(REAL_SET, real_start + i, res)[0] for i in range(n)]
    gens = [a for _, a in generate_images(G, list(range(gen_start, gen_start + n)), noise_mode="random")]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:  # warm-up (w statistics, first calls): not timed
        for i, px in enumerate(gens[:2]):
            Image.fromarray(px).save(Path(tmp) / f"{i}.png")
        for E in {id(st.encoder): st.encoder for st in setups}.values():
            cfg = projector_config(E, num_steps=1)
            Detector(G, info, perceptual, DetectSettings(config=cfg, batch_size=batch_size), device=dev,
                     encoder=E).run([tmp], Path(tmp) / "report", formats=("json",))
    for name in variants:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "in").mkdir()
            labels = {}
            for i, px in enumerate(reals):
                labels[str(variant(px, name, tmp / "in" / f"real-{i:04d}"))] = 0
            for i, px in enumerate(gens):
                labels[str(variant(px, name, tmp / "in" / f"gen-{i:04d}"))] = 1
            for st in setups:
                # Scores only; the calibration is applied afterwards exactly as Detector applies it, so that
                # variants can be projected in parallel before the calibration exists (--rows-out/--from-rows).
                # (a cascade needs its calibrations while it runs: its first stage decides which images go on)
                refs = tuple(dict.fromkeys(f for c in (st.calibration, st.triage) if c is not None
                                           for f in c.references()))
                det = Detector(G, info, perceptual, DetectSettings(config=st.config, batch_size=batch_size,
                                                                   references=refs),
                               calibration=st.calibration if st.triage else None, device=dev, encoder=st.encoder,
                               triage=st.triage, escalation=st.escalation)
                t0 = time.time()
                result = det.run([tmp / "in"], tmp / f"report-{st.name.replace(':', '-')}", formats=("json",))
                dt = time.time() - t0
                ok = [r for r in result.all_rows if r["status"] == "ok"]
                rows = out[(st.name, name)] = [{
                    "setup": st.name, "variant": name, "name": Path(r["path"]).name, "label": labels[r["path"]],
                    "features": r["features"], "probability": r["probability"], "verdict": r["verdict"],
                    "triaged": r["steps"] == 0, "seconds": dt / max(1, len(ok)), "model_sha256": info.sha256,
                    "fingerprint": st.config.fingerprint(), "perceptual": perceptual.identity,
                    "steps": st.config.num_steps, "machine": machine,
                    "time_s": {k: v / max(1, len(ok)) for k, v in det.timings.items()},
                } for r in ok]
                if rows_out:
                    rows_out.parent.mkdir(parents=True, exist_ok=True)
                    with open(rows_out, "a") as f:
                        for r in rows:
                            f.write(json.dumps(r) + "\n")
                stages = "  ".join(f"{k} {v:.3f}" for k, v in rows[0]["time_s"].items()) if rows else ""
                print(f"{name:>10} {st.name:>12}: {len(ok)} images in {dt:.1f} s ({dt / max(1, len(ok)):.3f} s/img; "
                      f"per image: {stages})", flush=True)
    return out


def add_derived_cascades(by: dict, setups: list[str], cal_of: dict) -> None:
    """For each calibrated `encoder:N` (N > 0) beside a calibrated `encoder:0`, the rows the cascade `cascade:N`
    would give, derived from theirs (setup `cascade:N*`; both stages' computations are those rows': an image's
    projection does not depend on its batch): 'real' where the guess's calibration says so, else the N-step verdict;
    seconds per image: the guess's plus, for the images that go on, the N-step run's. Beside a longer calibrated
    `encoder:M` too, also the cascade with M steps as its second look (`cascade:N+M*`): the images the N-step
    calibration leaves uncertain take the M-step row's verdict, and its seconds on top."""
    fast = cal_of.get("encoder:0")
    if fast is None:
        return
    calibrated = sorted((int(n.split(":")[1]), n) for n in setups if n.startswith("encoder:") and cal_of.get(n))
    for steps, name in [(k, n) for k, n in calibrated if k > 0]:
        longer = [n for k, n in calibrated if k > steps]
        for second, derived in [(None, f"cascade:{steps}*")] + [(n, f"cascade:{steps}+{n.split(':')[1]}*")
                                                                 for n in longer[-1:]]:
            for v in {v for (n, v) in by if n == name}:
                if ("encoder:0", v) not in by or (second is not None and (second, v) not in by):
                    continue
                first = {r["name"]: r for r in by[("encoder:0", v)]}
                deep = {r["name"]: r for r in by[(second, v)]} if second is not None else {}
                cal = cal_of[name]
                rows = []
                for r in by[(name, v)]:
                    g = first[r["name"]]
                    p0 = float(fast.probability(g["features"]))
                    if fast.verdict(p0) == "real":  # the cascade clears images as real only (detectors.batch)
                        rows.append({**g, "setup": derived, "probability": p0, "verdict": "real", "triaged": True})
                        continue
                    p = float(cal.probability(r["features"]))
                    row = {**r, "setup": derived, "probability": p, "verdict": cal.verdict(p), "triaged": False,
                           "seconds": g["seconds"] + r["seconds"]}
                    if second is not None and row["verdict"] == "uncertain":
                        e, ecal = deep[r["name"]], cal_of[second]
                        p = float(ecal.probability(e["features"]))
                        row = {**e, "setup": derived, "probability": p, "verdict": ecal.verdict(p), "triaged": False,
                               "seconds": row["seconds"] + e["seconds"]}
                    rows.append(row)
                by[(derived, v)] = rows
            if derived not in setups and any(n == derived for n, _ in by):
                setups.append(derived)
                cal_of[derived] = cal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="portraits-64")
    ap.add_argument("--n", type=int, default=100, help="images per class")
    ap.add_argument("--real-start", type=int, default=REAL_START, help="first real portrait (set 1) index; another "
                    "value re-measures on fresh images (e.g. after choosing settings from these)")
    ap.add_argument("--gen-start", type=int, default=GEN_START, help="first generated seed (the same use)")
    ap.add_argument("--setups", default="calibrated",
                    help="comma-separated w_avg:STEPS / encoder:STEPS, or 'calibrated' (every setup with a "
                         "calibration)")
    ap.add_argument("--variants", default="clean,jpeg90,resize0.9")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    ap.add_argument("--encoder", type=Path, default=None, help="the encoder of encoder:N (default: the bundled one)")
    ap.add_argument("--calibration", type=Path, nargs="*", default=[], help="more calibrations to match setups with")
    ap.add_argument("--no-calibration", action="store_true", help="cross-validated figures for every setup")
    ap.add_argument("--rows-out", type=Path, default=None,
                    help="also write every image's features here (JSON lines), for --from-rows")
    ap.add_argument("--from-rows", type=Path, nargs="+", default=None,
                    help="no projection: compute the figures from rows written by --rows-out (e.g. by several "
                         "processes, one variant each, projected before the calibration existed)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    dev = pick_device(args.device)
    G, info = load_generator(args.model, dev)
    E = encoder_for(info, args.encoder, dev)
    cals = [] if args.no_calibration else calibrations_of(info.sha256, info.name, args.calibration)

    if args.from_rows:
        rows = [json.loads(line) for p in args.from_rows for line in p.read_text().splitlines() if line.strip()]
        for r in rows:
            r.setdefault("setup", f"w_avg:{r['steps']}")  # rows written before setups existed
        if any(r["model_sha256"] != info.sha256 for r in rows):
            sys.exit(f"rows of another model than {info.name} ({info.sha256[:12]})")
        by = {}
        for r in rows:
            by.setdefault((r["setup"], r["variant"]), []).append(r)
        setups, cal_of = [], {}
        for (name, _), rs in by.items():
            if name not in cal_of:
                setups.append(name)
                cal_of[name] = next((c for c in cals if c.projector_fingerprint == rs[0]["fingerprint"]), None)
        variants = list(dict.fromkeys(v for _, v in by))
        machine = rows[0]["machine"]
        print(f"model {info.name} ({info.sha256[:12]}), {rows[0]['perceptual']}; from {len(rows)} rows; "
              f"projected on: {machine}", flush=True)
    else:
        names = ([f"{'encoder' if c.projector.get('init') == 'encoder' else 'w_avg'}:{c.projector['num_steps']}"
                  for c in cals] if args.setups == "calibrated" else args.setups.split(","))
        names = list(dict.fromkeys(names))
        if not names:
            sys.exit(f"no calibration for {info.name}: name the setups with --setups")
        setups = [make_setup(s, info, E, cals, not args.no_calibration) for s in names]
        cal_of = {st.name: st.calibration for st in setups}
        perceptual = load_perceptual(device=dev, require=next((c.perceptual for c in cals), None))
        machine = (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"threads {torch.get_num_threads()}, device {dev}")
        print(f"model {info.name} ({info.sha256[:12]}), {perceptual.identity}; setups "
              + ", ".join(f"{st.name} ({'calibrated' if st.calibration else 'cv'})" for st in setups)
              + f"; {args.n} real + {args.n} generated; {machine}; load {os.getloadavg()[0]:.1f}", flush=True)
        variants = args.variants.split(",")
        by = project_rows(setups, variants, args.n, G, info, perceptual, dev, args.batch_size, machine, args.rows_out,
                          args.real_start, args.gen_start)
        setups = [st.name for st in setups]

    add_derived_cascades(by, setups, cal_of)
    figures = {}
    for v in variants:
        first = None
        for name in setups:
            if (name, v) not in by:
                continue
            fig = figures.setdefault(name, {})[v] = figures_of(by[(name, v)], cal_of[name])
            first = first or fig
            fig["speedup"] = first["seconds_per_image"] / fig["seconds_per_image"]
            print(f"{v:>10} {name:>12}: " + "  ".join(f"{k} {x:.4g}" if isinstance(x, float) else f"{k} {x}"
                                                      for k, x in fig.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "model": info.name, "sha256": info.sha256, "n": args.n, "machine": machine,
            "images": {"real": f"set {REAL_SET} from {args.real_start}", "generated": f"seeds from {args.gen_start}"},
            "calibrations": {name: (None if c is None else {
                "path": c.source_path, "n_generated": c.n_generated, "n_real": c.n_real, "created": c.created,
                "projector": c.projector}) for name, c in cal_of.items()},
            "figures": figures,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
