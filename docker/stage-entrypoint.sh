#!/bin/sh
# Entrypoint of the NPU stage images: the CANN toolkit's environment (library paths, ASCEND_* variables) for
# every command, since the stages run as `/bin/sh -c ...` (no login shell sources set_env.sh), then the command.
# Absent on a base without CANN (the CPU smoke image), where it only runs the command.
for env in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/nnal/atb/set_env.sh; do
  # shellcheck disable=SC1090
  if [ -f "$env" ]; then . "$env"; fi
done
exec "$@"
