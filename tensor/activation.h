#pragma once
// The activations a batch norm can apply in its own pass (batch_norm_activation): the UNet's four.
// Fusing them saves a read and a write of the whole tensor each way, and the pre-activation is never
// stored: the backward recomputes it from the batch norm's input and statistics.
namespace tl {

enum class Activation { None, Relu, Gelu, Silu, PySilu };

// "none", "relu", "gelu", "silu", "pysilu".
const char* activation_name(Activation a);

}  // namespace tl
