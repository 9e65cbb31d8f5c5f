// The oneDNN convolution variants (conv_onednn.cc): what the rest of the runtime may ask about them.
#pragma once

#include <string>

namespace edgetune {

// "3.2.0" (the oneDNN this build links, as the library reports it at run time), or "" in a build
// without oneDNN (cmake/onednn.cmake found none, or EDGETUNE_ONEDNN=OFF): then no ".onednn"
// kernel is registered.
std::string onednn_version();

}  // namespace edgetune
