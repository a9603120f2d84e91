#!/bin/sh
# Checks an app's error handling: `cli_error.sh REGEX COMMAND...` runs COMMAND and passes when it
# exits non-zero, writes nothing on stdout and exactly one line on stderr, and that line matches REGEX
# (grep -E). `cli_error.sh --unless-gpu REGEX COMMAND...` reports "skipped" (exit 77) instead when
# nvidia-smi lists a GPU: for errors that only a machine without one gives.
if [ "$1" = "--unless-gpu" ]; then
  shift
  if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "skipped: a GPU is present"
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
