#!/usr/bin/env bash
# boards/rpi4/test.sh — ./run test --board rpi4: cross build + ctest under
# qemu-user (what runs: board.conf). Extra arguments go to ctest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=boards/common.sh
. "$here/../common.sh"
board_test "$here" "$@"
