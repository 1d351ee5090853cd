#!/usr/bin/env bash
# The project's test command (README, "Run the tests"): installs what the
# tests need when it is missing, then runs formatting, lint and every test.
# A missing component fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then echo sudo; else
      echo "tests/run.sh: installing system packages needs root or sudo" >&2; exit 1
    fi
  fi
}

# System packages the tests use: a real OpenLDAP server and its tools for
# the LDAP source's tests (tests/it/slapd.rs starts its own slapd), and
# systemd for systemd-analyze, which checks the unit files (systemd/check.sh;
# no running systemd is needed).
PACKAGES=(slapd ldap-utils systemd)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$(need_root)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "tests/run.sh: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

bash systemd/check.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
