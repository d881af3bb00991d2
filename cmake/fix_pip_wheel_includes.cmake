# Passed as -DCMAKE_PROJECT_INCLUDE=... by scripts/setup_env.sh only; a real
# ROS 2 install does not need it, which keeps CMakeLists.txt clean.
#
# The ROS 2 PyPI wheels export their *__rosidl_generator_py targets with the
# include directories of the machine that built them (/opt/python/...), so
# rosidl's Python generator fails with "Imported target ... includes
# non-existent path". Once the directory is configured, point those targets
# at this machine's Python and NumPy headers (rosidl defines both variables).
function(_sparsecomp_fix_pip_wheel_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    if(NOT _target MATCHES "__rosidl_generator_py$")
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs MATCHES "^/opt/python/")
      set_target_properties(${_target} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _sparsecomp_fix_pip_wheel_includes)
