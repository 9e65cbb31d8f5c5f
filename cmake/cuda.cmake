# The CUDA backend's toolchain: nvcc, the CUDA runtime and cuBLAS / cuBLASLt.
#
# Included from the top-level CMakeLists.txt before csrc/. Reads EDGETUNE_CUDA (AUTO|ON|OFF) and sets
#   EDGETUNE_CUDA_ENABLED   ON when the backend is built
#   edgetune::cublas, edgetune::cublasLt   imported targets (headers + libraries)
#
#   OFF   nothing CUDA is looked at; the build is exactly the CPU-only one.
#   AUTO  on when `check_language(CUDA)` finds nvcc and cuBLAS is found; otherwise CPU-only, with a
#         line saying why. A machine without nvcc builds as before; cross and sanitizer builds stay
#         CPU-only.
#   ON    like AUTO, but a missing nvcc or cuBLAS is a configure error.
#
# cuBLAS comes from, in this order:
#   1. EDGETUNE_CUBLAS_ROOT (a dir with include/cublas_v2.h and lib/libcublas.so*),
#   2. the CUDA toolkit (find_package(CUDAToolkit): CUDA::cublas, CUDA::cublasLt; JetPack has them),
#   3. PyPI's nvidia-cublas wheel in the site-packages of EDGETUNE_CUDA_PYTHON (under ON without it:
#      the Python found on PATH; AUTO looks at the wheel only when EDGETUNE_CUDA_PYTHON is set): nvidia/cu13/{include,lib} (CUDA 13 wheels, `pip install nvidia-cublas`)
#      or nvidia/cublas/{include,lib} (CUDA 12 wheels, `pip install nvidia-cublas-cu12`).
#      The wheel has only versioned libraries (libcublas.so.13): they are linked by full path and
#      found at run time through the build tree's RPATH.
#
# Device code: CMAKE_CUDA_ARCHITECTURES defaults to 80-real;86-real;87-real;89-real;90-real;90-virtual
# (desktop Ampere, Jetson Orin, Ada, Hopper, and PTX that newer GPUs JIT-compile).
set(EDGETUNE_CUDA_ENABLED OFF)
string(TOUPPER "${EDGETUNE_CUDA}" EDGETUNE_CUDA)
if(EDGETUNE_CUDA STREQUAL "OFF")
  return()
endif()
if(NOT EDGETUNE_CUDA STREQUAL "AUTO" AND NOT EDGETUNE_CUDA STREQUAL "ON")
  message(FATAL_ERROR "EDGETUNE_CUDA must be AUTO, ON or OFF, got '${EDGETUNE_CUDA}'")
endif()

# Why the backend is not built: a configure error under ON, a status line under AUTO.
function(_edgetune_cuda_unavailable why)
  if(EDGETUNE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "EDGETUNE_CUDA=ON but ${why}")
  endif()
  message(STATUS "edgetune CUDA backend: off (AUTO: ${why})")
endfunction()

# AUTO leaves cross builds and sanitizer builds CPU-only (nvcc would target the host, and ASan does not
# instrument device code); ask for ON to get the backend there anyway.
if(EDGETUNE_CUDA STREQUAL "AUTO" AND (CMAKE_CROSSCOMPILING OR EDGETUNE_SANITIZE))
  message(STATUS "edgetune CUDA backend: off (AUTO: cross or sanitizer build)")
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  _edgetune_cuda_unavailable("no CUDA compiler (nvcc) was found: put it on PATH or set CMAKE_CUDA_COMPILER (e.g. /usr/local/cuda/bin/nvcc)")
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "80-real;86-real;87-real;89-real;90-real;90-virtual" CACHE STRING
      "CUDA architectures for the CUDA backend" FORCE)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
find_package(CUDAToolkit REQUIRED)

# ---- cuBLAS / cuBLASLt --------------------------------------------------------------------------
set(EDGETUNE_CUBLAS_ROOT "" CACHE PATH "Directory with include/cublas_v2.h and lib/libcublas.so* (optional)")
set(EDGETUNE_CUDA_PYTHON "" CACHE FILEPATH "Python whose site-packages may hold the nvidia-cublas wheel (optional)")
set(_cublas_inc "")
set(_cublas_lib "")
set(_cublaslt_lib "")
set(_cublas_from "")

