# The GEMM library behind sgemm (csrc/kernels/cpu/gemm.h), chosen by EDGETUNE_BLAS:
#
#   OWN       the built-in packed kernel only (portable: AVX-512 / AVX2 / NEON from one source)
#   MKL       Intel MKL, statically linked, sequential layer (libmkl_intel_lp64.a +
#             libmkl_sequential.a + libmkl_core.a); an error when it is not found
#   OPENBLAS  the system's OpenBLAS (libopenblas-dev); an error when it is not found
#   AUTO      MKL if found, else OWN (OpenBLAS only when asked for: on AVX-512 it measured slower
#             than the built-in kernel, so finding it on a machine is no reason to use it)
#
# The default is AUTO on x86-64 Linux (native builds), OWN everywhere else (aarch64, cross builds,
# sanitizer builds). The built-in kernel is compiled into every build either way: it is the
# fallback, and the ".own" kernel variants (matmul.own, linear.own) that the kernel-selection
# pass times against the library.
#
# Where MKL is looked for, first found wins:
#   1. -DMKLROOT=PREFIX or $MKLROOT (an oneAPI install: PREFIX/lib[/intel64], PREFIX/include)
#   2. the PyPI wheels `mkl-static` + `mkl-include` in the Python environment that runs the build,
#      wherever pip put them (a venv, --user, or pip's isolated build env: pyproject.toml lists
#      them as build requirements on x86-64 Linux, so `pip install .` needs no system package);
#      found through importlib.metadata, which knows each installed file's path
#   3. the running Python's prefix (sys.prefix / sysconfig's data dir): lib/ and include/
#
# Sets EDGETUNE_GEMM_LIBRARY ("mkl", "openblas" or "own") and the target edgetune_gemm_library
# (an INTERFACE library: compile definition, include dir, link line) for csrc/CMakeLists.txt.

if(CMAKE_SYSTEM_NAME STREQUAL "Linux" AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$"
   AND NOT CMAKE_CROSSCOMPILING AND NOT EDGETUNE_SANITIZE)
  set(_blas_default AUTO)
else()
  set(_blas_default OWN)
endif()
# A build dir configured before AUTO became the default cached the old default, OWN, under the
# old help text: move it to AUTO once. (A fresh -DEDGETUNE_BLAS=OWN has no such help text.)
if(DEFINED CACHE{EDGETUNE_BLAS} AND EDGETUNE_BLAS STREQUAL "OWN" AND _blas_default STREQUAL "AUTO")
  get_property(_help CACHE EDGETUNE_BLAS PROPERTY HELPSTRING)
  if(_help MATCHES "^GEMM backend: OWN \\(built-in packed kernel\\), OPENBLAS, or AUTO")
    message(STATUS "edgetune GEMM: EDGETUNE_BLAS=OWN cached by an older configure (the old default) is now AUTO; "
                   "-DEDGETUNE_BLAS=OWN keeps the built-in kernel only")
    set_property(CACHE EDGETUNE_BLAS PROPERTY VALUE AUTO)
    set_property(CACHE EDGETUNE_BLAS PROPERTY HELPSTRING "migrated")
  endif()
endif()
set(EDGETUNE_BLAS "${_blas_default}" CACHE STRING
    "GEMM library: AUTO (MKL, else the built-in kernel), MKL, OPENBLAS, or OWN (built-in only)")
set_property(CACHE EDGETUNE_BLAS PROPERTY STRINGS AUTO MKL OPENBLAS OWN)
string(TOUPPER "${EDGETUNE_BLAS}" _blas)
if(NOT _blas MATCHES "^(AUTO|MKL|OPENBLAS|OWN)$")
  message(FATAL_ERROR "EDGETUNE_BLAS=${EDGETUNE_BLAS}: want AUTO, MKL, OPENBLAS or OWN")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/python_wheels.cmake)
add_library(edgetune_gemm_library INTERFACE)
set(EDGETUNE_GEMM_LIBRARY own)
set(_gemm_where "")

# ---- MKL -----------------------------------------------------------------------------------------
set(_mkl_libs "")
set(_mkl_include "")
# A lib dir holding all three static libraries, and an include dir holding mkl_cblas.h.
macro(_edgetune_mkl_try libdir incdir label)
  if(NOT _mkl_libs AND EXISTS "${libdir}/libmkl_core.a" AND EXISTS "${libdir}/libmkl_sequential.a"
     AND EXISTS "${libdir}/libmkl_intel_lp64.a" AND EXISTS "${incdir}/mkl_cblas.h")
    set(_mkl_libs "${libdir}/libmkl_intel_lp64.a" "${libdir}/libmkl_sequential.a" "${libdir}/libmkl_core.a")
    set(_mkl_include "${incdir}")
    set(_gemm_where "${label}")
  endif()
