#!/bin/sh
# Checks an app's error handling: `cli_error.sh REGEX COMMAND...` runs COMMAND and passes when it
# exits non-zero, writes nothing on stdout and exactly one line on stderr, and that line matches REGEX
# (grep -E). `cli_error.sh --unless-gpu PROBE REGEX COMMAND...` reports "skipped" (exit 77) instead
# when PROBE (the build's cuda_device_count) prints a device count above 0: for errors that only a
# machine without a GPU gives. The binary is asked, not nvidia-smi, so that a container without
# nvidia-smi, or with the devices hidden, is judged as the app will judge it.
if [ "$1" = "--unless-gpu" ]; then
  probe=$2
  shift 2
  count=$("$probe") || { echo "FAIL: $probe did not run"; exit 1; }
  case $count in
    '' | *[!0-9]*) echo "FAIL: $probe printed '$count', not a device count"; exit 1 ;;
  esac
  if [ "$count" -gt 0 ]; then
    echo "skipped: $count CUDA device(s) visible to this build"
    exit 77
  fi
fi
regex=$1
shift
out=$("$@" 2>/tmp/cli_error.$$)
rc=$?
err=$(cat /tmp/cli_error.$$)
rm -f /tmp/cli_error.$$
echo "exit status: $rc"
echo "stderr: $err"
[ "$rc" -ne 0 ] || { echo "FAIL: exit status 0"; exit 1; }
[ -z "$out" ] || { echo "FAIL: wrote on stdout: $out"; exit 1; }
[ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || { echo "FAIL: not exactly one line on stderr"; exit 1; }
printf '%s\n' "$err" | grep -Eq -- "$regex" || { echo "FAIL: stderr does not match: $regex"; exit 1; }
echo "ok"
