# Step timing for scripts/setup.sh and scripts/test.sh: `step NAME` starts a step, `steps_summary`
# prints every step's wall-clock and CPU seconds (user + system of the finished child processes,
# from bash's `times`). CPU seconds say what a step costs on an idle machine even when it was
# measured on a busy one: on 2 cores its wall time is at least CPU / 2.
steps_start=$(date +%s)
steps_names=()
steps_walls=()
steps_cpus=()

steps_times_file=$(mktemp)
# Sets steps_cpu_now. `times` prints two lines (the shell, then its children), each "XmY.YYYs
# XmY.YYYs" (user, system); it must run in this shell, not in a pipeline or $(...), whose subshell
# has no finished children.
children_cpu_seconds() {
  times > "$steps_times_file"
  steps_cpu_now=$(tail -n 1 "$steps_times_file" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); n += t[1] * 60 + t[2] } printf "%d", n }')
}

steps_close() {
  local n=${#steps_names[@]}
  if [ "$n" -gt 0 ] && [ "${#steps_walls[@]}" -lt "$n" ]; then
    steps_walls+=($(( $(date +%s) - steps_step_wall )))
    children_cpu_seconds
    steps_cpus+=($(( steps_cpu_now - steps_step_cpu )))
  fi
}

step() {
  steps_close
  steps_names+=("$*")
  steps_step_wall=$(date +%s)
  children_cpu_seconds
  steps_step_cpu=$steps_cpu_now
  echo "== $* ($(( steps_step_wall - steps_start )) s)"
}

# The summary is printed on every exit, a failed step's included.
trap steps_summary EXIT

steps_summary() {
  steps_close
  echo "== step times (wall s, CPU s of finished child processes)"
  local i
  for i in "${!steps_names[@]}"; do
    printf '%6d %6d  %s\n' "${steps_walls[$i]}" "${steps_cpus[$i]}" "${steps_names[$i]}"
  done
  children_cpu_seconds
  printf '%6d %6d  total (load average now: %s)\n' "$(( $(date +%s) - steps_start ))" "$steps_cpu_now" "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
  rm -f "$steps_times_file"
}

# `in_background LOG COMMAND...` starts a command beside the steps that follow (its output in LOG);
# `await_background` waits for it and fails with the log's tail if it failed. Used for the Rust
# build, which needs none of the installs and downloads that run meanwhile: on a 2-core machine
# the two keep both cores busy. The command is stopped if the script exits first.
in_background() {
  background_log=$1
  shift
  mkdir -p "$(dirname "$background_log")"
  "$@" > "$background_log" 2>&1 &
  background_pid=$!
  trap 'kill "$background_pid" 2>/dev/null || true; steps_summary' EXIT
  echo "   (in the background: $*; output in $background_log)"
}

await_background() {
  if ! wait "$background_pid"; then
    tail -n 60 "$background_log" >&2
    echo "failed: see $background_log" >&2
    exit 1
  fi
  tail -n 1 "$background_log"
}
