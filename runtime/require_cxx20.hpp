// Stops a build without C++20 at once, with one message. Every public header includes this
// first, before any standard header: without it, g++ -std=c++17 reports hundreds of errors
// from <coroutine> onwards. A missing include is fatal in g++ and clang, so the line after
// the #error ends the compilation there.
// Thread-safety and cost: none (preprocessor only).
#pragma once

#if __cplusplus < 202002L || !defined(__cpp_impl_coroutine)
#error "corio requires C++20 with coroutines: compile with -std=c++20 (g++ 12 or clang 16 and newer)"
#include <corio-requires-c++20>  // no such file: the compilation ends here
#endif
