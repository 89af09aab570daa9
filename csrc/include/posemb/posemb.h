// posemb: fused positional embeddings for PyTorch and LibTorch.
// Include this header for the whole C++ API.
#pragma once

#include "posemb/nn/sinusoidal.h"
#include "posemb/sinusoidal.h"
#include "posemb/types.h"
