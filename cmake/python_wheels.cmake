# Where a PyPI wheel installed a library and its headers, asked of the Python that runs the build
# (a venv, --user, or pip's isolated build environment): importlib.metadata knows each installed
# file's path. Used by cmake/gemm.cmake (mkl-static / mkl-include) and cmake/onednn.cmake
# (onednn-cpu-gomp / onednn-devel-cpu-gomp).
#
#   edgetune_wheel_dirs(<lib_dist> <lib_file> <inc_dist> <inc_file> <inc_up> <out_lib> <out_inc> <out_prefixes>)
#
# sets <out_lib> to the directory holding <lib_file> of distribution <lib_dist>, <out_inc> to the
# directory holding <inc_file> of <inc_dist> with <inc_up> levels removed (2 for
# include/oneapi/dnnl/dnnl_common.hpp -> include), each "" when not installed, and <out_prefixes> to the
# Python's prefixes (sys.prefix first, then sysconfig's data dir), "" when there is no Python.
include_guard(GLOBAL)

function(edgetune_wheel_dirs lib_dist lib_file inc_dist inc_file inc_up out_lib out_inc out_prefixes)
  set(${out_lib} "" PARENT_SCOPE)
  set(${out_inc} "" PARENT_SCOPE)
  set(${out_prefixes} "" PARENT_SCOPE)
  if(NOT Python_EXECUTABLE)
    find_package(Python COMPONENTS Interpreter QUIET)
  endif()
  if(NOT Python_EXECUTABLE)
    return()
  endif()
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c [=[
import importlib.metadata as md, os, sys, sysconfig
def where(dist, name, up):
    try:
        files = md.distribution(dist).files or []
    except Exception:
        return ""
    for f in files:
        if f.name == name:
            d = os.path.dirname(os.path.realpath(str(f.locate())))
            for _ in range(up):
                d = os.path.dirname(d)
            return d
    return ""
print(where(sys.argv[1], sys.argv[2], 0))
print(where(sys.argv[3], sys.argv[4], int(sys.argv[5])))
for p in dict.fromkeys([sys.prefix, sysconfig.get_paths()["data"]]):
    print(p)
]=] ${lib_dist} ${lib_file} ${inc_dist} ${inc_file} ${inc_up}
    OUTPUT_VARIABLE _out OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  string(REPLACE "\n" ";" _lines "${_out}")
  list(LENGTH _lines _n)
  if(_n LESS 3)
    return()
  endif()
  list(GET _lines 0 _lib)
  list(GET _lines 1 _inc)
  list(SUBLIST _lines 2 -1 _prefixes)
  set(${out_lib} "${_lib}" PARENT_SCOPE)
  set(${out_inc} "${_inc}" PARENT_SCOPE)
  set(${out_prefixes} "${_prefixes}" PARENT_SCOPE)
endfunction()
