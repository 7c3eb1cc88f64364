#!/usr/bin/env bash
# Re-resolve the pinned dependencies of pyproject.toml into requirements.lock.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet "$root[test]"
{
    echo "# Full, exact lock of the runtime and test environment (Python 3.11, x86_64)."
    echo "# Regenerate: bash scripts/lock.sh"
    "$tmp/venv/bin/python" -m pip freeze --all --exclude rsvit --exclude pip
} > "$root/requirements.lock"
