#!/usr/bin/env bash
# The Debian package (README, "Install the package"), built and checked;
# tests/run.sh runs this last:
#   1. cargo-deb, installed from crates.io only when it is missing;
#   2. a release build, the man pages and completions it generates
#      (`dirsync generate-assets target/assets`), then `cargo deb --no-build`;
#   3. its contents (`dpkg-deb -c`) against the list below, and its scripts;
#   4. `dpkg -i`, the installed `dirsync --version` and `man -w dirsync`, the
#      group dirsync (sysusers), the installed units (systemd-analyze
#      verify), then `dpkg -P dirsync` (removed and purged, also when a
#      check fails). The group stays, as Debian leaves system groups.
# It changes the machine (/usr/bin/dirsync and the rest, for the length of
# the check), so it refuses to start where a dirsync package is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if dpkg-query -W -f='${Status}' dirsync 2>/dev/null | grep -q 'ok installed'; then
  echo "tests/package.sh: a dirsync package is installed here; this check installs and removes its own (dpkg -P dirsync first)" >&2
  exit 1
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "tests/package.sh: dpkg -i needs root or sudo" >&2; exit 1; }
  SUDO=sudo
fi

started=$(date +%s)
if ! command -v cargo-deb >/dev/null; then
  cargo install --locked cargo-deb
fi
cargo build --release --locked
rm -rf target/assets
target/release/dirsync generate-assets target/assets >/dev/null
deb=$(cargo deb --no-build --locked --output target/debian/ 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { echo "tests/package.sh: cargo deb made no package ($deb)" >&2; exit 1; }
echo "package: $deb ($(( $(date +%s) - started )) s)"

contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
missing=0
for path in \
  /usr/bin/dirsync \
  /usr/lib/systemd/system/dirsync.service \
  /usr/lib/systemd/system/dirsync-sync.service \
  /usr/lib/systemd/system/dirsync-sync.timer \
  /usr/lib/sysusers.d/dirsync.conf \
  /usr/share/doc/dirsync/examples/example.yaml \
  /usr/share/doc/dirsync/examples/example-users.csv \
  /usr/share/doc/dirsync/copyright \
  /usr/share/man/man1/dirsync.1.gz \
  /usr/share/man/man1/dirsync-run.1.gz \
  /usr/share/man/man1/dirsync-sync.1.gz \
  /usr/share/bash-completion/completions/dirsync \
  /usr/share/zsh/vendor-completions/_dirsync \
  /usr/share/fish/vendor_completions.d/dirsync.fish; do
  if ! grep -qxF "$path" <<<"$contents"; then
    echo "tests/package.sh: $path is not in the package" >&2
    missing=1
  fi
done
if [ "$missing" -ne 0 ]; then
  echo "$contents" >&2
  exit 1
fi
# Nothing starts at install: the config and the token come first.
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
dpkg-deb -e "$deb" "$control"
if grep -qE 'systemctl[^|]*(start|enable)|deb-systemd-invoke start' "$control/postinst"; then
  echo "tests/package.sh: postinst enables or starts a unit:" >&2
  cat "$control/postinst" >&2
  exit 1
fi
grep -q 'systemd-sysusers' "$control/postinst" || {
  echo "tests/package.sh: postinst does not create the group dirsync" >&2; exit 1; }
echo "dpkg-deb -c: $(wc -l <<<"$contents") entries, every expected one present: OK"

cleanup() {
  $SUDO dpkg -P dirsync >/dev/null || echo "tests/package.sh: dpkg -P dirsync failed" >&2
  rm -rf "$control"
}
trap cleanup EXIT
$SUDO dpkg -i "$deb" >/dev/null
version=$(/usr/bin/dirsync --version)
[ "$version" = "dirsync $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" ] || {
  echo "tests/package.sh: the installed dirsync says \"$version\"" >&2; exit 1; }
page=$(man -w dirsync)
[ "$page" = /usr/share/man/man1/dirsync.1.gz ] || {
  echo "tests/package.sh: man -w dirsync: $page" >&2; exit 1; }
getent group dirsync >/dev/null || {
  echo "tests/package.sh: no group dirsync after the install" >&2; exit 1; }
# The installed units, and the man pages they name, as systemd sees them.
out=$(systemd-analyze verify /usr/lib/systemd/system/dirsync.service \
  /usr/lib/systemd/system/dirsync-sync.service /usr/lib/systemd/system/dirsync-sync.timer 2>&1) || true
if [ -n "$out" ]; then
  echo "tests/package.sh: systemd-analyze verify on the installed units:" >&2
  echo "$out" >&2
  exit 1
fi
echo "dpkg -i: $version, $page, group dirsync, units verified: OK ($(( $(date +%s) - started )) s in all)"
