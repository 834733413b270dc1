#!/usr/bin/env bash
# Trains the tissue classifier shipped in recon/src/colour/weights.json.
#
#   recon/train/train.sh [CASES] [SEED]
#
# 1. `tissue_samples` renders CASES training colour phantoms (random geometry, tissue map,
#    skin tone and lighting; seeds disjoint from the evaluation phantoms of
#    recon/tests/tissue.rs), runs each through fusion, vertex colouring and periwound
#    calibration, and writes one CSV row per seen wound vertex (features + true class);
# 2. `train_tissue` fits the MLP and writes the weights with their provenance.
# Pure Rust, nothing downloaded; deterministic for CASES and SEED. Pass CARGO=... to use a
# cargo wrapper (e.g. CARGO="env WT_CGU=255 /work/bin/wtcargo"); SAMPLES=path keeps the CSV
# there and reuses it when it exists (to try training settings without re-rendering);
# HIDDEN, EPOCHS, CLASS_CAP and DROP (features left out, `train_tissue`) are passed through.
# CORRECTIONS=path adds a clinic's tissue corrections (the server's
# `GET /v1/admin/tissue-corrections.ndjson`, pages concatenated) to the phantom rows, one
# row per corrected sample (`correction_samples`); the provenance records the file's SHA-256.
set -euo pipefail
cd "$(dirname "$0")/../.."
CASES="${1:-160}"
SEED="${2:-1}"
HIDDEN="${HIDDEN:-24}"
EPOCHS="${EPOCHS:-40}"
CARGO="${CARGO:-cargo}"
OUT="${OUT:-recon/src/colour/weights.json}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SAMPLES="${SAMPLES:-$WORK/samples.csv}"
$CARGO build --release -p coherency-recon --example tissue_samples --example train_tissue --example correction_samples
TARGET="${CARGO_TARGET_DIR:-target}"
[ -s "$SAMPLES" ] || "$TARGET/release/examples/tissue_samples" "$CASES" "$SEED" "$SAMPLES"
CORR=""
if [ -n "${CORRECTIONS:-}" ]; then
  # Appended to a copy, so a kept SAMPLES file stays the phantoms' alone.
  cp "$SAMPLES" "$WORK/with-corrections.csv"
  SAMPLES="$WORK/with-corrections.csv"
  "$TARGET/release/examples/correction_samples" "$CORRECTIONS" "$SAMPLES"
  CORR=$(printf ',"corrections_sha256":"%s"' "$(sha256sum "$CORRECTIONS" | cut -d' ' -f1)")
fi
PROV=$(printf '{"name":"coherency-tissue-mlp@2","generator":"phantom::tissue::training_cases(%s, %s)","command":"recon/train/train.sh %s %s (HIDDEN=%s EPOCHS=%s)","date":"%s"%s}' \
  "$CASES" "$SEED" "$CASES" "$SEED" "$HIDDEN" "$EPOCHS" "$(date -u +%Y-%m-%d)" "$CORR")
"$TARGET/release/examples/train_tissue" "$SAMPLES" "$OUT" "$HIDDEN" "$EPOCHS" "$SEED" "$PROV"
echo "wrote $OUT"
