# Shell helpers shared by the examples' Python interop scripts (sourced, not run).
#   find_pythons: fills the array `pythons` with every Python 3.6+ found now, Debian's
#     /usr/bin/python3 first, then each version in pyenv's versions folder ($PYENV_ROOT,
#     default ~/.pyenv), one per real executable; fails loudly when there is none.
#   last_field_of_line FILE REGEX: waits (up to 30 s) until FILE has a complete line (one
#     that ends in a newline) matching REGEX and prints that line's last field after its last
#     ':' (a port in "... on host:port"). A line still being written is not read: a program
#     may write "port " and "45435\n" in two writes, and a reader between them saw "port".

find_pythons() {
  pythons=()
  local seen=" " p real d
  for p in /usr/bin/python3 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/python3; do
    [[ -x $p ]] || continue
    real=$(readlink -f "$p")
    [[ $seen == *" $real "* ]] && continue
    "$p" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 6) else 1)' 2>/dev/null || continue
    seen+="$real "
    pythons+=("$p")
  done
  if [[ ${#pythons[@]} -eq 0 ]]; then
    echo "FAIL: no Python 3 found (Debian's /usr/bin/python3 is expected)"
    return 1
  fi
}

# Prints FILE up to its last newline (nothing when it has none yet).
complete_lines_of() {
  local text
  text=$(cat "$1" 2>/dev/null; echo .)  # the '.' keeps a trailing newline through $(...)
  text=${text%.}
  if [[ $text == *$'\n' ]]; then
    printf '%s' "$text"
  elif [[ $text == *$'\n'* ]]; then
    printf '%s\n' "${text%$'\n'*}"
  fi
}

last_field_of_line() {
  local file=$1 regex=$2 v=""
  for _ in $(seq 600); do
    v=$(complete_lines_of "$file" | grep -m1 -E "$regex" | awk '{print $NF}')
    [[ -n $v ]] && break
    sleep 0.05
  done
  echo "${v##*:}"
}
