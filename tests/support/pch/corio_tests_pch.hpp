// The precompiled header of the shared test executable (tests/meson.build, corio_tests):
// Catch2, corio's umbrella header and the standard headers most tests include. Every
// test file still includes what it uses; this only saves parsing the same headers once
// per file.
#include <catch2/catch.hpp>
#include <corio/corio.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>
