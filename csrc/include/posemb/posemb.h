// posemb: fused positional embeddings for PyTorch and LibTorch.
// Include this header for the whole C++ API.
#pragma once

#include "posemb/bert.h"
#include "posemb/fourier.h"
#include "posemb/learned.h"
#include "posemb/nn/bert.h"
#include "posemb/nn/fourier.h"
#include "posemb/nn/learned.h"
#include "posemb/nn/rotary.h"
#include "posemb/nn/sinusoidal.h"
#include "posemb/nn/timestep.h"
#include "posemb/rotary.h"
#include "posemb/sincos_2d.h"
#include "posemb/sinusoidal.h"
#include "posemb/timestep.h"
#include "posemb/types.h"
