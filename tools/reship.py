"""Re-ship the bundled `portraits-64` model from a training snapshot: every file that names the weights' sha256,
made again in order, each step resumable, so that a release interrupted by the end of a session continues where
it stopped.

    python -m tools.reship training/portraits64 --network network-000950.safetensors --work /work/reship
    python -m tools.reship training/portraits64 --network network-000950.safetensors --work /work/reship --list
    python -m tools.reship ... --until calibrate        # stop after that step (the rest next time)

Run from the repository root, with the training stopped or niced (every step wants the CPU). The steps, in order
(`--list` prints them with their commands and whether they are done):

  keep-encoder      copy the bundled encoder aside: the new one starts from it (`train-encoder --init`)
  bundle            tools/build_bundle.py: weights + card, docs/portraits64_grid.png, samples/ (same seeds)
  encoder           `sgproject train-encoder --init` the old encoder, --encoder-steps (resumed if cut), then
                    copied beside the weights
  reals             the calibrations' real images (tools/calibration_reals.py): calibration, domain, paper
  calibrate         the default calibration (25 steps from the guess, zoom and shift, hard negatives)
  calibrate-deep    the second look's calibration (the same with DEEP_STEPS steps): `detect` projects the images
                    the default one leaves uncertain again, longer, and lets it judge them
  calibrate-fast    the fast triage calibration: `--fast`, then `--refit` on the features without LPIPS
  calibrate-domain  the out-of-domain check
  calibrate-paper   the opt-in paper calibration (200 steps from w_avg, clean images)
  fid               FID, precision and recall in the attribute network's space -> bench/results/
  bench-detect      `python -m bench.detect --n 100` (25, 0 and DEEP_STEPS steps; the cascades derived) -> bench/results/
  stress            `python -m bench.stress --n 50` on fresh seeds (--stress-args) -> bench/results/
  card              the measured figures into the model card (build_bundle --evaluation)

Progress is kept in WORK/reship.json: the snapshot, the sha256 of the weights the bundle step made, and each step
done with its wall time. A step counts as done only for those weights; a different --network is refused until
--restart. What is left for a person: the README's figures and the model card's prose, from the files written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from generator.checkpoint import read_header
from generator.util.files import file_sha256, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
NAME = "portraits-64"
WEIGHTS = ROOT / "generator" / "weights" / f"{NAME}.safetensors"
ENCODER = WEIGHTS.with_name(f"{NAME}.encoder.safetensors")
CALIBRATIONS = ROOT / "detectors" / "calibrations"
RESULTS = ROOT / "bench" / "results"
DEFAULT_FEATURES = "lpips,psnr,w_typicality,lpips_ref_flip,lpips_ref_guess,detail,contrast"
FAST_FEATURES = "psnr,w_typicality,detail,contrast"  # no LPIPS: the fast triage runs no VGG pass
PAPER_FEATURES = "lpips,psnr,w_typicality,noise_gaussianity"
# The second look: on 200 + 220 dev images (portraits from 120,000, seeds 1,005,000+) 100 steps from the guess
# reproduced the model's own images far better than 25 (median LPIPS 0.0023 against 0.0047, 98th percentile 0.0082
# against 0.0201; LPIPS-alone AUC 0.977 against 0.949; cross-validated AUC of the default features 1.000 against 0.997)
DEEP_STEPS = 100
# Its 'real' band: the second look judges only the images 25 steps left uncertain, the hardest of the generated ones.
# On 1,000 dev images of bench.stress's generated groups (seeds 60,000,000+), 76 reached it and the band of the
# default rule (0.25% of the calibration's generated images: P <= 0.46) called 4 of them real; at 0.02% (P <= 0.17)
# 1. Chosen on that dev set, after seeing it; bench.stress on fresh seeds measures it.
DEEP_MAX_MISS = "0.0002"
PY = [sys.executable]
SG = [sys.executable, "-m", "sgproject"]


@dataclass
class Step:
    name: str
    commands: list[list[str]]  # run in order from the repository root; a failing command stops the release
    after: str = ""  # what `then` does, in words (for --list)
    then: Callable[[], None] | None = None  # run after the commands
    stdout_json: Path | None = None  # the last command's standard output (JSON) is written here


def _copy_encoder(src: Path, dst: Path, *, keep: bool = False) -> Callable[[], None]:
    """An encoder file and its .json copied to `dst`; with `keep`, never over an existing copy."""
    def copy() -> None:
        if keep and dst.is_file():
            return
        shutil.copy2(src, dst)
        shutil.copy2(src.with_suffix(".json"), dst.with_suffix(".json"))
    return copy


def steps(a: argparse.Namespace) -> list[Step]:
    w = a.work
    enc_out = w / "encoder.safetensors"
    resume = ["--resume"] if (w / "encoder.state.pt").is_file() else ["--init", str(w / "start.encoder.safetensors")]
    stress = shlex.split(a.stress_args)
    return [
        # never overwritten: after `bundle` it is the only copy of the encoder the new one starts from
        Step("keep-encoder", [], "copy the bundled encoder (+ .json) to WORK/start.encoder.safetensors",
             _copy_encoder(ENCODER, w / "start.encoder.safetensors", keep=True)),
        Step("bundle", [[*PY, "-m", "tools.build_bundle", str(a.run_dir), "--network", a.network]]),
        Step("encoder", [[*SG, "train-encoder", "--model", NAME, "--out", str(enc_out), *resume,
                          "--steps", str(a.encoder_steps), "--threads", str(a.threads)]],
             f"copy {enc_out.name} (+ .json) to {ENCODER.relative_to(ROOT)}", _copy_encoder(enc_out, ENCODER)),
        Step("reals", [[*PY, "-m", "tools.calibration_reals", str(w / "calib-real")],
                       [*PY, "-m", "tools.calibration_reals", str(w / "domain-real"), "--portraits", "600",
                        "--photos", "0", "--start", "80000"],
                       [*PY, "-m", "tools.calibration_reals", str(w / "paper-real"), "--portraits", "100",
                        "--photos", "0"]]),
        Step("calibrate", [[*SG, "calibrate", "--real", str(w / "calib-real"), "--n-generated", str(a.n_generated),
                            "--features", DEFAULT_FEATURES, "--out", str(CALIBRATIONS / f"{NAME}.json")]]),
        Step("calibrate-deep", [[*SG, "calibrate", "--real", str(w / "calib-real"), "--n-generated",
                                 str(a.n_generated_deep), "--steps", str(DEEP_STEPS), "--max-miss", DEEP_MAX_MISS,
                                 "--features", DEFAULT_FEATURES,
                                 "--out", str(CALIBRATIONS / f"{NAME}.deep.json")]]),
        Step("calibrate-fast", [[*SG, "calibrate", "--real", str(w / "calib-real"), "--fast", "--n-generated",
                                 str(a.n_generated), "--out", str(w / "fast" / f"{NAME}.fast.json")],
                                [*SG, "calibrate", "--refit", str(w / "fast" / f"{NAME}.fast.json"), "--features",
                                 FAST_FEATURES, "--out", str(CALIBRATIONS / f"{NAME}.fast.json")]]),
        Step("calibrate-domain", [[*SG, "calibrate-domain", "--real", str(w / "domain-real"), "--out",
                                   str(CALIBRATIONS / f"{NAME}.domain.safetensors")]]),
        Step("calibrate-paper", [[*SG, "calibrate", "--real", str(w / "paper-real"), "--no-encoder", "--steps",
                                  "200", "--n-generated", "100", "--clean-only", "--features", PAPER_FEATURES,
                                  "--out", str(CALIBRATIONS / f"{NAME}.paper.json")]]),
        Step("fid", [[*SG, "metrics", "--model", NAME, "--data", "portraits:5000:1", "--feature-net", "portraits",
                      "--n-gen", "5000", "--metrics", "fid,pr", "--json"]],
             f"its output to {(RESULTS / 'fid-pr-portraits64.json').relative_to(ROOT)}",
             stdout_json=RESULTS / "fid-pr-portraits64.json"),
        Step("bench-detect", [[*PY, "-m", "bench.detect", "--n", "100", "--setups",
                               f"encoder:25,encoder:0,encoder:{DEEP_STEPS}",
                               "--out", str(RESULTS / "detect-portraits64-trust-n100.json")]]),
        Step("stress", [[*PY, "-m", "bench.stress", "--n", "50", *stress, "--out",
                         str(RESULTS / "stress-portraits64.json"), "--rows-out",
                         str(RESULTS / "stress-rows-portraits64.jsonl")]]),
        Step("card", [[*PY, "-m", "tools.build_bundle", "--evaluation", "--fid",
                       str(RESULTS / "fid-pr-portraits64.json"), "--bench",
                       str(RESULTS / "detect-portraits64-trust-n100.json")]]),
    ]


def run_step(step: Step) -> None:
    for cmd in step.commands:
        print(f"$ {shlex.join(cmd)}", flush=True)
        captured = step.stdout_json is not None and cmd is step.commands[-1]
        result = subprocess.run(cmd, cwd=ROOT, check=True, text=True, stdout=subprocess.PIPE if captured else None)
        if captured:
            write_json_atomic(step.stdout_json, json.loads(result.stdout))
    if step.then is not None:
        step.then()


def load_progress(a: argparse.Namespace) -> dict:
    path = a.work / "reship.json"
    progress = json.loads(path.read_text()) if path.is_file() else {}
    started = {"run_dir": str(a.run_dir), "network": a.network}
    if progress and {k: progress.get(k) for k in started} != started:
        if not a.restart:
            sys.exit(f"{path} is a release of {progress.get('run_dir')}/{progress.get('network')}; pass --restart "
                     "to start over with this snapshot (the bundled encoder kept aside is kept)")
        progress = {}
    return progress or {**started, "sha256": None, "done": {}}


def is_done(progress: dict, name: str) -> bool:
    """Done for the weights this release made (keep-encoder and bundle: whenever recorded)."""
    record = progress["done"].get(name)
    if record is None:
        return False
    return name in ("keep-encoder", "bundle") or record.get("sha256") == progress["sha256"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("run_dir", type=Path, help="the training run (e.g. training/portraits64)")
    ap.add_argument("--network", required=True, help="the snapshot to ship, in RUN_DIR (chosen by FID)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder: progress, images, the encoder's run")
    ap.add_argument("--encoder-steps", type=int, default=1000, help="minibatches of the new encoder (from the old)")
    ap.add_argument("--n-generated", type=int, default=1300, help="generated images of the default and fast "
                    "calibrations: more than real ones, so that the tail of projections that did not finish, which "
                    "sets the 'real' band, is seen (detectors/calibration.py)")
    ap.add_argument("--n-generated-deep", type=int, default=300, help="generated images of the deep calibration "
                    "(100 steps each: 4x the time of the default's)")
    ap.add_argument("--stress-args", default="--real-start 100000 --gen-start 30000000 --photo-seed 4",
                    help="seeds of the stress benchmark: fresh ones, never used before")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--until", default=None, help="stop after this step")
    ap.add_argument("--list", action="store_true", help="print the steps, their commands and progress; run nothing")
    ap.add_argument("--restart", action="store_true", help="forget the progress of another snapshot's release")
    a = ap.parse_args(argv)
    if not (a.run_dir / a.network).is_file():
        sys.exit(f"no snapshot {a.run_dir / a.network}")
    a.work.mkdir(parents=True, exist_ok=True)
    progress = load_progress(a)
    plan = steps(a)
    names = [s.name for s in plan]
    if a.until is not None and a.until not in names:
        sys.exit(f"--until: no step {a.until!r}; the steps are {', '.join(names)}")
    if a.list:
        for s in plan:
            mark = "done" if is_done(progress, s.name) else "todo"
            print(f"[{mark}] {s.name}")
            for cmd in s.commands:
                print(f"         $ {shlex.join(cmd)}")
            if s.after:
                print(f"         then: {s.after}")
        return
    for s in plan:
        if not is_done(progress, s.name):
            print(f"\n== {s.name}", flush=True)
            t0 = time.time()
            run_step(s)
            if s.name == "bundle":
                progress["sha256"] = file_sha256(WEIGHTS)
                kimg = read_header(WEIGHTS).get("info", {}).get("training", {}).get("kimg")
                print(f"bundled {a.network} (kimg {kimg}): sha256 {progress['sha256'][:12]}", flush=True)
            progress["done"][s.name] = {"sha256": progress["sha256"], "seconds": round(time.time() - t0, 1),
                                        "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_json_atomic(a.work / "reship.json", progress)
        if s.name == a.until:
            print(f"stopped after {s.name} (--until)")
            return
    print(f"\nreleased {a.network}: sha256 {progress['sha256'][:12]}; now update the README's figures and the card")


if __name__ == "__main__":
    main()
