#!/usr/bin/env bash
# The refined-twin rows at oversample 2 of docs/results.md ("Hardware in the loop"):
# train on the SLM-pixel-grid refined twin, deploy, then in-situ from that model.
# Needs experiments/hil_gap.py to have run first (calibrations, refine twin files).
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
E=experiments/results/hil_gap
B=experiments/benches/misaligned.toml
CAL="--calibration $E/calibrations/slm1.cal.json --calibration $E/calibrations/slm2.cal.json --calibration $E/calibrations/slm3.cal.json"
TWIN=$E/misaligned.oversample2.twin.json   # labctl refine --oversample 2 (the default for this bench)
EP=tcp://127.0.0.1:47511
.venv/bin/python -m labctl train --bench $B $CAL --out $E/models --threads 1 --name refined-os2 --epochs 6 --twin $TWIN
.venv/bin/python -m labctl serve --bench $B --bind $EP &
SP=$!
trap 'kill $SP' EXIT
sleep 6
.venv/bin/python -m labctl deploy $E/models/refined-os2 --endpoint $EP --bench $B --calibrations $E/calibrations --limit 500 --out $E/runs/refined-os2 --timeout 60
.venv/bin/python -m labctl train --bench $B $CAL --out $E/models --threads 1 --name insitu-refined-os2 --epochs 16 \
    --in-situ $EP --init $E/models/refined-os2 --twin $TWIN --images 512 --lr 0.02
.venv/bin/python -m labctl deploy $E/models/insitu-refined-os2 --endpoint $EP --bench $B --calibrations $E/calibrations --limit 500 --out $E/runs/insitu-refined-os2 --timeout 60
