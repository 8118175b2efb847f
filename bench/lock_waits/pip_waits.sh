#!/bin/sh
# A `fastpex lock --pip` wrapper: the real interpreter ($FASTPEX_WAITS_PYTHON, else python3)
# under pip_waits_boot.py, which times every request pip makes.
exec "${FASTPEX_WAITS_PYTHON:-python3}" "$(dirname "$0")/pip_waits_boot.py" "$@"
