#!/usr/bin/env bash
# Offline static checks of infra/terraform (no providers, no AWS account): formatting and
# checkov. A tool that is not installed is reported and skipped, so `make lint-infra` works
# on a machine with neither. checkov lives outside the project venv; point CHECKOV at it,
# e.g. CHECKOV=/tmp/checkov/bin/checkov infra/check.sh
set -euo pipefail
cd "$(dirname "$0")/terraform"

if command -v terraform >/dev/null 2>&1; then
    terraform fmt -check -recursive -diff .
    echo "terraform fmt: ok"
else
    echo "terraform not installed: fmt check skipped"
fi

checkov=${CHECKOV:-checkov}
if command -v "$checkov" >/dev/null 2>&1; then
    # --skip-download: no network needed; registry modules are not fetched, so the checks
    # cover this repo's own resources (see README.md, "Checks").
    "$checkov" -d . --quiet --compact --skip-download
else
    echo "checkov not installed: skipped (pip install checkov in its own venv)"
fi