endmacro()

if(_blas STREQUAL "AUTO" OR _blas STREQUAL "MKL")
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    if(_blas STREQUAL "MKL")
      message(FATAL_ERROR "EDGETUNE_BLAS=MKL: MKL is x86-64 only (this build targets ${CMAKE_SYSTEM_PROCESSOR})")
    endif()
  else()
    # 1. MKLROOT
    if(NOT MKLROOT AND DEFINED ENV{MKLROOT})
      set(MKLROOT "$ENV{MKLROOT}")
    endif()
    if(MKLROOT)
      _edgetune_mkl_try("${MKLROOT}/lib/intel64" "${MKLROOT}/include" "MKLROOT=${MKLROOT}")
      _edgetune_mkl_try("${MKLROOT}/lib" "${MKLROOT}/include" "MKLROOT=${MKLROOT}")
    endif()
    # 2./3. the Python environment's wheels, then its prefix
    if(NOT _mkl_libs)
      edgetune_wheel_dirs(mkl-static libmkl_core.a mkl-include mkl_cblas.h 0 _wheel_lib _wheel_inc _prefixes)
      if(_wheel_lib AND _wheel_inc)
        _edgetune_mkl_try("${_wheel_lib}" "${_wheel_inc}" "the mkl-static/mkl-include wheels (${_wheel_lib})")
      endif()
      foreach(_p IN LISTS _prefixes)
        _edgetune_mkl_try("${_p}/lib" "${_p}/include" "the Python prefix ${_p}")
      endforeach()
    endif()
    if(_mkl_libs)
      set(EDGETUNE_GEMM_LIBRARY mkl)
      target_compile_definitions(edgetune_gemm_library INTERFACE EDGETUNE_HAVE_MKL=1)
      target_include_directories(edgetune_gemm_library SYSTEM INTERFACE "${_mkl_include}")
      # the three archives reference each other: one link group. --exclude-libs keeps MKL's
      # symbols out of our dynamic symbol table, so the module neither exports MKL nor binds to
      # another MKL already in the process (PyTorch's): each calls its own.
      target_link_libraries(edgetune_gemm_library INTERFACE
        -Wl,--start-group ${_mkl_libs} -Wl,--end-group Threads::Threads m dl
        -Wl,--exclude-libs,libmkl_intel_lp64.a:libmkl_sequential.a:libmkl_core.a)
    elseif(_blas STREQUAL "MKL")
      message(FATAL_ERROR "EDGETUNE_BLAS=MKL but MKL was not found: `pip install mkl-static mkl-include` "
                          "into the Python that runs the build, or set MKLROOT")
    endif()
  endif()
endif()

# ---- OpenBLAS ------------------------------------------------------------------------------------
if(_blas STREQUAL "OPENBLAS")
  find_library(OPENBLAS_LIBRARY NAMES openblas)
  find_path(OPENBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas)
  if(OPENBLAS_LIBRARY AND OPENBLAS_INCLUDE)
    set(EDGETUNE_GEMM_LIBRARY openblas)
    set(_gemm_where "${OPENBLAS_LIBRARY}")
    target_compile_definitions(edgetune_gemm_library INTERFACE EDGETUNE_HAVE_OPENBLAS=1)
    target_include_directories(edgetune_gemm_library SYSTEM INTERFACE "${OPENBLAS_INCLUDE}")
    target_link_libraries(edgetune_gemm_library INTERFACE ${OPENBLAS_LIBRARY})
  else()
    message(FATAL_ERROR "EDGETUNE_BLAS=OPENBLAS but OpenBLAS was not found (apt-get install libopenblas-dev)")
  endif()
endif()

if(EDGETUNE_GEMM_LIBRARY STREQUAL "mkl")
  message(STATUS "edgetune GEMM: MKL (static, sequential) from ${_gemm_where}; the built-in kernel as fallback and .own variants [EDGETUNE_BLAS=${_blas}]")
elseif(EDGETUNE_GEMM_LIBRARY STREQUAL "openblas")
  message(STATUS "edgetune GEMM: OpenBLAS ${_gemm_where}; the built-in kernel as fallback and .own variants [EDGETUNE_BLAS=${_blas}]")
else()
  message(STATUS "edgetune GEMM: the built-in packed kernel only [EDGETUNE_BLAS=${_blas}]")
endif()
