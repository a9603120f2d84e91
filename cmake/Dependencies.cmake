# Finds the third-party pieces: Eigen 3.4, stb, doctest (headers only) and OpenMP.
# On Debian they come from libeigen3-dev, libstb-dev and doctest-dev (scripts/install_deps.sh).
# Elsewhere, put the headers in one folder and pass -DTL_DEPS_PREFIX=/path/to/folder; it is searched
# for Eigen3 (a CMake package or include/eigen3), stb (include/stb or stb) and doctest.

set(TL_DEPS_PREFIX "" CACHE PATH "Folder holding Eigen, stb and doctest headers when they are not installed")
if(TL_DEPS_PREFIX)
  list(PREPEND CMAKE_PREFIX_PATH "${TL_DEPS_PREFIX}")
endif()

find_package(OpenMP REQUIRED COMPONENTS CXX)

find_package(Eigen3 3.4 QUIET NO_MODULE)
if(NOT TARGET Eigen3::Eigen)
  find_path(TL_EIGEN_INCLUDE Eigen/Core
    HINTS ${TL_DEPS_PREFIX} PATH_SUFFIXES include/eigen3 eigen3 include)
  if(NOT TL_EIGEN_INCLUDE)
    message(FATAL_ERROR "Eigen 3.4 not found: run scripts/install_deps.sh (libeigen3-dev) or set TL_DEPS_PREFIX")
  endif()
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  target_include_directories(Eigen3::Eigen SYSTEM INTERFACE ${TL_EIGEN_INCLUDE})
endif()

find_path(TL_DOCTEST_INCLUDE doctest/doctest.h HINTS ${TL_DEPS_PREFIX} PATH_SUFFIXES include)
if(TL_BUILD_TESTS AND NOT TL_DOCTEST_INCLUDE)
  message(FATAL_ERROR "doctest not found: run scripts/install_deps.sh (doctest-dev) or set TL_DEPS_PREFIX")
endif()
add_library(tl_doctest INTERFACE)
target_include_directories(tl_doctest SYSTEM INTERFACE ${TL_DOCTEST_INCLUDE})
