#!/usr/bin/env bash
# Checks the unit files in this folder (tests/run.sh runs it, so CI does):
#   1. systemd-analyze verify, in a throwaway root that holds a copy of the
#      host's unit library and stand-ins for the programs ExecStart= and
#      ExecReload= name (verify insists they exist and are executable);
#   2. systemd-analyze security --offline=yes on each service: the overall
#      exposure must be MAX_EXPOSURE or lower.
# Neither needs a running systemd (there is none in CI's container).
# verify also runs man(1) on every page a unit's Documentation= names:
# dirsync's own come from the binary (`generate-assets`, built here with
# cargo unless DIRSYNC_MAN_DIR names a folder that holds man1/), and go
# first on MANPATH.
set -euo pipefail
cd "$(dirname "$0")"
MAX_EXPOSURE=1.5
UNITS=(dirsync.service dirsync-sync.service dirsync-sync.timer)
SERVICES=(dirsync.service dirsync-sync.service)

command -v systemd-analyze >/dev/null || {
  echo "systemd/check.sh: systemd-analyze is missing (Debian package: systemd)" >&2; exit 1; }

library=
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -e "$d/sysinit.target" ]; then library=$d; break; fi
done
[ -n "$library" ] || { echo "systemd/check.sh: no systemd unit library found" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/bin "$root/bin"
cp -a "$library" "$root/usr/lib/systemd/system"
for program in dirsync kill; do
  install -m 0755 /bin/true "$root/usr/bin/$program"
done
cp "${UNITS[@]}" "$root/etc/systemd/system/"

command -v man >/dev/null || {
  echo "systemd/check.sh: man is missing (Debian package: man-db)" >&2; exit 1; }
man_dir=${DIRSYNC_MAN_DIR:-}
if [ -z "$man_dir" ]; then
  cargo run --quiet --locked -- generate-assets "$root/assets" >/dev/null
  man_dir="$root/assets/man"
fi
# A trailing colon: the system's pages (systemd.exec(5)) after ours.
export MANPATH="$man_dir:"

# verify prints nothing for clean units; any line (an unknown key, a bad
# value, a missing program) is a failure, whatever its exit code.
if ! out=$(systemd-analyze verify --root="$root" "${UNITS[@]}" 2>&1) || [ -n "$out" ]; then
  echo "systemd/check.sh: systemd-analyze verify found problems:" >&2
  echo "$out" >&2
  exit 1
fi
echo "systemd-analyze verify: ${UNITS[*]}: OK"

for unit in "${SERVICES[@]}"; do
  report=$(systemd-analyze security --offline=yes --no-pager "./$unit" 2>&1) || true
  level=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  if [ -z "$level" ]; then
    echo "systemd/check.sh: no overall exposure level for $unit:" >&2
    echo "$report" >&2
    exit 1
  fi
  if awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l > m) }'; then
    echo "systemd/check.sh: $unit: exposure $level is above $MAX_EXPOSURE:" >&2
    printf '%s\n' "$report" | grep '✗' >&2 || true
    exit 1
  fi
  echo "systemd-analyze security: $unit: exposure $level (at most $MAX_EXPOSURE): OK"
done