# _edgetune_cublas_in(dir): sets _cublas_inc/_cublas_lib/_cublaslt_lib when dir has a usable cuBLAS
macro(_edgetune_cublas_in dir)
  if(NOT _cublas_from AND EXISTS "${dir}/include/cublas_v2.h" AND EXISTS "${dir}/include/cublasLt.h")
    file(GLOB _b "${dir}/lib/libcublas.so" "${dir}/lib/libcublas.so.[0-9]*" "${dir}/lib64/libcublas.so" "${dir}/lib64/libcublas.so.[0-9]*")
    file(GLOB _lt "${dir}/lib/libcublasLt.so" "${dir}/lib/libcublasLt.so.[0-9]*" "${dir}/lib64/libcublasLt.so" "${dir}/lib64/libcublasLt.so.[0-9]*")
    if(_b AND _lt)
      list(SORT _b)
      list(SORT _lt)
      list(GET _b 0 _cublas_lib)       # libcublas.so sorts before libcublas.so.13
      list(GET _lt 0 _cublaslt_lib)
      set(_cublas_inc "${dir}/include")
      set(_cublas_from "${dir}")
    endif()
  endif()
endmacro()

if(EDGETUNE_CUBLAS_ROOT)
  _edgetune_cublas_in("${EDGETUNE_CUBLAS_ROOT}")
  if(NOT _cublas_from)
    message(FATAL_ERROR "EDGETUNE_CUBLAS_ROOT=${EDGETUNE_CUBLAS_ROOT} has no include/cublas_v2.h, include/cublasLt.h and lib/libcublas*.so*")
  endif()
endif()
if(NOT _cublas_from AND TARGET CUDA::cublas AND TARGET CUDA::cublasLt)
  set(_cublas_from "the CUDA toolkit (${CUDAToolkit_LIBRARY_DIR})")
endif()
# The wheel is searched for under ON, or when EDGETUNE_CUDA_PYTHON names a Python: an AUTO build does not
# turn the CUDA backend on because some Python on PATH happens to have the wheel.
if(NOT _cublas_from AND (EDGETUNE_CUDA STREQUAL "ON" OR EDGETUNE_CUDA_PYTHON))
  set(_py "${EDGETUNE_CUDA_PYTHON}")
  if(NOT _py)
    if(Python_EXECUTABLE)
      set(_py "${Python_EXECUTABLE}")
    else()
      find_program(_py NAMES python3 python)
    endif()
  endif()
  if(_py)
    execute_process(
      COMMAND "${_py}" -c "import site, sys; print(';'.join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))"
      OUTPUT_VARIABLE _site OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
    if(_rc EQUAL 0)
      foreach(_d IN LISTS _site)
        _edgetune_cublas_in("${_d}/nvidia/cu13")
        _edgetune_cublas_in("${_d}/nvidia/cu12")
        _edgetune_cublas_in("${_d}/nvidia/cublas")
      endforeach()
    endif()
  endif()
endif()
if(NOT _cublas_from)
  _edgetune_cuda_unavailable("cuBLAS was not found: not in the CUDA toolkit (${CUDAToolkit_LIBRARY_DIR}), not in EDGETUNE_CUBLAS_ROOT, not in a Python site-packages (pip install nvidia-cublas)")
  return()
endif()

if(_cublas_inc)
  add_library(edgetune::cublas SHARED IMPORTED)
  set_target_properties(edgetune::cublas PROPERTIES IMPORTED_LOCATION "${_cublas_lib}" IMPORTED_NO_SONAME OFF
                        INTERFACE_INCLUDE_DIRECTORIES "${_cublas_inc}")
  add_library(edgetune::cublasLt SHARED IMPORTED)
  set_target_properties(edgetune::cublasLt PROPERTIES IMPORTED_LOCATION "${_cublaslt_lib}"
                        INTERFACE_INCLUDE_DIRECTORIES "${_cublas_inc}")
else()
  add_library(edgetune::cublas INTERFACE IMPORTED)
  set_target_properties(edgetune::cublas PROPERTIES INTERFACE_LINK_LIBRARIES CUDA::cublas)
  add_library(edgetune::cublasLt INTERFACE IMPORTED)
  set_target_properties(edgetune::cublasLt PROPERTIES INTERFACE_LINK_LIBRARIES CUDA::cublasLt)
endif()

set(EDGETUNE_CUDA_ENABLED ON)
message(STATUS "edgetune CUDA backend: on — nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, cuBLAS from ${_cublas_from}")
