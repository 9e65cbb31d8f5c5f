# oneDNN, the convolution library behind the ".onednn" kernel variants (csrc/kernels/cpu/conv_onednn.cc),
# chosen by EDGETUNE_ONEDNN:
#
#   OFF   not used: the own kernels only
#   ON    used; an error when it is not found
#   AUTO  used if found (the default on native Linux builds; OFF for cross, sanitizer and fuzz builds)
#
# Why a library here: a 3x3 convolution at ~90% of the sgemm peak needs a direct (implicit-GEMM)
# kernel with JIT-generated register blocking per shape; oneDNN's brgemm convolutions are that, and
# PyTorch's CPU convolutions are oneDNN too. The own im2col / Winograd kernels stay the portable
# fallback, and the kernel-selection pass picks per node between them and the oneDNN variants.
#
# Where oneDNN is looked for, first found wins (a shared library, libdnnl.so, with its headers):
#   1. -DDNNL_ROOT=PREFIX or $DNNL_ROOT (PREFIX/include/oneapi/dnnl/dnnl.hpp, PREFIX/lib[64])
#   2. the PyPI wheels `onednn-devel-cpu-gomp` (headers) + `onednn-cpu-gomp` (the library) in the
#      Python environment that runs the build (pyproject.toml lists them on x86-64 Linux: the build
#      needs both, the installed package needs the library)
#   3. the running Python's prefix, then the system (Debian's libdnnl-dev, any architecture)
#
# Linking: the library is shared (no wheel ships an archive), so every binary that links it gets an
# RPATH to where it was found and to where the `onednn-cpu-gomp` wheel installs it beside an
# installed edgetune (<prefix>/lib, seen from <prefix>/lib/pythonX.Y/site-packages/edgetune/ and
# from <prefix>/bin): a wheel built in pip's throw-away build environment finds the copy pip
# installed as its dependency.
#
# Sets EDGETUNE_ONEDNN_FOUND (ON/OFF), EDGETUNE_ONEDNN_LIBRARY, the INTERFACE target
# edgetune_onednn_library (compile definition EDGETUNE_HAVE_ONEDNN=1, include dir, link line) and
# appends to CMAKE_BUILD_RPATH / CMAKE_INSTALL_RPATH, for csrc/CMakeLists.txt (include it before
# the targets are made).

if(CMAKE_SYSTEM_NAME STREQUAL "Linux" AND NOT CMAKE_CROSSCOMPILING AND NOT EDGETUNE_SANITIZE AND NOT EDGETUNE_FUZZ)
  set(_onednn_default AUTO)
else()
  set(_onednn_default OFF)
endif()
set(EDGETUNE_ONEDNN "${_onednn_default}" CACHE STRING
    "oneDNN convolution variants: AUTO (if found), ON (required), OFF")
set_property(CACHE EDGETUNE_ONEDNN PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${EDGETUNE_ONEDNN}" _onednn)
if(NOT _onednn MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "EDGETUNE_ONEDNN=${EDGETUNE_ONEDNN}: want AUTO, ON or OFF")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/python_wheels.cmake)
add_library(edgetune_onednn_library INTERFACE)
set(EDGETUNE_ONEDNN_FOUND OFF)
set(_dnnl_lib "")
set(_dnnl_inc "")
set(_dnnl_where "")
set(_dnnl_install_prefix "")

# A lib dir holding libdnnl.so and an include dir holding oneapi/dnnl/dnnl.hpp.
macro(_edgetune_dnnl_try libdir incdir label)
  if(NOT _dnnl_lib AND EXISTS "${incdir}/oneapi/dnnl/dnnl.hpp")
    foreach(_name libdnnl.so libdnnl.so.3)
      if(NOT _dnnl_lib AND EXISTS "${libdir}/${_name}")
        set(_dnnl_lib "${libdir}/${_name}")
        set(_dnnl_inc "${incdir}")
        set(_dnnl_where "${label}")
      endif()
    endforeach()
  endif()
endmacro()

