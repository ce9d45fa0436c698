# Stand-in for Slicer's UseSlicer.cmake: the extension's Python modules need no compiler setup.
# Test registration is recorded in python_unittests.txt so the test can check what ctest would run.
set(BUILD_TESTING ON)
file(WRITE "${CMAKE_BINARY_DIR}/python_unittests.txt" "")

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  file(APPEND "${CMAKE_BINARY_DIR}/python_unittests.txt" "${MY_TESTNAME_PREFIX}${MY_SCRIPT}\n")
endfunction()

macro(SlicerMacroConfigureGenericPythonModuleTests module_names output_var)
  set(${output_var})
  foreach(module_name ${module_names})
    list(APPEND ${output_var} "qSlicer${module_name}ModuleGenericTest.py")
  endforeach()
endmacro()
