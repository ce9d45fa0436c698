# A stand-in for the SlicerConfig.cmake of a Slicer build tree, so that the extension's CMake runs
# without building Slicer (Testing/slicer_modules/test_cmake_build.py). What is real: Slicer's
# slicerMacroBuildScriptedModule and CTK's ctkMacroCompilePythonScript, included unmodified from
# the harness folder (-DSLICER_HARNESS_DIR=.../shared/slicer-harness). What is stood in for:
# UseSlicer (nothing to set up), the extension's generated config and CPack packaging (nothing
# to package here), the Python found by a Slicer build (-DPYTHON_EXECUTABLE=...), and the test
# registration functions, which only record what would be registered.

if(NOT EXISTS "${SLICER_HARNESS_DIR}/slicer-5.10.0/CMake/SlicerMacroBuildScriptedModule.cmake")
  message(FATAL_ERROR "SLICER_HARNESS_DIR must name the slicer-harness folder, got '${SLICER_HARNESS_DIR}'")
endif()
if(NOT PYTHON_EXECUTABLE)
  message(FATAL_ERROR "PYTHON_EXECUTABLE must be given (the interpreter that byte-compiles the scripts)")
endif()

set(Slicer_FOUND TRUE)
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 10)
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")

# What a Slicer build tree has already found for CTK's byte-compilation step.
set(PYTHONINTERP_FOUND TRUE)
set(PYTHONLIBS_FOUND TRUE)
get_filename_component(_python_dir "${PYTHON_EXECUTABLE}" DIRECTORY)
set(PYTHON_LIBRARIES "${_python_dir}/libpython-stand-in")

set(CTK_CMAKE_DIR "${SLICER_HARNESS_DIR}/ctk-cmake")
include("${CTK_CMAKE_DIR}/ctkFunctionExtractOptimizedLibrary.cmake")
include("${CTK_CMAKE_DIR}/ctkMacroCompilePythonScript.cmake")
include("${SLICER_HARNESS_DIR}/slicer-5.10.0/CMake/SlicerMacroBuildScriptedModule.cmake")

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/NoPackaging.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/NoPackaging.cmake")
