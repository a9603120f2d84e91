#pragma once
// From an op enum of tensor/kernels.h to its functor of tensor/functors.h: each backend's elementwise
// kernels call fn(functor) once and instantiate their loop for that functor type.
#include <stdexcept>

#include "tensor/functors.h"
#include "tensor/kernels.h"

namespace tl::kernels {

template <typename Fn>
decltype(auto) with_unary(Unary op, UnaryParams p, const Fn& fn) {
  switch (op) {
    case Unary::Neg: return fn(fn::Neg{});
    case Unary::Exp: return fn(fn::Exp{});
    case Unary::Log: return fn(fn::Log{});
    case Unary::Sqrt: return fn(fn::Sqrt{});
    case Unary::Abs: return fn(fn::Abs{});
    case Unary::Pow: return fn(fn::Pow{p.a});
    case Unary::Clamp: return fn(fn::Clamp{p.a, p.b});
    case Unary::Sigmoid: return fn(fn::Sigmoid{});
    case Unary::Tanh: return fn(fn::Tanh{});
    case Unary::Relu: return fn(fn::Relu{});
    case Unary::Gelu: return fn(fn::Gelu{});
    case Unary::Silu: return fn(fn::Silu{});
    case Unary::PySilu: return fn(fn::PySilu{});
  }
  throw std::logic_error("unary: bad op");
}

template <typename Fn>
decltype(auto) with_activation(Activation a, const Fn& fn) {
  switch (a) {
    case Activation::None: return fn(fn::Identity{});
    case Activation::Relu: return fn(fn::Relu{});
    case Activation::Gelu: return fn(fn::Gelu{});
    case Activation::Silu: return fn(fn::Silu{});
    case Activation::PySilu: return fn(fn::PySilu{});
  }
  throw std::logic_error("activation: bad value");
}

template <typename Fn>
decltype(auto) with_binary(Binary op, const Fn& fn) {
  switch (op) {
    case Binary::Add: return fn(fn::Add{});
    case Binary::Sub: return fn(fn::Sub{});
    case Binary::Mul: return fn(fn::Mul{});
    case Binary::Div: return fn(fn::Div{});
    case Binary::Eq: return fn(fn::Eq{});
    case Binary::Gt: return fn(fn::Gt{});
    case Binary::Lt: return fn(fn::Lt{});
    case Binary::Ge: return fn(fn::Ge{});
    case Binary::Le: return fn(fn::Le{});
    case Binary::BceLogits: return fn(fn::BceLogits{});
    case Binary::BceLogitsGrad: return fn(fn::BceLogitsGrad{});
  }
  throw std::logic_error("binary: bad op");
}

}  // namespace tl::kernels
