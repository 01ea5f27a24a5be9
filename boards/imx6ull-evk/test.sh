#!/usr/bin/env bash
# boards/imx6ull-evk/test.sh — ./run test --board imx6ull-evk: cross build + ctest under
# qemu-user (what runs: board.conf). Extra arguments go to ctest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=boards/common.sh
. "$here/../common.sh"
board_test "$here" "$@"
