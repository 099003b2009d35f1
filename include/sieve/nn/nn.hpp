#pragma once
/// sieve/nn: stages owning parameters, gradients and buffers; the ResNet backbone.
#include "sieve/nn/activation.hpp"
#include "sieve/nn/backbone.hpp"
#include "sieve/nn/batch_norm.hpp"
#include "sieve/nn/bottleneck.hpp"
#include "sieve/nn/conv2d.hpp"
#include "sieve/nn/freeze.hpp"
#include "sieve/nn/init.hpp"
#include "sieve/nn/linear.hpp"
#include "sieve/nn/pool_net.hpp"
#include "sieve/nn/residual_block.hpp"
#include "sieve/nn/resnet.hpp"
#include "sieve/nn/scratch.hpp"
