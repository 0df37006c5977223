"""FID, precision and recall of training snapshots in the portrait attribute network's feature space, with the
real-vs-real floor.

    python -m bench.fid training/portraits64/network-000052.safetensors ... [--n 5000] [--out fid.json]

Real images: held-out portraits of set 1 (the first N; training used set 0). The floor is the FID between those and
N portraits of set 2 (and their precision/recall): what two independent samples of the real distribution
score, i.e. the best a perfect generator could reach with this N. Precision/recall (k = 3) tell low fidelity
(precision) apart from mode dropping (recall). Inception-v3 weights cannot be downloaded where this project is
built, so the feature network is generator/metrics/attrnet.py (`--feature-net portraits`); pass --feature-net
inception where they exist.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench._common import cpu_model
from generator import load_generator
from generator.data.datasets import load_portraits
from generator.metrics.features import load_feature_network
from generator.metrics.common import real_uint8_batches
from generator.metrics.fid import compute_fid, frechet_distance, real_statistics
from generator.metrics.precision_recall import compute_precision_recall, precision_recall
from generator.util.files import write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="snapshots or registered names")
    ap.add_argument("--n", type=int, default=5000, help="real and generated images each")
    ap.add_argument("--feature-net", default="portraits")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    net = load_feature_network(args.feature_net)
    real = load_portraits(args.n, 64, seed=1)
    other = load_portraits(args.n, 64, seed=2)
    mu1, s1, _, _ = real_statistics(real, net)
    mu2, s2, _, _ = real_statistics(other, net)
    floor = frechet_distance(mu1, s1, mu2, s2)
    feats = [torch.cat([net(x) for x in real_uint8_batches(d, args.n, batch=64, device="cpu")]) for d in (real, other)]
    floor_p, floor_r = precision_recall(feats[0], feats[1])
    print(f"feature network {net.identity}; {args.n} real (set 1) vs {args.n} generated; {cpu_model()}")
    print(f"{'real set 2 (floor)':>40}: FID {floor:.3f}  precision {floor_p:.3f}  recall {floor_r:.3f}")
    rows = []
    for m in args.models:
        G, info = load_generator(m, "cpu")
        t0 = time.time()
        r = compute_fid(G, real, n_gen=args.n, feature_net=net)
        pr = compute_precision_recall(G, real, n=args.n, feature_net=net)  # the same generated images (seed 0)
        kimg = (info.info.get("training") or {}).get("kimg", info.info.get("kimg"))
        rows.append({"model": m, "sha256": info.sha256, "kimg": kimg, "fid": r["fid"], "precision": pr["precision"],
                     "recall": pr["recall"]})
        print(f"{m:>40}: FID {r['fid']:.3f}  precision {pr['precision']:.3f}  recall {pr['recall']:.3f}  "
              f"(kimg {kimg}, {time.time() - t0:.0f} s)", flush=True)
    if args.out:
        write_json_atomic(args.out, {"feature_net": net.identity, "n": args.n, "real": f"portraits:{args.n}:1",
                                     "floor_real_set2": floor, "floor_precision_recall": [floor_p, floor_r],
                                     "models": rows, "cpu": cpu_model(), "torch": torch.__version__})


if __name__ == "__main__":
    main()
