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
# no running systemd is needed); man-db, for the man pages the units name
# and the package ships (systemd/check.sh, tests/it/packaging.rs,
# tests/package.sh); dpkg-dev, for the package's library dependencies
# (dpkg-shlibdeps, which cargo-deb runs); mount and util-linux (unshare) for
# the journal tests (tests/it/daemon.rs), which give dirsync a /run of its own.
PACKAGES=(slapd ldap-utils systemd man-db dpkg-dev mount util-linux)
# A Samba Active Directory DC for the Active Directory tests
# (tests/it/samba.rs provisions its own into a temp dir and runs it in a
# network namespace of its own, so it needs root): Samba, ldbadd (ldb-tools),
# unshare and nsenter (util-linux), ip (iproute2) and openssl. Installed
# without recommends: those (libnss-winbind, libpam-winbind) would change
# the machine's NSS and PAM setup. A samba service the packages may start
# on the machine cannot get in the way: the tests' DC has a namespace and ports of its own.
SAMBA_PACKAGES=(samba samba-ad-dc samba-ad-provision samba-dsdb-modules ldb-tools util-linux iproute2 openssl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
missing_samba=()
for p in "${SAMBA_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_samba+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || [ ${#missing_samba[@]} -gt 0 ]; then
  SUDO=$(need_root)
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
  if [ ${#missing_samba[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_samba[@]}"
  fi
fi

command -v cargo >/dev/null || { echo "tests/run.sh: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A clean run never reuses incremental state, so it keeps none: on a clean
# clone that state was 2.1 GB of target/debug/incremental.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

bash systemd/check.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
cargo bench --locked --bench throughput -- small
cargo bench --locked --bench csv_read -- small
cargo bench --locked --bench plan -- small
# Last, as it installs the package on this machine (and removes it again).
bash tests/package.sh

# The build's footprint on disk. A clean run's target/ was 7.0 GB with full
# debug info and incremental state, and a CI machine ran out of disk; with
# line tables only and no incremental state it is 2,962 MiB (debug 1.8 GB,
# release 1.2 GB), held to a budget so that growth shows here first.
if [ -n "${CI:-}" ]; then
  used_mib=$(du -sm target | cut -f1)
  budget_mib=4096
  echo "target/ after the run: ${used_mib} MiB (budget ${budget_mib} MiB)"
  if [ "$used_mib" -gt "$budget_mib" ]; then
    echo "tests/run.sh: target/ is ${used_mib} MiB, over the ${budget_mib} MiB budget" >&2
    exit 1
  fi
fi
