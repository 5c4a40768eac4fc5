#!/usr/bin/env bash
# Installs Cascade for C and C++ programs: builds cascade-c (release) and puts under PREFIX
#   include/cascade.h, include/cascade.hpp
#   lib/libcascade_c.so, lib/libcascade_c.a
#   lib/pkgconfig/cascade.pc                          (pkg-config --cflags --libs cascade)
#   lib/cmake/Cascade/CascadeConfig.cmake (+ Version) (find_package(Cascade): Cascade::cascade,
#                                                      Cascade::cascade_static)
#
# Usage: cascade-c/install.sh [--prefix DIR] [--profile release|debug] [--features LIST] [--no-build]
#   --prefix DIR      where to install (default /usr/local)
#   --profile NAME    cargo profile to build and install (default release; CI tests use debug)
#   --features LIST   cargo features of cascade-c instead of the defaults
#                     (default: shm, lustre, gpu, plugins; gpu needs no CUDA to build)
#   --no-build        install what target/<profile> already holds
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/usr/local
features=""
profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --profile) profile="$2"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --features) features="$2"; shift 2 ;;
    --features=*) features="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$profile" in
  release) out_dir=release ;;
  debug|dev) profile=dev; out_dir=debug ;;
  *) echo "install.sh: --profile must be release or debug, got $profile" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
lib_dir="$target_dir/$out_dir"
if [ "$build" = 1 ]; then
  feature_args=()
  [ -n "$features" ] && feature_args=(--no-default-features --features "$features")
  cargo build --profile "$profile" -p cascade-c --manifest-path "$repo/Cargo.toml" "${feature_args[@]}"
fi
for f in libcascade_c.so libcascade_c.a; do
  [ -f "$lib_dir/$f" ] || { echo "install.sh: $lib_dir/$f is missing (build first)" >&2; exit 1; }
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
# What a static link of a Rust library needs from the system (rustc --print native-static-libs).
static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/Cascade"
install -m 0644 "$repo/include/cascade.h" "$repo/include/cascade.hpp" "$prefix/include/"
install -m 0755 "$lib_dir/libcascade_c.so" "$prefix/lib/"
install -m 0644 "$lib_dir/libcascade_c.a" "$prefix/lib/"

cat > "$prefix/lib/pkgconfig/cascade.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: cascade
Description: Cascade hierarchical KV-cache store (C API and header-only C++ wrapper)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lcascade_c
Libs.private: $static_libs
PC

cat > "$prefix/lib/cmake/Cascade/CascadeConfig.cmake" <<'CMAKE'
# find_package(Cascade): imported targets Cascade::cascade (shared) and
# Cascade::cascade_static, with include/cascade.h and include/cascade.hpp.
# Written by cascade-c/install.sh; relocatable (paths are relative to this file).
get_filename_component(_cascade_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET Cascade::cascade)
  add_library(Cascade::cascade SHARED IMPORTED)
  set_target_properties(Cascade::cascade PROPERTIES
    IMPORTED_LOCATION "${_cascade_prefix}/lib/libcascade_c.so"
    IMPORTED_SONAME "libcascade_c.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_cascade_prefix}/include")
endif()
if(NOT TARGET Cascade::cascade_static)
  add_library(Cascade::cascade_static STATIC IMPORTED)
  set_target_properties(Cascade::cascade_static PROPERTIES
    IMPORTED_LOCATION "${_cascade_prefix}/lib/libcascade_c.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "${_cascade_prefix}/include"
    INTERFACE_LINK_LIBRARIES "gcc_s;util;rt;pthread;m;dl")
endif()
unset(_cascade_prefix)
CMAKE

cat > "$prefix/lib/cmake/Cascade/CascadeConfigVersion.cmake" <<CMAKE
# A request for version X is met when X <= $version with the same major version (and,
# while the major version is 0, the same minor version).
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _have "\${PACKAGE_VERSION}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _want "\${PACKAGE_FIND_VERSION}.0")
  if(PACKAGE_FIND_VERSION_MAJOR EQUAL 0)
    if(_have STREQUAL _want)
      set(PACKAGE_VERSION_COMPATIBLE TRUE)
    endif()
  elseif(PACKAGE_FIND_VERSION_MAJOR EQUAL "$(echo "$version" | cut -d. -f1)")
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
endif()
if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
  set(PACKAGE_VERSION_EXACT TRUE)
endif()
CMAKE

echo "installed cascade $version under $prefix"
echo "  C/C++:     pkg-config --cflags --libs cascade   (PKG_CONFIG_PATH=$prefix/lib/pkgconfig)"
echo "  CMake:     find_package(Cascade) -> Cascade::cascade (CMAKE_PREFIX_PATH=$prefix)"
