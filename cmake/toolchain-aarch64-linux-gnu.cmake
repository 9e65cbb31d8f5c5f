# CMake toolchain file: cross-compile edgetune for aarch64 Linux with Debian's cross compiler
# (crossbuild-essential-arm64 -> aarch64-linux-gnu-g++) and run the results under qemu-user.
#
#   cmake -S . -B build/aarch64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake \
#     -DEDGETUNE_BLAS=OWN -DEDGETUNE_NATIVE_ARCH=OFF
#   cmake --build build/aarch64 && ctest --test-dir build/aarch64   # tests run through qemu
#
# Target libraries and headers are searched only under /usr/aarch64-linux-gnu (the cross
# "sysroot" Debian's cross packages install into); programs (flatc) come from the host. So
# find_package(GTest) does not pick up an x86 libgtest and csrc/CMakeLists.txt builds
# /usr/src/googletest with this toolchain instead; the architecture-independent FlatBuffers
# headers are taken from the host on purpose (csrc/CMakeLists.txt, NO_CMAKE_FIND_ROOT_PATH).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(EDGETUNE_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${EDGETUNE_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${EDGETUNE_CROSS_TRIPLE}-g++)

set(CMAKE_FIND_ROOT_PATH /usr/${EDGETUNE_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)   # host tools (flatc, qemu)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)    # target libraries only
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)    # target headers only
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)    # no host GTestConfig.cmake & co.

# Run target binaries (ctest, try_run) through user-mode qemu with the cross loader/libs.
find_program(EDGETUNE_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(EDGETUNE_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${EDGETUNE_QEMU_AARCH64} -L /usr/${EDGETUNE_CROSS_TRIPLE})
endif()
