"""The shipped bundle is consistent: the calibration, the model card and samples/ belong to the shipped weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from detectors.calibration import Calibration, bundled_calibration_path
from generator import load_generator
from generator.registry import WEIGHTS_DIR
from projector.project import ProjectorConfig

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_calibration_is_for_the_bundled_weights():
    G, info = load_generator("portraits-64")
    cal = Calibration.load(bundled_calibration_path("portraits-64"))
    assert cal.model_sha256 == info.sha256, "recalibrate after replacing the weights (see tools/build_bundle.py)"
    assert ProjectorConfig(**cal.projector).fingerprint() == cal.projector_fingerprint
    assert cal.n_real >= 100 and cal.n_generated >= 100


def test_model_card_json_matches_the_weights_header():
    _, info = load_generator("portraits-64")
    card = json.loads((WEIGHTS_DIR / "portraits-64.json").read_text())
    assert card["info"]["training"] == info.info["training"]
    ev = card.get("evaluation")
    if ev is not None:  # measured figures, added after calibration and benchmark
        assert ev["model_sha256"] == info.sha256


def test_samples_have_labels():
    rows = list(csv.DictReader(open(ROOT / "samples" / "labels.csv")))
    files = sorted(p.name for p in (ROOT / "samples").glob("*.png"))
    assert sorted(r["file"] for r in rows) == files and "face.png" in files
    assert {r["label"] for r in rows} == {"generated", "real"}


def test_bundled_encoder_and_calibrations_belong_together():
    """The encoder is for the shipped weights; the default calibration (25 steps from its guess) and the fast one
    (the guess alone) name it, and the fast one scores the guess with the same settings otherwise, so that `detect`
    can use it as the cascade's first stage. Both were made with hard negatives and carry a content check; the
    paper's calibration (200 steps from w_avg) is for the same weights."""
    import dataclasses

    from detectors.calibration import CALIBRATIONS_DIR
    from projector.encoder import bundled_encoder_path, encoder_for

    _, info = load_generator("portraits-64")
    assert bundled_encoder_path("portraits-64") is not None, "ship generator/weights/portraits-64.encoder.safetensors"
    E = encoder_for(info)
    assert E is not None, "the bundled encoder was trained for other weights: retrain it (sgproject train-encoder)"
    steps = Calibration.load(bundled_calibration_path("portraits-64"))
    fast = Calibration.load(bundled_calibration_path("portraits-64", variant="fast"))
    for cal in (steps, fast):
        assert cal.model_sha256 == info.sha256 and cal.n_real >= 100 and cal.n_generated >= 100
        assert cal.projector["init"] == "encoder" and cal.projector["encoder_sha256"] == E.identity()
        assert cal.groups is not None and len(cal.groups["real"]) > 1 and len(cal.groups["generated"]) > 1
        assert cal.content is not None and set(cal.content["thresholds"]) == {"contrast", "detail"}
    paper = Calibration.load(CALIBRATIONS_DIR / "portraits-64.paper.json")
    assert paper.model_sha256 == info.sha256 and paper.projector.get("init", "w_avg") == "w_avg"  # made before "init"
    assert steps.projector["num_steps"] == 25 and fast.projector["num_steps"] == 0
    # the guess alone: no steps, so no zoom and shift either (detectors.batch._check_triage)
    cascade_start = dataclasses.replace(ProjectorConfig(**steps.projector), num_steps=0, geometry=0.0)
    assert cascade_start.fingerprint() == fast.projector_fingerprint


def test_bundled_second_look_continues_the_default_calibration():
    """The deep calibration is the cascade's last stage: the default calibration's projection with more steps (the
    same encoder, zoom and shift, hard negatives, real folder and the first of its generated seeds: 100 steps for
    each of its 1,300 would take 4x its time), so `detect` uses it for what stays uncertain."""
    import dataclasses

    from detectors.batch import Detector

    _, info = load_generator("portraits-64")
    steps = Calibration.load(bundled_calibration_path("portraits-64"))
    deep = Calibration.load(bundled_calibration_path("portraits-64", variant="deep"))
    assert deep.model_sha256 == info.sha256 and deep.projector["num_steps"] > steps.projector["num_steps"]
    longer = dataclasses.replace(ProjectorConfig(**steps.projector), num_steps=deep.projector["num_steps"])
    assert longer.fingerprint() == deep.projector_fingerprint
    # the same real folder; the default's content check, set on more images, leaves a few more of the flattest out
    assert deep.real_source == steps.real_source and set(deep.groups["real"]) == set(steps.groups["real"])
    assert 0 <= deep.n_real - steps.n_real <= 0.02 * deep.n_real
    first, last = (int(s) for s in deep.generated_seeds.split("-"))
    assert steps.generated_seeds.split("-")[0] == str(first) and int(steps.generated_seeds.split("-")[1]) >= last
    assert set(deep.groups["generated"]) == set(steps.groups["generated"])
    det = Detector.from_options("portraits-64", "cpu")
    assert det.escalation is not None and det.escalation.projector_fingerprint == deep.projector_fingerprint
    assert Detector.from_options("portraits-64", "cpu", escalate=False).escalation is None


def test_bundled_domain_check_fits_the_bundle():
    """The domain check was fitted on the shipped weights' samples with the shipped attribute network, and lets
    the quick start's samples through (they are the model's domain: portraits and the model's own images)."""
    from detectors.batch import prepare_image
    from detectors.domain import domain_check_for, embed

    _, info = load_generator("portraits-64")
    check = domain_check_for("portraits-64")
    assert check is not None, "ship detectors/calibrations/portraits-64.domain.safetensors"
    assert check.model_sha256 == info.sha256, "fit the domain check again (sgproject calibrate-domain)"
    net = check.network()  # refuses another attribute network
    pixels = [prepare_image(p, 64).pixels for p in sorted((ROOT / "samples").glob("*.png"))]
    assert all(check.reason(float(d)) is None for d in check.distances(embed(net, pixels)))
