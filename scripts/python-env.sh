#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv the tests and benchmarks use,
# target/pyenv: installs maturin and the frameworks the tests serve (Flask,
# Django) from PyPI, builds the two wheels with maturin and installs them there,
# the way an operator would with pip:
#   zergling  crates/zergling-py (abi3: one wheel for CPython >= 3.11): the
#             `zergling` command and module;
#   zergpool  the repository root (maturin `bin` bindings): the `zergpool` command.
# Prints the wheels' paths. Idempotent; needs python3 with venv (Debian:
# python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ZERGPOOL_TEST_VENV:-target/pyenv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" "flask>=3,<4" "django>=5,<6" \
  "websockets>=14,<16" "fastapi>=0.115,<1" "a2wsgi>=1.10,<2" "uvloop>=0.21,<1" \
  "uwsgitop==0.12" "prometheus_client>=0.20,<1"
rm -rf target/wheels
"$VENV/bin/maturin" build --quiet --release -m crates/zergling-py/Cargo.toml --out target/wheels >&2
"$VENV/bin/maturin" build --quiet --release -m Cargo.toml --bindings bin --out target/wheels >&2
wheels=$(ls target/wheels/zergling-*.whl target/wheels/zergpool-*.whl)
# shellcheck disable=SC2086
"$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps $wheels
echo "$wheels"
