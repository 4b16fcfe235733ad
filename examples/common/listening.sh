# Sourced by the examples' check scripts: wait_listening PID OUT waits (up to 60 s, for a
# slow or loaded machine) until the server PID prints "listening on HOST:PORT" in the file
# OUT, or exits, and sets host and port from that line (port empty if none came).
wait_listening() {
  local i
  for ((i = 0; i < 600; ++i)); do
    if grep -q 'listening on ' "$2" || ! kill -0 "$1" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  host='' port=''
  read -r host port < <(sed -n 's/.*listening on \([0-9.]*\):\([0-9]*\).*/\1 \2/p' "$2" | head -n 1)
}
