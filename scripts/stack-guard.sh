#!/usr/bin/env bash
# Runs a command and guarantees that nothing it started outlives the caller.
# The caller starts this script as the leader of a new process group with a pipe on stdin.
# When that pipe closes (the caller exited, normally, by panic or by SIGKILL) or the
# command exits, the whole group is terminated: wrangler, workerd and all their children.
# Background jobs of a non-interactive shell read /dev/null, so keep the pipe on fd 3.
exec 3<&0
"$@" < /dev/null &
child=$!
(
  trap '' TERM
  cat <&3 > /dev/null
  kill -TERM -- -$$ 2>/dev/null
  sleep 2
  # BATON_GUARD_CLEANUP: a scratch directory to remove once the stack is gone.
  [ -n "${BATON_GUARD_CLEANUP:-}" ] && rm -rf -- "$BATON_GUARD_CLEANUP"
  kill -KILL -- -$$ 2>/dev/null
) &
wait "$child"
status=$?
kill -TERM -- -$$ 2>/dev/null
exit "$status"
