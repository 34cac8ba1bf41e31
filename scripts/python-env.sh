#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv the tests and benchmarks use,
# target/pyenv: installs maturin and the frameworks the tests serve (Flask,
# Django) from PyPI, builds the `zergling` wheel from crates/zergling-py with
# maturin (abi3: one wheel for CPython >= 3.11) and installs it there, the way an
# operator would with pip. Prints the wheel's path. Idempotent; needs python3
# with venv (Debian: python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ZERGPOOL_TEST_VENV:-target/pyenv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" "flask>=3,<4" "django>=5,<6"
rm -rf target/wheels
"$VENV/bin/maturin" build --quiet --release -m crates/zergling-py/Cargo.toml --out target/wheels >&2
wheel=$(ls target/wheels/zergling-*.whl)
"$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"
echo "$wheel"
