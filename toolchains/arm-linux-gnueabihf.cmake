# Cross toolchain for 32-bit ARM boards, hard float (Debian armhf): compiler,
# sysroot and the qemu-user emulator that runs the tests. Nothing else here.
# Sysroot: toolchains/sysroot.sh armhf (default build/sysroot-armhf; override
# with -DKP_SYSROOT=... or the KP_SYSROOT environment variable).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)

if(NOT KP_SYSROOT)
  if(DEFINED ENV{KP_SYSROOT})
    set(KP_SYSROOT "$ENV{KP_SYSROOT}")
  else()
    get_filename_component(KP_SYSROOT "${CMAKE_CURRENT_LIST_DIR}/../build/sysroot-armhf" ABSOLUTE)
  endif()
endif()
set(KP_SYSROOT "${KP_SYSROOT}" CACHE PATH "Target sysroot (toolchains/sysroot.sh armhf)")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES KP_SYSROOT)
if(NOT EXISTS "${KP_SYSROOT}/.kp-sysroot-stamp")
  message(FATAL_ERROR "no sysroot at ${KP_SYSROOT}: run toolchains/sysroot.sh armhf first")
endif()
set(CMAKE_SYSROOT "${KP_SYSROOT}")

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -L "${KP_SYSROOT}")
