#!/usr/bin/env bash
# Checks mmap_server's file handling:
#   check_mmap_server_file.sh MMAP_SERVER
# - its default file must not be a predictable name: a symlink planted at the name the old
#   server used ($TMPDIR/corio-mmap-PID, the PID known before the exec) must not be
#   followed (its target keeps its contents), and no file of its own is left behind;
# - --help must say that --file truncates the file.
set -u
exe=$1
dir=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "check_mmap_server_file: $*" >&2
  [[ -f $dir/out ]] && sed 's/^/  | /' "$dir/out" >&2
  exit 1
}
"$exe" --help 2>&1 | grep -qi 'truncat' || fail "--help does not say that --file truncates the file"

echo "precious contents" >"$dir/victim"
mkfifo "$dir/go"
# The subshell's PID is the server's once it execs: plant the symlink at that name first.
(
  read -r _ <"$dir/go"
  TMPDIR=$dir exec "$exe" --frames 2 >"$dir/out" 2>&1 </dev/null
) &
pid=$!
ln -s "$dir/victim" "$dir/corio-mmap-$pid"
echo go >"$dir/go"
wait "$pid"
rc=$?
pid=
[[ $rc -eq 0 ]] || fail "exit status $rc"
echo "precious contents" | cmp -s - "$dir/victim" ||
  fail "the symlink at $dir/corio-mmap-PID was followed: its target now holds $(stat -c %s "$dir/victim") bytes"
left=$(find "$dir" -name 'corio-mmap-*' ! -type l)
[[ -z $left ]] || fail "left behind: $left"
echo "mmap_server: the default file is not at a guessable name, and --help says --file truncates"
