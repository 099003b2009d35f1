#pragma once
/// Bottleneck residual block, torchvision's ResNet v1.5 (the stride sits on the 3x3 conv):
///   out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))
/// with shortcut = bn(conv1x1/stride(x)) ("downsample.0/1") when the shape changes, else x.
/// It is the bottleneck shape of the one residual block class (residual_block.hpp), which
/// the basic block shares; this header keeps the name's old home.

#include "sieve/nn/residual_block.hpp"