if(NOT _onednn STREQUAL "OFF")
  # 1. DNNL_ROOT
  if(NOT DNNL_ROOT AND DEFINED ENV{DNNL_ROOT})
    set(DNNL_ROOT "$ENV{DNNL_ROOT}")
  endif()
  if(DNNL_ROOT)
    _edgetune_dnnl_try("${DNNL_ROOT}/lib" "${DNNL_ROOT}/include" "DNNL_ROOT=${DNNL_ROOT}")
    _edgetune_dnnl_try("${DNNL_ROOT}/lib64" "${DNNL_ROOT}/include" "DNNL_ROOT=${DNNL_ROOT}")
  endif()
  # 2./3. the Python environment's wheels, then its prefix
  if(NOT _dnnl_lib)
    # dnnl_common.hpp: only under include/oneapi/dnnl/ (the wheel also has include/dnnl.hpp shims)
    edgetune_wheel_dirs(onednn-cpu-gomp libdnnl.so.3 onednn-devel-cpu-gomp dnnl_common.hpp 2 _wheel_lib _wheel_inc _prefixes)
    if(_wheel_lib AND _wheel_inc)
      _edgetune_dnnl_try("${_wheel_lib}" "${_wheel_inc}" "the onednn-cpu-gomp wheel (${_wheel_lib})")
    endif()
    foreach(_p IN LISTS _prefixes)
      _edgetune_dnnl_try("${_p}/lib" "${_p}/include" "the Python prefix ${_p}")
    endforeach()
    # pip builds in a throw-away environment but with the interpreter it installs into, whose
    # prefix gets the onednn-cpu-gomp dependency: an absolute RPATH entry for copies of
    # edgetune-train made elsewhere (`edgetune compile --emit-binary`)
    if(_prefixes)
      list(GET _prefixes 0 _dnnl_install_prefix)
    endif()
  endif()
  # 3. the system
  if(NOT _dnnl_lib)
    find_path(_dnnl_sys_inc oneapi/dnnl/dnnl.hpp)
    find_library(_dnnl_sys_lib NAMES dnnl)
    if(_dnnl_sys_inc AND _dnnl_sys_lib)
      set(_dnnl_lib "${_dnnl_sys_lib}")
      set(_dnnl_inc "${_dnnl_sys_inc}")
      set(_dnnl_where "the system (${_dnnl_sys_lib})")
    endif()
  endif()
endif()

if(_dnnl_lib)
  # oneDNN 3.x API (memory::desc / primitive_desc constructors without op descriptors)
  file(STRINGS "${_dnnl_inc}/oneapi/dnnl/dnnl_version.h" _dnnl_major REGEX "#define DNNL_VERSION_MAJOR")
  string(REGEX REPLACE ".*DNNL_VERSION_MAJOR +([0-9]+).*" "\\1" _dnnl_major "${_dnnl_major}")
  if(_dnnl_major LESS 3)
    if(_onednn STREQUAL "ON")
      message(FATAL_ERROR "EDGETUNE_ONEDNN=ON: ${_dnnl_where} is oneDNN ${_dnnl_major}.x; the kernels need 3.x")
    endif()
    message(STATUS "edgetune oneDNN: ${_dnnl_where} is oneDNN ${_dnnl_major}.x, not 3.x: not used")
    set(_dnnl_lib "")
  endif()
endif()

if(_dnnl_lib)
  set(EDGETUNE_ONEDNN_FOUND ON)
  get_filename_component(_dnnl_dir "${_dnnl_lib}" DIRECTORY)
  target_compile_definitions(edgetune_onednn_library INTERFACE EDGETUNE_HAVE_ONEDNN=1)
  target_include_directories(edgetune_onednn_library SYSTEM INTERFACE "${_dnnl_inc}")
  # gomp: the kernels set the calling thread's OpenMP team size (libdnnl's runtime is GNU OpenMP)
  target_link_libraries(edgetune_onednn_library INTERFACE "${_dnnl_lib}" gomp)
  # RPATH of every binary made after this (the module, edgetune-train, the tests): where the library
  # was found, and where the onednn-cpu-gomp wheel puts it beside an installed edgetune:
  # $ORIGIN/../../.. is <prefix>/lib seen from site-packages/edgetune/_native*.so, $ORIGIN/../../../..
  # from site-packages/edgetune/bin/edgetune-train, $ORIGIN/../lib from <prefix>/bin/edgetune-train
  list(APPEND CMAKE_BUILD_RPATH "${_dnnl_dir}")
  list(APPEND CMAKE_INSTALL_RPATH "${_dnnl_dir}" "$ORIGIN/../../.." "$ORIGIN/../../../.." "$ORIGIN/../lib")
  if(_dnnl_install_prefix AND NOT _dnnl_install_prefix STREQUAL _dnnl_dir)
    list(APPEND CMAKE_INSTALL_RPATH "${_dnnl_install_prefix}/lib")
  endif()
  set(EDGETUNE_ONEDNN_LIBRARY "${_dnnl_lib}")
  message(STATUS "edgetune oneDNN: ${_dnnl_lib} from ${_dnnl_where}: .onednn convolution variants [EDGETUNE_ONEDNN=${_onednn}]")
elseif(_onednn STREQUAL "ON")
  message(FATAL_ERROR "EDGETUNE_ONEDNN=ON but oneDNN 3.x was not found: `pip install onednn-devel-cpu-gomp` "
                      "into the Python that runs the build, apt-get install libdnnl-dev, or set DNNL_ROOT")
else()
  message(STATUS "edgetune oneDNN: not used (own convolution kernels only) [EDGETUNE_ONEDNN=${_onednn}]")
endif()
