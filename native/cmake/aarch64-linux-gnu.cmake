# Cross-compiles the engine and its unit tests for 64-bit Arm Linux with
# Debian's g++-aarch64-linux-gnu; ctest runs the test binaries under
# qemu-user. Brotli comes from Debian multiarch (libbrotli-dev:arm64).
#   cmake -S native -B build-arm64 \
#     -DCMAKE_TOOLCHAIN_FILE=native/cmake/aarch64-linux-gnu.cmake
# scripts/arm64-test.sh does this (npm run test:native:arm64).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Headers and libraries of the target only: the cross sysroot and the
# multiarch directories, never the host's x86-64 libraries.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ARMv8 with the cryptography extension, so the SHA-256 instructions path of
# native/engine/sha256.cc is compiled and checked against the portable one.
# Every 64-bit Apple CPU and the Arm server cores have it; qemu emulates it.
set(REVPATCH_ARM64_MARCH "armv8-a+crypto" CACHE STRING "-march for aarch64")
set(CMAKE_CXX_FLAGS_INIT "-march=${REVPATCH_ARM64_MARCH}")

# The C library must be the cross sysroot's, the one whose ld.so -L selects:
# without LD_LIBRARY_PATH the loader reads the host's ld.so.cache and may
# take the multiarch libc6:arm64 instead, and a loader and libc of different
# builds hang in the first pthread_create. Brotli comes from multiarch.
find_program(REVPATCH_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(REVPATCH_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${REVPATCH_QEMU_AARCH64} -L /usr/aarch64-linux-gnu
      -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib:/usr/lib/aarch64-linux-gnu)
endif()
