# Sourced by the examples' check scripts. gone_within PID TENTHS: waits up to TENTHS tenths
# of a second (looking at once, then every 0.1 s) until process PID is gone; a zombie counts
# as gone (it has ended; its parent has not waited for it yet). Returns 1 if it still runs.
gone_within() {
  local i
  for ((i = 0; i <= $2; ++i)); do
    [[ -e /proc/$1 ]] || return 0
    [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]] && return 0
    ((i < $2)) && sleep 0.1
  done
  return 1
}
